#!/usr/bin/env bash
# Three `lth run --trial N` processes started at once on a fresh data root and a fresh store, two of
# them for the same trial: all must exit 0, every round must be trained exactly once (each process
# prints a line "trial T RUN round K: ..." per round it trains; the rows of all three are counted), and the summary must
# equal a serial run's. Usage: scripts/check_concurrent_trials.sh [path/to/lth]   (about 3 minutes)
set -euo pipefail
LTH=${1:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/lth}
SHARED=${SHARED_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
work=$(mktemp -d)
mkdir -p "$work/data/MNIST/raw" "$work/logs"
cp "$SHARED"/MNIST/raw/* "$work/data/MNIST/raw/"         # no cache: the three processes build it at once
export LTH_DATA_DIR=$work/data OMP_NUM_THREADS=1
args="lenet-mnist --profile quick --control reinit --trials 2 --rounds 2"
"$LTH" run $args --store "$work/store" --trial 0 > "$work/logs/a.log" 2>&1 & a=$!
"$LTH" run $args --store "$work/store" --trial 0 > "$work/logs/b.log" 2>&1 & b=$!
"$LTH" run $args --store "$work/store" --trial 1 > "$work/logs/c.log" 2>&1 & c=$!
# waited for here, in this shell: a `$(wait ...)` subshell cannot wait for its parent's children
wait $a && ca=0 || ca=$?
wait $b && cb=0 || cb=$?
wait $c && cc=0 || cc=$?
codes="$ca $cb $cc"
echo "exit codes: $codes"
"$LTH" run $args --store "$work/store" --json "$work/parallel.json" > "$work/logs/final.log" 2>&1
"$LTH" run $args --store "$work/serial" --json "$work/serial.json" > "$work/logs/serial.log" 2>&1
# a trained round's line (tqdm's bar shares the log, so the line need not start one; the bar has no ": Pm")
rows() { grep -ahoE 'trial [0-9]+ [a-z]+ round [0-9]+: Pm' "$@" | sed 's/: Pm$//' || true; }
echo "rounds trained by the three processes (count, trial, run, round):"
rows "$work"/logs/[abc].log | sort | uniq -c
echo "rows: $(rows "$work"/logs/[abc].log | wc -l) trained, $(rows "$work"/logs/[abc].log | sort | uniq -d | wc -l) twice; the final call trained $(rows "$work/logs/final.log" | wc -l)"
python3 - "$work/parallel.json" "$work/serial.json" <<'PY'
import json, sys
runs = [[{**r, "rounds": [{k: v for k, v in x.items() if k != "seconds"} for x in r["rounds"]]}
         for r in json.load(open(p))["runs"]] for p in sys.argv[1:]]
print("summary equals the serial run's:", runs[0] == runs[1])
sys.exit(0 if runs[0] == runs[1] else 1)
PY
echo "temporary files left: $(find "$work" -name '*.tmp' | wc -l)"
[ "$codes" = "0 0 0" ]
