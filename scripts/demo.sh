#!/usr/bin/env bash
# The demo: an elector on the embedded (memory) store, and the seed's two
# examples as WebAssembly apps under `mpsync run`:
#  1. locks: alice and bob contend for lock "test"; alice holds it (renewed
#     in the background by the host), unlocks, and bob gets it at once with
#     a higher fencing token;
#  2. elections: three replicas stand in election "shard" (TTL 5 s); the
#     leader's process is killed (SIGKILL): its session with the elector
#     closes with it, and another replica leads within milliseconds; that
#     one is frozen (SIGSTOP): a frozen holder is not dead, and keeps its
#     lease until the 5 s TTL runs out; the demo prints both times;
#  3. Envoy follows the leader: three replicas of a tiny HTTP service, each
#     under `mpsync elect`, behind a real Envoy with the leader filter
#     (envoy-demo, envoy/e2e): a rolling stop and a killed server, each
#     switched in milliseconds.
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
# Stop the apps still running (a story cut short), then the rest in reverse
# order of start: watchers before the elector they watch, and each gone
# before the next (the elector writes its state file as it stops, so the
# folder goes last).
cleanup() {
  for f in "${state:-/nonexistent}"/*.pid; do
    # A frozen one gets its SIGTERM once thawed.
    [ -f "$f" ] && kill -TERM "$(<"$f")" 2>/dev/null && kill -CONT "$(<"$f")" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "${state:-}"
}
trap cleanup EXIT

# A state file of its own, so the story starts from token 1 every time.
state=$(mktemp -d)
# The story's events: every labelled line also goes here as "UNIX_MS WHO
# LINE", and the story waits on them (opened read-write: no writer needed
# to open it, and it never sees an end).
mkfifo "$state/events"
exec 4<>"$state/events"

# Start the elector on a port the OS picks and read the address it prints.
exec 3< <(exec "$bin/elector" --listen 127.0.0.1:0 --identity demo --log warn --state-file "$state/elector.json")
pids+=($!)
read -r -t 30 -u 3 line || { echo "the elector did not start" >&2; exit 1; }
url=${line#elector listening on }
echo "== elector (memory store) listening on $url"

# Sets $now_ms (Unix ms) and $now (HH:MM:SS.mmm) from one reading of the clock.
clock() {
  local t=${EPOCHREALTIME/[.,]/}
  now_ms=$((t / 1000))
  printf -v now '%(%T)T.%03d' $((t / 1000000)) $((t / 1000 % 1000))
}

# Stamps and labels each line of stdin (after PREFIX), and passes it to the story.
label() {
  local who=$1 prefix=${2:-} l
  while IFS= read -r l; do
    clock
    printf '%s [%-9s] %s%s\n' "$now" "$who" "$prefix" "$l"
    printf '%s %s %s%s\n' "$now_ms" "$who" "$prefix" "$l" >&4
  done
}

# Reads the story's events until one whose label matches WHO says a line
# matching RE (both extended regular expressions); sets $said (the line),
# $said_by (the label) and $said_ms (when).
await() {
  local who=$1 re=$2 ms w l
  while read -r -t 60 -u 4 ms w l; do
    if [[ $w =~ ^($who)$ && $l =~ $re ]]; then
      said=$l said_by=$w said_ms=$ms
      return 0
    fi
  done
  echo "the demo waited 60 s for [$who] to say /$re/ in vain" >&2
  exit 1
}

# Says something from the demo, stamped.
story() {
  clock
  printf '%s == %s\n' "$now" "$*"
}

# Runs `mpsync run APP ARGS…` with every output line stamped and labelled;
# mpsync's own pid is in $state/WHO.pid while it runs. bash's notice when
# it is killed goes nowhere: the story says so itself.
app() {
  local who=$1 wasm_file=$2
  shift 2
  {
    "$bin/mpsync" run --elector "$url" "$wasm/$wasm_file" "$@" 2>&1 &
    echo "$!" >"$state/$who.pid"
    wait "$!" || true
    rm -f "$state/$who.pid"
  } 2>/dev/null | label "$who"
}

# The elector's count of claims on an election refused with 409: a
# candidate's first claim while another leads is one, and then it waits
# for the election to change. (bash's own /dev/tcp: no curl needed.)
refused() {
  local authority=${url#http://} l n=0
  exec 5<>"/dev/tcp/${authority%:*}/${authority##*:}"
  printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$authority" >&5
  while IFS= read -r l; do
    if [[ $l =~ ^mpsync_conflicts_total\{kind=\"election\"\}\ ([0-9]+) ]]; then n=${BASH_REMATCH[1]}; fi
  done <&5
  exec 5<&-
  echo "$n"
}

echo
echo "== 1. the lock example: two contenders for lock \"test\" (hold 3 s, TTL 1 s, renewed by the host)"
app alice lock.wasm --id alice --hold-ms 3000 --ttl-ms 1000 &
alice=$!
await alice '^I have the lock'
app bob lock.wasm --id bob --hold-ms 1000 --ttl-ms 1000 &
bob=$!
wait "$alice" "$bob"

echo
echo "== 2. the election example: three replicas of \"shard\" (TTL 5 s), and mpsync leader --watch"
"$bin/mpsync" leader --elector "$url" --watch shard 2>/dev/null > >(label watch "leader: ") &
pids+=($!)
declare -A job
stand() {
  local n=$1
  app "replica-$n" election.wasm --name shard --id "replica-$n" --address "127.0.0.1:808$n" --ttl-ms 5000 &
  job[replica-$n]=$!
}
# SIGTERM: the replica releases what it holds and exits.
stop() {
  kill -TERM "$(<"$state/$1.pid")"
  wait "${job[$1]}" || true
}
stand 1
await replica-1 '^I am the leader'
before=$(refused)
stand 2
stand 3
# Both must be campaigning before the kill, or the failover would time
# their start.
for ((tries = 0; $(refused) < before + 2; tries++)); do
  [ "$tries" -lt 3000 ] || { echo "replica-2 and replica-3 did not stand within 60 s" >&2; exit 1; }
  sleep 0.02
done
story "replica-2 and replica-3 stand too, and wait"
story "killing replica-1's mpsync run (SIGKILL): no release, but its session with the elector closes with the process, and the elector releases the lease at once"
clock
killed=$now_ms
kill -KILL "$(<"$state/replica-1.pid")"
await 'replica-[23]' '^I am the leader'
leader=$said_by
story "$leader leads $((said_ms - killed)) ms after the kill (TTL 5000 ms)"
other=replica-2
[ "$leader" != replica-2 ] || other=replica-3
story "freezing $leader's mpsync run (SIGSTOP): a frozen holder is not dead; its session stays open and says nothing, so its lease runs to the 5 s TTL"
frozen_pid=$(<"$state/$leader.pid")
clock
frozen=$now_ms
kill -STOP "$frozen_pid"
await "$other" '^I am the leader'
story "$other leads $((said_ms - frozen)) ms after the freeze: the TTL, then the hand-over"
story "thawing $leader (SIGCONT)"
kill -CONT "$frozen_pid"
await "$leader" '^I lost the leader'
story "$leader found its lease had run out (its own deadline passes before the elector lets anyone else in) and stands again; stopping both (SIGTERM: they release)"
stop "$leader"
stop "$other"
await watch '^leader: none'

echo
echo "== 3. Envoy follows the leader: three replicas of a tiny HTTP service, each under mpsync elect, behind Envoy's leader filter (TTL 5 s)"
"$bin/envoy-demo" --elector "$url" --mpsync "$bin/mpsync" --ttl-ms 5000
echo
echo "== done"
