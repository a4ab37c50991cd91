#!/usr/bin/env bash
# The demo: an elector on the embedded (memory) store, and the seed's two
# examples as WebAssembly apps under `mpsync run`:
#  1. locks: alice and bob contend for lock "test"; alice holds it (renewed
#     in the background by the host), unlocks, and bob gets it at once with
#     a higher fencing token;
#  2. elections: three replicas stand in election "shard"; the leader is
#     killed (SIGKILL) and another takes over when its lease runs out; that
#     one resigns and the last takes over at once;
#  3. Envoy follows the leader: three replicas of a tiny HTTP service behind
#     a real Envoy with the leader filter (envoy-demo, envoy/e2e).
# It builds what `make test` builds, in the same profile (`test`: the one
# `cargo test` and nextest use), so the tests after it reuse the build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/build-env.sh

# Cargo draws its own progress bar on a terminal; elsewhere (CI, a pipe) a
# line per stage says what is being built instead of a line per crate.
quiet=()
[ -t 2 ] || quiet=(-q)
if [ -x target/debug/envoy-demo ] && [ -x target/debug/mpsync ]; then
  echo "== building the elector, mpsync and the demo (already built: seconds)"
else
  echo "== building the elector, mpsync, the stock wasmtime CLI and the demo, test profile (first time: about 7 minutes on 2 cores)"
fi
cargo build --locked "${quiet[@]}" --profile test --bins
echo "== building the wasm apps and the Envoy filter (first time: under a minute)"
wasm=$(scripts/build-wasm.sh demo 2>/dev/null | tail -n 1)
bin=target/debug
export MPSYNC_CACHE_DIR=${MPSYNC_CACHE_DIR:-$PWD/target/mpsync-cache} MPSYNC_WASM_DIR=$wasm

pids=()
# Stop in reverse order of start: watchers before the elector they watch.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  rm -rf "${state:-}"
}
trap cleanup EXIT

# Start the elector on a port the OS picks and read the address it prints.
# A state file of its own, so the story starts from token 1 every time.
state=$(mktemp -d)
exec 3< <(exec "$bin/elector" --listen 127.0.0.1:0 --identity demo --log warn --state-file "$state/elector.json")
pids+=($!)
read -r -t 30 -u 3 line || { echo "the elector did not start" >&2; exit 1; }
url=${line#elector listening on }
echo "== elector (memory store) listening on $url"

# Runs `mpsync run APP ARGS…` with every output line stamped and labelled.
app() {
  local who=$1 wasm_file=$2; shift 2
  "$bin/mpsync" run --elector "$url" "$wasm/$wasm_file" "$@" 2>&1 |
    while IFS= read -r l; do printf '%s [%-9s] %s\n' "$(date +%T.%3N)" "$who" "$l"; done
}

echo
echo "== 1. the lock example: two contenders for lock \"test\" (hold 3 s, TTL 1 s, renewed by the host)"
app alice lock.wasm --id alice --hold-ms 3000 --ttl-ms 1000 &
alice=$!
sleep 0.5
app bob lock.wasm --id bob --hold-ms 1000 --ttl-ms 1000 &
bob=$!
wait "$alice" "$bob"

echo
echo "== 2. the election example: three replicas of \"shard\" (TTL 1.5 s)"
"$bin/mpsync" leader --elector "$url" --watch shard 2>/dev/null |
  while IFS= read -r l; do printf '%s [%-9s] leader: %s\n' "$(date +%T.%3N)" watch "$l"; done &
pids+=($!)
# In a subshell with its own stderr, so bash's "Killed" notice stays out of the story.
(app replica-1 election.wasm --name shard --id replica-1 --address 127.0.0.1:8081 --ttl-ms 1500) 2>/dev/null &
pids+=($!)
sleep 1
app replica-2 election.wasm --name shard --id replica-2 --address 127.0.0.1:8082 --ttl-ms 1500 --resign-after-ms 2000 &
second=$!
app replica-3 election.wasm --name shard --id replica-3 --address 127.0.0.1:8083 --ttl-ms 1500 --resign-after-ms 2000 &
third=$!
pids+=("$second" "$third")
sleep 1
echo "$(date +%T.%3N) == killing replica-1's host process (SIGKILL): no release; its lease must run out"
pkill -KILL -f "mpsync run .* --id replica-1 " || true
# replica-2 and replica-3 each lead in turn, resign after 2 s and exit.
wait "$second" "$third" 2>/dev/null || true
sleep 0.5
echo "== after the kill, a new leader took over once the 1.5 s lease ran out; after the resignation, at once."

echo
echo "== 3. Envoy follows the leader: three replicas of a tiny HTTP service behind Envoy's leader filter (TTL 1.5 s)"
"$bin/envoy-demo" --elector "$url" --mpsync "$bin/mpsync" --ttl-ms 1500
echo
echo "== done"
