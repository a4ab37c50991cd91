#!/usr/bin/env bash
# Measures a new user's first hour: from a fresh clone with an empty target
# directory and nothing the project's set-up installs, how long `make demo`
# takes to print the first line of its story, then how long `make test`
# takes after it. Prints both, and keeps each command's full output.
#
#   scripts/cold-start.sh [--from-scratch] [--keep] [REV]
#
#   REV             the commit to clone (default: HEAD of this checkout)
#   --from-scratch  also remove the wasm32 Rust targets from the toolchain
#                   (setup adds them back) and use an empty cargo registry
#                   and npm/pip caches, as on a machine that never built
#                   anything; without it, only the clone is fresh
#   --keep          keep the clone (default: removed at the end)
#
# The clone lives under ${COLD_START_DIR:-/tmp}; it needs about 25 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

scratch=false keep=false rev=HEAD
for arg in "$@"; do
  case "$arg" in
    --from-scratch) scratch=true ;;
    --keep) keep=true ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "cold-start: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) rev=$arg ;;
  esac
done

dir=$(mktemp -d "${COLD_START_DIR:-/tmp}/mpsync-cold-XXXXXX")
cleanup() { $keep || rm -rf "$dir"; }
trap cleanup EXIT
git clone --quiet "$repo" "$dir/clone"
git -C "$dir/clone" checkout --quiet "$rev"
echo "cold-start: fresh clone of $(git -C "$dir/clone" rev-parse --short HEAD) in $dir/clone"
if $scratch; then
  for target in wasm32-wasip2 wasm32-wasip1; do rustup target remove "$target" >/dev/null 2>&1 || true; done
  export CARGO_HOME=$dir/cargo-home npm_config_cache=$dir/npm-cache PIP_NO_CACHE_DIR=1
  mkdir -p "$CARGO_HOME"
  # Keep the toolchain's cargo subcommands (nextest) reachable.
  [ -d "$HOME/.cargo/bin" ] && export PATH="$PATH:$HOME/.cargo/bin"
  echo "cold-start: from scratch: no wasm targets, empty cargo registry ($CARGO_HOME), empty npm and pip caches"
fi
cd "$dir/clone"

# `make demo`, each line stamped with the seconds since the start; the
# story's first line is the first app output: "HH:MM:SS.mmm [alice    ] …".
start=$(date +%s)
first=""
while IFS= read -r line; do
  now=$(date +%s)
  printf '%5d  %s\n' "$((now - start))" "$line" >>"$dir/demo.log"
  if [ -z "$first" ] && [[ $line =~ ^[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}\ \[ ]]; then
    first=$((now - start))
    echo "cold-start: make demo printed its first story line after $first s"
  fi
done < <(make demo 2>&1; echo "make demo exit: $?")
demo_end=$(date +%s)
tail -n 1 "$dir/demo.log" | grep -q "make demo exit: 0" || { echo "cold-start: make demo failed; see $dir/demo.log" >&2; keep=true; exit 1; }

test_start=$(date +%s)
if ! make test >"$dir/test.log" 2>&1; then
  echo "cold-start: make test failed; see $dir/test.log" >&2
  keep=true
  exit 1
fi
test_end=$(date +%s)

mins() { printf '%dm%02ds' "$(($1 / 60))" "$(($1 % 60))"; }
echo
echo "cold-start: $(nproc) cores; $(git rev-parse --short HEAD)$($scratch && echo ', from scratch')"
echo "  make demo, first story line   $(mins "$first")"
echo "  make demo, whole              $(mins $((demo_end - start)))"
echo "  make test after make demo     $(mins $((test_end - test_start)))"
grep -E "^== \[" "$dir/test.log" | sed 's/^/    /'
$keep && echo "cold-start: logs and clone kept in $dir"
