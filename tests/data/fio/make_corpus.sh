#!/bin/sh
# Regenerate the fio corpus in this directory from real fio runs.
#
# Run as root on Linux with fio 3.x (the committed files came from fio-3.33 on
# Debian 12, ext4 /tmp, 2 cores): sh tests/data/fio/make_corpus.sh
# Every job is short (1-3 s) against a 32 MiB scratch file under $WORK, never
# against a real disk. Numbers change between runs: after regenerating, update
# the expected values in tests/test_fio.py from the new files.
#
# Files marked HAND-MADE below are derived from a real run by the python
# snippets in this script; they exist because no fio 2.x binary is available
# here and because a unit error like the campaign's cannot be produced by fio.
# The client-server-*.json files need a fio server on 127.0.0.1:8765 (started
# and stopped by this script).
set -eu

OUT=$(cd "$(dirname "$0")" && pwd)
WORK=${WORK:-/tmp/kvmio-fio-corpus}
mkdir -p "$WORK"
F="$WORK/scratch.img"
COMMON="--filename=$F --size=32M --runtime=2 --time_based --direct=1 --bs=4k"

run() {  # run OUTFILE fio-args...: fio's stdout (JSON) goes to OUTFILE
    out=$1; shift
    echo "fio $*  > $out" >&2
    fio "$@" > "$OUT/$out"
}

# Plain json, one job, io_uring, random read at QD8.
run randread-iouring-qd8.json --name=randread $COMMON --ioengine=io_uring \
    --rw=randread --iodepth=8 --output-format=json

# json+ (latency histogram "bins"), libaio, 1 s to keep the bins small.
run randread-libaio-jsonplus.json --name=randread --filename="$F" --size=32M \
    --runtime=1 --time_based --direct=1 --bs=4k --ioengine=libaio \
    --rw=randread --iodepth=4 --output-format=json+

# json+ twice, the same job: two runs whose histograms tests/test_histogram.py pools.
run randread-jsonplus-run1.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --output-format=json+
run randread-jsonplus-run2.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --output-format=json+

# json+ with numjobs=2 per job: two histograms that results._combine merges.
run randread-numjobs2-perjob-jsonplus.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --numjobs=2 --output-format=json+

# numjobs=2 without group_reporting: two job entries, same name.
run randread-numjobs2-perjob.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --numjobs=2 --output-format=json

# numjobs=2 with group_reporting: one merged entry.
run randread-numjobs2-group.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --numjobs=2 --group_reporting --output-format=json

# Two different job sections (read QD4 and write QD2), per job, with global options.
cat > "$WORK/two-sections.fio" <<JOB
[global]
filename=$F
size=32M
runtime=2
time_based=1
direct=1
bs=4k
ioengine=libaio

[reader]
rw=randread
iodepth=4

[writer]
rw=randwrite
iodepth=2
JOB
run two-sections-perjob.json "$WORK/two-sections.fio" --output-format=json

# psync with iodepth>1: fio prints a note on stdout before the JSON document.
run psync-note-before-json.json --name=randread $COMMON --ioengine=psync \
    --rw=randread --iodepth=4 --output-format=json

# stdout and stderr together, as a `2>&1` capture gives them: job "bad" trims
# a plain file and fails (error=25, ENOTTY; fio prints an error line and a
# job line before the JSON), job "good" runs normally. Exit status 1.
echo "fio ... > stderr-then-json.json 2>&1" >&2
fio --name=bad --filename="$F" --size=32M --bs=64k --rw=randtrim \
    --name=good --filename="$F" --size=32M --runtime=1 --time_based \
    --rw=randread --bs=4k --ioengine=psync --output-format=json \
    > "$OUT/stderr-then-json.json" 2>&1 || true

# --status-interval=1: several concatenated documents, the last is final.
run status-interval.json --name=randread --filename="$F" --size=32M \
    --runtime=3 --time_based --direct=1 --bs=4k --ioengine=libaio \
    --rw=randread --iodepth=4 --status-interval=1 --output-format=json

# gtod_reduce=1: fio records no latency at all (zeros in the output).
run gtod-reduce.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=4 --gtod_reduce=1 --output-format=json

# Mixed random read/write, split per direction.
run randrw-mixed.json --name=randrw $COMMON --ioengine=libaio \
    --rw=randrw --rwmixread=70 --iodepth=4 --output-format=json

# Mixed random read/write, unified_rw_reporting: one "mixed" direction.
run randrw-unified.json --name=randrw $COMMON --ioengine=libaio \
    --rw=randrw --rwmixread=70 --iodepth=4 --unified_rw_reporting=1 \
    --output-format=json

# lat_percentiles=1: percentiles of total latency (lat_ns) as well.
run randread-lat-percentiles.json --name=randread $COMMON --ioengine=io_uring \
    --rw=randread --iodepth=8 --lat_percentiles=1 --output-format=json

# Trim needs a block device (on a plain file fio fails with ENOTTY): use a
# loop device over a scratch file. Skipped where loop devices are unavailable.
truncate -s 64M "$WORK/trim.img"
if LOOP=$(losetup -f --show "$WORK/trim.img" 2>/dev/null); then
    run randtrim-loop.json --name=randtrim --filename="$LOOP" --size=32M \
        --runtime=1 --time_based --bs=64k --rw=randtrim --output-format=json \
        || true
    losetup -d "$LOOP"
else
    echo "no loop device: skipping randtrim-loop.json" >&2
fi

# Trim on a plain file: a real job error (error=25, ENOTTY), exit status 1.
run randtrim-file-error.json --name=randtrim --filename="$F" --size=32M \
    --runtime=1 --time_based --bs=64k --rw=randtrim --output-format=json \
    || true

