#!/usr/bin/env bash
# Runs `make test` N times in a row (default 3) while a CPU hog keeps every
# core busy, and prints how each run went: the suite must not need an idle
# machine. The hog is Debian's stress-ng (`stress-ng --cpu NPROC`) when it
# is installed, else one `yes > /dev/null` per core.
#
#   scripts/busy-test.sh [N]
#
# Logs: target/busy-test/run-K.log.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "usage: scripts/busy-test.sh [N]" >&2; exit 2; }
cores=$(nproc)
mkdir -p target/busy-test

hogs=()
stop_hogs() { for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap stop_hogs EXIT
if command -v stress-ng >/dev/null; then
  stress-ng --cpu "$cores" --quiet &
  hogs+=($!)
  hog="stress-ng --cpu $cores"
else
  for _ in $(seq "$cores"); do
    yes >/dev/null &
    hogs+=($!)
  done
  hog="$cores × yes > /dev/null"
fi
echo "busy-test: $runs runs of make test beside $hog"

failed=0
for run in $(seq "$runs"); do
  log=target/busy-test/run-$run.log
  start=$SECONDS
  if make test >"$log" 2>&1; then
    result=passed
  else
    result=FAILED
    failed=$((failed + 1))
  fi
  summary=$(grep -E "^ +Summary " "$log" | tail -n 1 | sed 's/^ *//')
  printf 'busy-test: run %d %s in %dm%02ds: %s (log: %s)\n' "$run" "$result" $(((SECONDS - start) / 60)) \
    $(((SECONDS - start) % 60)) "${summary:-no test summary}" "$log"
done
[ "$failed" -eq 0 ] || { echo "busy-test: $failed of $runs runs failed" >&2; exit 1; }
echo "busy-test: all $runs runs passed"
