"""Compare change-point libraries with kvmio's own E-divisive on the same seeded series (README: "Results history").

Each library runs in its own venv, since their pins conflict with the project's numpy and scipy:

    python3 -m venv /tmp/venv-otava && /tmp/venv-otava/bin/pip install apache-otava
    python3 -m venv /tmp/venv-spa && /tmp/venv-spa/bin/pip install signal-processing-algorithms
    python3 -m venv /tmp/venv-ruptures && /tmp/venv-ruptures/bin/pip install ruptures
    python3 benchmarks/bench_changepoint_libraries.py --venv otava=/tmp/venv-otava --venv spa=/tmp/venv-spa \\
        --venv ruptures=/tmp/venv-ruptures

The series: a 30 % drop at index 20 of 40 at 8 % and 20 % log-noise, the drop with 3 runs after it, one −60 % spike,
a drop and a recovery, and 500 unchanged 30-point series at 10 % noise; the p-value threshold is 0.01 for every
candidate that has one. It prints, per candidate, the indices found per case and the false alarms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

RUNNER = r'''
import json, math, sys, time
import numpy as np
data = json.load(open(sys.argv[2]))
name = sys.argv[1]
ALPHA = 0.01
if name == "otava-hunter":
    from otava.analysis import compute_change_points
    def run(v, seed): return [(int(c.index), round(float(c.stats.pvalue), 4)) for c in compute_change_points(v, window_len=50, max_pvalue=ALPHA)[0]]
elif name == "otava-edivisive":
    from otava.analysis import compute_change_points_orig
    def run(v, seed): return [(int(c.index), round(float(c.stats.pvalue), 4)) for c in compute_change_points_orig(v, max_pvalue=ALPHA, seed=seed)[0]]
elif name == "spa":
    from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive
    def run(v, seed):
        np.random.seed(seed)
        return [(int(i), None) for i in sorted(e_divisive(v, pvalue=ALPHA, permutations=199))]
elif name == "ruptures":
    import ruptures as rpt
    def run(v, seed):
        x = np.log(np.asarray(v))
        sigma = np.median(np.abs(np.diff(x))) / 0.6745 / math.sqrt(2)  # the noise, from the differences' MAD
        bkps = rpt.Binseg(model="l2", min_size=3).fit(x).predict(pen=4 * math.log(len(x)) * sigma**2)
        return [(int(b), None) for b in bkps[:-1]]
elif name == "kvmio":
    sys.path.insert(0, sys.argv[3])
    from pytest_kvmio.history.changepoints import detect
    def run(v, seed): return [(c.index, round(c.p_value, 4)) for c in detect(v, alpha=ALPHA, seed=seed)]
started = time.time()
for case, c in data["cases"].items():
    print(f"{name:16} {case:28} truth {c['truth']} found {run(c['values'], 1)}")
alarms = sum(1 for i, v in enumerate(data["aa"]) if run(v, i))
print(f"{name:16} A/A: {alarms} of {len(data['aa'])} unchanged series with a change point; {time.time() - started:.1f}s")
'''


def series(seed: int = 22) -> dict[str, object]:
    """Return the cases (values and true change indices) and the unchanged series."""
    rng = np.random.default_rng(seed)

    def make(n: int, sigma: float, at: int | None = None, drop: float = 0.3) -> list[float]:
        values = 20_000.0 * np.exp(rng.normal(0, sigma, n))
        if at is not None:
            values[at:] *= 1 - drop
        return [float(x) for x in values]

    cases: dict[str, tuple[list[float], list[int]]] = {
        "drop30_at20_sigma8": (make(40, 0.08, 20), [20]),
        "drop30_at20_sigma20": (make(40, 0.20, 20), [20]),
        "drop30_at20_3after_sigma8": (make(23, 0.08, 20), [20]),
    }
    spike = make(40, 0.08)
    spike[25] *= 0.4
    cases["spike_at25_sigma8"] = (spike, [])
    two = [v * 0.7 if 20 <= i < 40 else v for i, v in enumerate(make(60, 0.08))]
    cases["down_at20_up_at40_sigma8"] = (two, [20, 40])
    unchanged = [make(30, 0.10) for _ in range(500)]
    return {"cases": {k: {"values": v, "truth": t} for k, (v, t) in cases.items()}, "aa": unchanged}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", action="append", default=[], metavar="NAME=DIR",
                        help="a venv with a library: otava (both of its methods), spa or ruptures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "series.json"
        data.write_text(json.dumps(series()))
        runs = [("kvmio", sys.executable)]
        for item in args.venv:
            name, _, directory = item.partition("=")
            python = str(Path(directory) / "bin" / "python")
            runs += [("otava-hunter", python), ("otava-edivisive", python)] if name == "otava" else [(name, python)]
        for name, python in runs:
            done = subprocess.run([python, "-c", RUNNER, name, str(data), str(REPO)], capture_output=True, text=True)
            print(done.stdout, end="")
            if done.returncode:
                print(f"{name}: failed: {done.stderr.strip()[-500:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