# Random read QD128 (the campaign's profile), basis of the HAND-MADE file below.
run randread-qd128.json --name=randread $COMMON --ioengine=libaio \
    --rw=randread --iodepth=128 --output-format=json

# Normal (text) output: not JSON at all, for the error message test.
run normal-output.txt --name=randread --filename="$F" --size=32M \
    --runtime=1 --time_based --bs=4k --rw=randread

# Client/server: one fio server on loopback, two clients (127.0.0.1 and
# localhost reach the same server; a job file applies to the --client before
# it, so each client names it). fio writes "client_stats" instead of "jobs":
# one entry per job and client with "hostname" and "port", then its
# "All clients" sum (fio 3.33 gives the sum no job options and no
# percentiles). The server's job lines ("<host> randread: ...") precede the
# JSON. Loopback only; the server is stopped afterwards.
# A published client/server output with the same layout exists
# (styliteag/fio-analyzer, scripts/tests/fixtures/fio_client_2clients.json at
# 50babd13ed5d7a2044fd4462ff3c2c6850355bd0, fio-3.43, two loopback clients) but
# that repository states no license, so it is not copied here. It shows that
# newer fio lists "global options" once per client (with hostname and port);
# tests/test_fio.py rewrites client-server-group.json into that layout.
cat > "$WORK/client-group.fio" <<JOB
[global]
filename=$F
size=32M
runtime=1
time_based=1
direct=1
bs=4k
ioengine=libaio

[randread]
rw=randread
iodepth=4
numjobs=2
group_reporting=1
JOB
grep -v group_reporting "$WORK/client-group.fio" > "$WORK/client-perjob.fio"
fio --server=ip:127.0.0.1,8765 --daemonize="$WORK/fio-server.pid"
sleep 1
run client-server-group.json --output-format=json \
    --client=127.0.0.1,8765 "$WORK/client-group.fio" \
    --client=localhost,8765 "$WORK/client-group.fio"
run client-server-perjob.json --output-format=json \
    --client=127.0.0.1,8765 "$WORK/client-perjob.fio" \
    --client=localhost,8765 "$WORK/client-perjob.fio"
kill "$(cat "$WORK/fio-server.pid")"

python3 - "$OUT" <<'PY'
"""Derive the HAND-MADE and malformed files from the real runs above."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
src = json.loads((out / "randread-iouring-qd8.json").read_text())


def to_fio2(doc):
    """Rewrite a fio 3.x document in the fio 2.x layout.

    fio 2.x (e.g. 2.2.10): clat/lat/slat in microseconds (integers for
    min/max and percentiles), no *_ns keys, no bw_bytes/io_kbytes, and
    "io_bytes" holding KiB (fio 3.0 changed it to bytes and added io_kbytes).
    """
    doc["fio version"] = "fio-2.2.10"
    doc.pop("timestamp_ms", None)
    for job in doc["jobs"]:
        for key in ("job_runtime", "sync", "latency_ns", "iodepth_submit",
                    "iodepth_complete"):
            job.pop(key, None)
        for ddir in ("read", "write", "trim"):
            d = job[ddir]
            d["io_bytes"] = d.pop("io_kbytes")
            d.pop("bw_bytes")
            for k in list(d):
                if k.endswith("_ns"):
                    stat = d.pop(k)
                    new = {
                        "min": stat["min"] // 1000,
                        "max": stat["max"] // 1000,
                        "mean": round(stat["mean"] / 1000, 2),
                        "stddev": round(stat["stddev"] / 1000, 2),
                    }
                    if "percentile" in stat:
                        new["percentile"] = {
                            p: v // 1000 for p, v in stat["percentile"].items()
                        }
                    d[k[:-3]] = new
            for k in ("iops_min", "iops_max", "iops_mean", "iops_stddev",
                      "iops_samples", "bw_samples"):
                d.pop(k, None)
    return doc


def dump(name, doc):
    """Write a document the way fio formats it (2-space indent)."""
    (out / name).write_text(json.dumps(doc, indent=2) + "\n")


dump("fio2-randread-hand-made.json", to_fio2(json.loads(json.dumps(src))))

# The campaign row: 171,816 IOPS at 743,970 us (reported as "743.97 msec") at
# QD128 x 1 job. Little's law gives ~127,800 I/Os in flight: impossible.
camp = json.loads((out / "randread-qd128.json").read_text())
r = camp["jobs"][0]["read"]
r["iops"] = 171816.0
r["clat_ns"]["mean"] = 743970.0 * 1000
r["lat_ns"]["mean"] = 743970.0 * 1000 + r["slat_ns"]["mean"]
dump("littles-law-violation-hand-made.json", camp)

# fio 2.x before "global options"/"job options" were printed: what the job set is
# unknown (the QD8 run read with iodepth 1 assumed would break Little's law).
old = to_fio2(json.loads(json.dumps(src)))
old.pop("global options", None)
for job in old["jobs"]:
    del job["job options"]
dump("fio2-no-job-options-hand-made.json", old)

text = (out / "randread-iouring-qd8.json").read_text()
(out / "malformed-truncated.json").write_text(text[: len(text) // 2])
bad = json.loads(text)
bad["jobs"][0]["read"]["iops"] = "fast"
dump("malformed-wrong-type.json", bad)
bad = json.loads(text)
del bad["jobs"]
dump("malformed-missing-jobs.json", bad)
# NaN: a token Python's json reads and writes (json.dumps below), fio never does.
bad = json.loads(text)
bad["jobs"][0]["read"]["clat_ns"]["mean"] = float("nan")
dump("malformed-nan.json", bad)
PY
echo "corpus written to $OUT" >&2
