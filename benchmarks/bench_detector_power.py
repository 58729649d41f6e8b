"""The power study: how often each detector cries wolf, and which drop it finds how soon, at the lab's noise.

Reads recorded lab sessions (benchmarks/record_lab_sessions.py → benchmarks/data/lab-sessions.json; sessions that
ran under another test's iotune cap are left out) and simulates series by resampling them:

- a session is a recorded session drawn at random (with replacement): its runs' values of one metric (IOPS by
  default). A drop of d scales every value after the change by (1 − d).
- noise: values are scaled on the log scale around the recording's mean, log v' = μ + f (log v − μ), so that the
  median session's own noise (the dispersion of its runs, as `perf/decide.py` measures a run's noise) is the σ
  asked for; "lab" is the recording as it is (f = 1). drop/σ in the tables is d / σ.
- the baseline gate (perf/decide.py `decide_baseline`): a baseline recorded from 2 sessions as `kvmio baseline
  record` does (median, noise over the sessions, tolerance 15 %), then each later session's runs judged (max_spread
  0.5 as the lab-tcg class at the lab's noise, the default 0.25 otherwise); it detects when a session after the
  change is `failed` (inconclusive is not a detection).
- `kvmio ab` (perf/abstats.py `compare`): R rounds; A's and B's runs drawn from the runs of a few consecutive
  recorded sessions (the minutes one experiment spans), B's scaled for the drop; it detects on `worse`, and an
  unchanged B raises a false alarm on `worse` or `better`.
- the history (pytest_kvmio/history/changepoints.py `detect`): a series of one value per session (the median of its
  runs), 20 sessions before the change and k after; it detects when a change point lies at the change (±1) with a
  ratio below 1; any change point on an unchanged series is a false alarm.

False-alarm rates come with the upper end of their 95 % Clopper–Pearson interval (scipy.stats.binomtest).

    python benchmarks/bench_detector_power.py [--data benchmarks/data/lab-sessions.json] [--series 500]
        [--alpha A --min-segment M --permutations P]   # history detector parameters (default: its own)
        [--real FILE ...]                               # also check real iotune-capped lab series
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_kvmio.perf.abstats import compare  # noqa: E402
from pytest_kvmio.perf.decide import DEFAULT_MAX_SPREAD, decide_baseline, dispersion, session_noise  # noqa: E402
from pytest_kvmio.perf.thresholds import METRIC_DIRECTIONS, Baseline  # noqa: E402

DROPS = (0.10, 0.20, 0.35, 0.50)
#: Drops searched for the smallest one found at >= 90 %.
GRID = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.60, 0.70, 0.80)
BEFORE = 20  # history: sessions before the change
AFTER = (1, 2, 3, 5, 10)  # sessions after the change
AB_ROUNDS = (6, 10)
TOLERANCE = 0.15
#: The gate's max_spread: the lab-tcg class's at the lab's noise, the default (production classes) otherwise.
LAB_MAX_SPREAD = 0.5
TARGET = 0.90


@dataclass(frozen=True)
class Recording:
    """The recorded sessions: each session's runs of one metric."""

    sessions: tuple[tuple[float, ...], ...]
    metric: str

    @property
    def mu(self) -> float:
        return float(np.mean([math.log(v) for s in self.sessions for v in s]))

    @property
    def session_noises(self) -> list[float]:
        return [dispersion(s) for s in self.sessions]

    @property
    def median_session_noise(self) -> float:
        return float(statistics.median(self.session_noises))

    @property
    def between_noise(self) -> float:
        """Return the dispersion of the session medians (what a history series of session medians sees)."""
        return dispersion([statistics.median(s) for s in self.sessions])


