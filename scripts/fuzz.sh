#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each
# (default 10: the short run of `make test`; `make fuzz` gives each 300),
# starting from the committed seeds (fuzz/seeds/TARGET) and the inputs that
# once crashed it (fuzz/regressions/TARGET), which are replayed first. New
# corpus entries go to fuzz/corpus/TARGET (not committed). A crash stops the
# run with the input saved under fuzz/artifacts/TARGET: copy it into
# fuzz/regressions/TARGET once fixed. Built on stable Rust without a
# sanitizer (-s none): the targets check their own invariants.
# Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-10}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request filter_config lease_client route)
fuzz=../.tools/cargo-fuzz/bin/cargo-fuzz
"$fuzz" build -s none -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "fuzz: $t for ${seconds}s"
  log=$(mktemp)
  if ! "$fuzz" run -s none -O "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
  rm -f "$log"
done