def epochs(data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Return the usable sessions split where the lab went away under the recorder (a failed session: `kvmio lab
    up` again, the guests rebooted): each epoch is one environment."""
    failed = sorted(f["index"] for f in data["failed"])
    out: list[list[dict[str, Any]]] = [[]]
    previous = 0
    for session in sorted(data["sessions"], key=lambda s: s["index"]):
        if any(previous < f < session["index"] for f in failed) and out[-1]:
            out.append([])
        previous = session["index"]
        if "iotune" not in session and not session.get("capped"):
            out[-1].append(session)
    return [e for e in out if e]


def load(path: Path, metric: str, per_epoch: bool = True) -> tuple[Recording, dict[str, Any]]:
    """Return the recording of one metric; with per_epoch, each lab epoch's level is moved to the common one.

    A lab re-up between sessions (the other sessions' work restarts the lab) is a change of environment, the kind
    a history names as a change point; an unchanged series never crosses one, so each epoch (3 sessions or more;
    shorter ones are left out) is scaled so that its median session median equals the whole recording's.
    """
    data = json.loads(path.read_text())
    found = epochs(data)
    if per_epoch:
        found = [e for e in found if len(e) >= 3]
    runs = [[[float(r[metric]) for r in s["runs"]] for s in epoch] for epoch in found]
    if per_epoch and runs:
        level = statistics.median(math.log(statistics.median(s)) for e in runs for s in e)
        for epoch in runs:
            shift = math.exp(level - statistics.median(math.log(statistics.median(s)) for s in epoch))
            for session in epoch:
                session[:] = [v * shift for v in session]
    sessions = tuple(tuple(s) for e in runs for s in e)
    if len(sessions) < 2:
        raise SystemExit(f"{path}: {len(sessions)} usable sessions; record more (benchmarks/record_lab_sessions.py)")
    data["epochs"] = [len(e) for e in found]
    return Recording(sessions, metric), data


class Simulator:
    """Draw sessions from the recording at one noise level (factor f on the log scale)."""

    def __init__(self, recording: Recording, factor: float, rng: np.random.Generator,
                 max_spread: float = DEFAULT_MAX_SPREAD) -> None:
        self.recording = recording
        self.factor = factor
        self.max_spread = max_spread
        self.rng = rng
        self.mu = recording.mu
        self.logs = [np.log(np.asarray(s)) for s in recording.sessions]

    def scaled(self, index: int, drop: float = 0.0) -> np.ndarray:
        values = np.exp(self.mu + self.factor * (self.logs[index] - self.mu))
        return values * (1 - drop) if self.higher_is_better else values / (1 - drop)

    @property
    def higher_is_better(self) -> bool:
        return METRIC_DIRECTIONS[self.recording.metric] == "higher-is-better"

    def session(self, drop: float = 0.0) -> np.ndarray:
        return self.scaled(int(self.rng.integers(len(self.logs))), drop)

    def window(self, sessions: int) -> np.ndarray:
        """Return the runs of `sessions` consecutive recorded sessions (circular), scaled."""
        start = int(self.rng.integers(len(self.logs)))
        picked = [(start + i) % len(self.logs) for i in range(sessions)]
        return np.concatenate([self.scaled(i) for i in picked])


# --- the detectors ---------------------------------------------------------------------------------


def gate_series(sim: Simulator, before: int, after: int, drop: float) -> tuple[bool, int, int]:
    """Return (detected after the change, false alarms before it, sessions judged before it)."""
    recorded = [sim.session() for _ in range(2)]
    samples = [float(v) for s in recorded for v in s]
    metric = sim.recording.metric
    baseline = Baseline(
        "lab/sim/vdc", "sim", metric, statistics.median(samples), TOLERANCE, METRIC_DIRECTIONS[metric],  # type: ignore[arg-type]
        "2026-12-04", {}, samples=tuple(samples), noise=session_noise([list(s) for s in recorded]), sessions=2,
    )
    alarms = 0
    for _ in range(before - 2):
        alarms += decide_baseline([float(v) for v in sim.session()], baseline, max_spread=sim.max_spread).failed
    detected = any(decide_baseline([float(v) for v in sim.session(drop)], baseline, max_spread=sim.max_spread).failed
                   for _ in range(after))
    return detected, alarms, before - 2


def history_series(sim: Simulator, before: int, after: int, drop: float, detect: Callable[..., Any],
                   params: dict[str, Any], seed: int) -> tuple[bool, bool]:
    """Return (a change point at the change ±1 for the worse, any change point at all)."""
    values = [float(np.median(sim.session())) for _ in range(before)]
    values += [float(np.median(sim.session(drop))) for _ in range(after)]
    found = detect(values, seed=seed, **params)
    worse = (lambda cp: cp.ratio < 1) if sim.higher_is_better else (lambda cp: cp.ratio > 1)
    hit = any(abs(cp.index - before) <= 1 and worse(cp) for cp in found)
    return hit, bool(found)


def ab_experiment(sim: Simulator, rounds: int, drop: float) -> str:
    """Return the IOPS verdict of one simulated `kvmio ab` of `rounds` rounds, B dropped by `drop`."""
    pool = sim.window(max(2, math.ceil(2 * rounds / len(sim.logs[0]))))
    a = sim.rng.choice(pool, rounds)
    b = sim.rng.choice(pool, rounds)
    b = b * (1 - drop) if sim.higher_is_better else b / (1 - drop)
    return compare(sim.recording.metric, [float(v) for v in a], [float(v) for v in b], rounds=rounds).verdict


def gate_rate(sim: Simulator, after: int, n: int) -> Callable[[float], float]:
    """Return drop → the share of n simulated baselines that fail within `after` sessions of the drop."""
    return lambda drop: sum(gate_series(sim, 2, after, drop)[0] for _ in range(n)) / n


def history_rate(sim: Simulator, after: int, n: int, detect: Callable[..., Any],
                 params: dict[str, Any]) -> Callable[[float], float]:
    """Return drop → the share of n simulated series whose change point is found `after` sessions on."""
    return lambda drop: sum(history_series(sim, BEFORE, after, drop, detect, params, seed=i)[0] for i in range(n)) / n


def ab_rate(sim: Simulator, rounds: int, n: int) -> Callable[[float], float]:
    """Return drop → the share of n simulated experiments of `rounds` rounds that say `worse`."""
    return lambda drop: sum(ab_experiment(sim, rounds, drop) == "worse" for _ in range(n)) / n


# --- statistics ------------------------------------------------------------------------------------


def upper95(hits: int, n: int) -> float:
    """Return the upper end of the 95 % Clopper–Pearson interval of hits / n."""
    from scipy import stats

    return float(stats.binomtest(hits, n).proportion_ci(0.95, method="exact").high)


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def smallest(rate_of: Callable[[float], float]) -> tuple[float | None, dict[float, float]]:
    """Return the smallest drop of GRID detected at >= TARGET (binary search: power grows with the drop)."""
    seen: dict[float, float] = {}
    lo, hi = 0, len(GRID) - 1
    if rate_of_cached(rate_of, GRID[hi], seen) < TARGET:
        return None, seen
    while lo < hi:
        mid = (lo + hi) // 2
        if rate_of_cached(rate_of, GRID[mid], seen) >= TARGET:
            hi = mid
        else:
            lo = mid + 1
    return GRID[lo], seen


def rate_of_cached(rate_of: Callable[[float], float], drop: float, seen: dict[float, float]) -> float:
    if drop not in seen:
        seen[drop] = rate_of(drop)
    return seen[drop]


# --- real capped series ----------------------------------------------------------------------------


def check_real(paths: Sequence[Path], metric: str, detect: Callable[..., Any], params: dict[str, Any]) -> None:
    """Run the history detector and the gate on real lab series whose disk got an iotune cap at a known session."""
    print("\n## Real lab series with an iotune cap (a cap clips rather than scales: a sanity check)\n")
    print("| series | sessions | cap from | cap | before → after (medians) | history change points | "
          "gate: first failed session after the cap |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        data = json.loads(path.read_text())
        sessions = data["sessions"]
        values = [float(statistics.median(r[metric] for r in s["runs"])) for s in sessions]
        start = next((i for i, s in enumerate(sessions) if s.get("capped")), None)
        found = detect(values, seed=0, **params)
        shown = ", ".join(f"at {cp.index} ({cp.ratio:.2f}, p={cp.p_value:.3f})" for cp in found) or "none"
        first_failed = "-"
        if start is not None and start >= 2:
            recorded = [[float(r[metric]) for r in s["runs"]] for s in sessions[:2]]
            samples = [v for s in recorded for v in s]
            baseline = Baseline("lab/real/vdc", "real", metric, statistics.median(samples), TOLERANCE,
                                METRIC_DIRECTIONS[metric], "2026-12-04", {}, samples=tuple(samples),  # type: ignore[arg-type]
                                noise=session_noise(recorded), sessions=2)
            outcomes = [decide_baseline([float(r[metric]) for r in s["runs"]], baseline,
                                        max_spread=LAB_MAX_SPREAD).outcome.value
                        for s in sessions[start:]]
            first_failed = next((f"{i + 1} ({'/'.join(outcomes)})" for i, o in enumerate(outcomes) if o == "failed"),
                                f"none ({'/'.join(outcomes)})")
        cap = sessions[start].get("iotune", {}) if start is not None else {}
        before = statistics.median(values[:start]) if start else float("nan")
        after = statistics.median(values[start:]) if start is not None else float("nan")
        print(f"| {path.name} | {len(values)} | {start if start is not None else '-'} | {cap or '-'} | "
              f"{before:,.0f} → {after:,.0f} | {shown} | {first_failed} |")


ORACLE_ALPHA = 0.01


@dataclass(frozen=True)
class _Found:
    index: int
    ratio: float


def oracle(values: Sequence[float], *, seed: int = 0) -> list[_Found]:
    """Return a change at BEFORE when the values after it are lower (one-sided t-test on the logs, ORACLE_ALPHA):
    the best a detector that had not to look for the change could do, a bound on any detector's power."""
    from scipy import stats

    if len(values) <= BEFORE:
        return []
    logs = np.log(np.asarray(values))
    with warnings.catch_warnings():  # quiet series (σ near 0) make scipy warn about precision: the verdict stands
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(logs[BEFORE:], logs[:BEFORE], alternative="less")  # one noise: a drop scales it
    if float(test.pvalue) > ORACLE_ALPHA:
        return []
    return [_Found(BEFORE, float(np.exp(logs[BEFORE:].mean() - logs[:BEFORE].mean())))]


def sweep(recording: Recording, args: argparse.Namespace, detect: Callable[..., Any],
          rng: np.random.Generator) -> list[dict[str, Any]]:
    """Compare history-detector parameters: false alarms, the 35 % drop within 3 sessions at the lab's noise, and
    the largest median session noise at which that drop is found in >= 95 % of series (bisection on the noise)."""
    lab = recording.median_session_noise
    n, fa = args.series, args.fa_series
    print("\n## History detector parameters (35 % drop, 3 sessions after the change, found at its run ±1)\n")
    print(f"| alpha | permutations | min_segment | false alarms per series (95 % upper) | found at the lab's noise "
          f"({pct(lab)}) | noise at which it is found in ≥ 95 % |\n|---|---|---|---|---|---|")
    rows = []
    oracle_sim = Simulator(recording, 1.0, rng)
    oracle_at_lab = sum(history_series(oracle_sim, BEFORE, 3, 0.35, oracle, {}, seed=i)[0] for i in range(n)) / n
    low, high = 0.05, 1.5
    for _ in range(6):
        mid = (low + high) / 2
        scaled = Simulator(recording, mid, rng)
        found = sum(history_series(scaled, BEFORE, 3, 0.35, oracle, {}, seed=i)[0] for i in range(args.grid_series))
        found /= args.grid_series
        low, high = (mid, high) if found >= 0.95 else (low, mid)
    print(f"| oracle: the change's run known, one-sided t-test on the logs at {ORACLE_ALPHA} | - | - | "
          f"{pct(ORACLE_ALPHA)} by construction | {pct(oracle_at_lab)} | ≤ {pct(low * lab)} |", flush=True)
    rows.append({"oracle": True, "found_35_at_lab": oracle_at_lab, "noise_for_95": low * lab})
    for pair in args.sweep.split(","):
        alpha_text, perms_text = pair.split(":")
        params: dict[str, Any] = {"alpha": float(alpha_text), "permutations": int(perms_text)}
        if args.min_segment is not None:
            params["min_segment"] = args.min_segment
        sim = Simulator(recording, 1.0, rng)
        alarms = sum(history_series(sim, BEFORE, 0, 0.0, detect, params, seed=i)[1] for i in range(fa))
        at_lab = sum(history_series(sim, BEFORE, 3, 0.35, detect, params, seed=i)[0] for i in range(n)) / n

        def rate(factor: float, params: dict[str, Any] = params) -> float:
            scaled = Simulator(recording, factor, rng)
            g = args.grid_series
            return sum(history_series(scaled, BEFORE, 3, 0.35, detect, params, seed=i)[0] for i in range(g)) / g

        low, high = 0.05, 1.5  # noise factors: found at low, not at high (bisection on the factor)
        for _ in range(6):
            mid = (low + high) / 2
            low, high = (mid, high) if rate(mid) >= 0.95 else (low, mid)
        needed = low * lab
        print(f"| {params['alpha']} | {params['permutations']} | {params.get('min_segment', 'default')} | "
              f"{pct(alarms / fa)} (≤ {pct(upper95(alarms, fa))}) | {pct(at_lab)} | ≤ {pct(needed)} |", flush=True)
        rows.append({**params, "false_alarms": [alarms, fa], "found_35_at_lab": at_lab, "noise_for_95": needed})
    return rows


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "benchmarks/data/lab-sessions.json")
    parser.add_argument("--metric", default="iops")
    parser.add_argument("--series", type=int, default=500, help="simulated series per cell (default 500)")
    parser.add_argument("--fa-series", type=int, default=2000,
                        help="unchanged series for the gate's and the history's false alarms (default 2000; kvmio "
                             "ab's use --series: its bootstrap is slow)")
    parser.add_argument("--sweep", default="0.01:199,0.01:999,0.005:999,0.004:4999",
                        help="history detector alpha:permutations pairs to compare on false alarms, the 35 %% drop "
                             "within 3 sessions and the noise that drop needs (empty: none)")
    parser.add_argument("--grid-series", type=int, default=300,
                        help="series per drop while searching the smallest drop found at >= 90 %% (default 300)")
    parser.add_argument("--sigmas", default="0.05,lab", help="noise levels: σ of the median session, or 'lab'")
    parser.add_argument("--alpha", type=float, default=None, help="history detector: alpha (default: its own)")
    parser.add_argument("--min-segment", type=int, default=None, help="history detector: min_segment")
    parser.add_argument("--permutations", type=int, default=None, help="history detector: permutations")
    parser.add_argument("--skip-ab", action="store_true", help="leave out kvmio ab (its bootstrap is the slow part)")
    parser.add_argument("--real", type=Path, nargs="*", default=[], help="real iotune-capped lab series to check")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this file")
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--no-epochs", action="store_true",
                        help="resample the sessions as recorded, lab re-ups' level shifts included")
    args = parser.parse_args()

    from pytest_kvmio.history.changepoints import detect

    params = {k: v for k, v in (("alpha", args.alpha), ("min_segment", args.min_segment),
                                ("permutations", args.permutations)) if v is not None}
    recording, data = load(args.data, args.metric, per_epoch=not args.no_epochs)
    lab = recording.median_session_noise
    noises = [(s, 1.0, lab) if s == "lab" else (f"σ = {float(s):.0%}", float(s) / lab, float(s))
              for s in args.sigmas.split(",") if s]
    noises = [(("lab" if n == "lab" else n), f, sigma) for n, f, sigma in noises]
    out: dict[str, Any] = {"data": str(args.data), "metric": args.metric, "series": args.series,
                           "history_params": params, "results": []}
    print(f"# Detector power ({args.metric}; {len(recording.sessions)} recorded sessions of "
          f"{data['runs_per_session']} runs, {data['target']}, {data['profile']} {data['runtime']} s)\n")
    noises_of = recording.session_noises
    print(f"lab noise: median session {pct(lab)} (sessions {pct(min(noises_of))}–{pct(max(noises_of))}); "
          f"session medians vary by {pct(recording.between_noise)}; all runs together "
          f"{pct(dispersion([v for s in recording.sessions for v in s]))}; lab epochs (sessions between lab re-ups) "
          f"{data['epochs']}{', each moved to the common level' if not args.no_epochs else ', as recorded'}")
    print(f"history detector: detect({', '.join(f'{k}={v}' for k, v in params.items()) or 'its defaults'}); "
          f"{BEFORE} sessions before the change; gate: baseline from 2 sessions, tolerance {TOLERANCE:.0%}\n")
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    for name, factor, sigma in noises:
        label = f"lab ({pct(sigma)})" if name == "lab" else name
        sim = Simulator(recording, factor, rng, LAB_MAX_SPREAD if name == "lab" else DEFAULT_MAX_SPREAD)
        n = args.series
        # --- false alarms
        gate_alarm_series = gate_alarms = gate_judged = 0
        hist_alarms = 0
        fa = args.fa_series
        for i in range(fa):
            _, alarms, judged = gate_series(sim, BEFORE, 0, 0.0)
            gate_alarm_series += alarms > 0
            gate_alarms += alarms
            gate_judged += judged
            hist_alarms += history_series(sim, BEFORE, 0, 0.0, detect, params, seed=i)[1]
        rows = [("baseline gate", f"per session judged: {pct(gate_alarms / gate_judged)} (≤ "
                 f"{pct(upper95(gate_alarms, gate_judged))}); per series of {BEFORE - 2} sessions: "
                 f"{pct(gate_alarm_series / fa)} (≤ {pct(upper95(gate_alarm_series, fa))}) [{fa} series]"),
                ("history", f"per series of {BEFORE}: {pct(hist_alarms / fa)} (≤ {pct(upper95(hist_alarms, fa))}) "
                            f"[{hist_alarms} of {fa} series]")]
        entry: dict[str, Any] = {"noise": name, "sigma": sigma, "factor": factor,
                                 "gate_false_alarm_per_session": [gate_alarms, gate_judged],
                                 "gate_false_alarm_per_series": [gate_alarm_series, fa],
                                 "history_false_alarm_per_series": [hist_alarms, fa]}
        if not args.skip_ab:
            for rounds in AB_ROUNDS:
                verdicts = [ab_experiment(sim, rounds, 0.0) for _ in range(n)]
                alarms = sum(v in ("better", "worse") for v in verdicts)
                rows.append((f"kvmio ab, {rounds} rounds",
                             f"per experiment: {pct(alarms / n)} (≤ {pct(upper95(alarms, n))}) [{n} experiments]"))
                entry[f"ab{rounds}_false_alarm"] = [alarms, n]
        print(f"## Noise {label}: false alarms on unchanged series\n")
        print("| detector | false-alarm rate (95 % upper bound) |\n|---|---|")
        for detector, text in rows:
            print(f"| {detector} | {text} |")
        # --- detection
        print(f"\n## Noise {label}: detection rate ({n} series per cell; drop/σ in brackets)\n")
        header = " | ".join(f"{d:.0%} ({d / sigma:.1f})" for d in DROPS)
        print(f"| detector | after the change | {header} |\n|---|---|{'---|' * len(DROPS)}")
        detection: dict[str, dict[str, float]] = {}
        for after in AFTER:
            gate_rates, hist_rates = [], []
            for drop in DROPS:
                gate_rates.append(sum(gate_series(sim, 2, after, drop)[0] for _ in range(n)) / n)
                hist_rates.append(sum(history_series(sim, BEFORE, after, drop, detect, params, seed=i)[0]
                                      for i in range(n)) / n)
            detection[f"gate_after{after}"] = dict(zip(map(str, DROPS), gate_rates))
            detection[f"history_after{after}"] = dict(zip(map(str, DROPS), hist_rates))
            print(f"| baseline gate | {after} session{'s' if after > 1 else ''} | "
                  f"{' | '.join(pct(r) for r in gate_rates)} |")
            print(f"| history (change found at its run ±1) | {after} session{'s' if after > 1 else ''} | "
                  f"{' | '.join(pct(r) for r in hist_rates)} |")
        if not args.skip_ab:
            for rounds in AB_ROUNDS:
                rates = [sum(ab_experiment(sim, rounds, d) == "worse" for _ in range(n)) / n for d in DROPS]
                detection[f"ab{rounds}"] = dict(zip(map(str, DROPS), rates))
                print(f"| kvmio ab (`worse`) | {rounds} rounds | {' | '.join(pct(r) for r in rates)} |")
        entry["detection"] = detection
        # --- the smallest drop found at >= 90 %
        g = args.grid_series
        found = {
            "baseline gate, within 3 sessions": smallest(gate_rate(sim, 3, g)),
            "history, within 3 sessions": smallest(history_rate(sim, 3, g, detect, params)),
            "history, within 5 sessions": smallest(history_rate(sim, 5, g, detect, params)),
        }
        if not args.skip_ab:
            for rounds in AB_ROUNDS:
                found[f"kvmio ab, {rounds} rounds"] = smallest(ab_rate(sim, rounds, g))
        print(f"\n## Noise {label}: smallest drop found in ≥ {TARGET:.0%} of {g} series\n")
        print("| detector | smallest drop | rates seen |\n|---|---|---|")
        for detector, (least, seen) in found.items():
            shown = ", ".join(f"{d:.0%}: {pct(r)}" for d, r in sorted(seen.items()))
            print(f"| {detector} | {'> 80 %' if least is None else f'{least:.0%}'} | {shown} |")
        entry["smallest_drop_at_90"] = {k: v[0] for k, v in found.items()}
        out["results"].append(entry)
        print(f"\n({time.monotonic() - started:.0f} s so far)\n", flush=True)
    if args.sweep:
        out["sweep"] = sweep(recording, args, detect, rng)
    out["lab_noise"] = {"median_session": lab, "between_sessions": recording.between_noise,
                        "sessions": len(recording.sessions)}
    if args.real:
        check_real(args.real, args.metric, detect, params)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
