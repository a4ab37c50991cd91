#!/usr/bin/env bash
# The demo: an elector on the embedded (memory) store, and the seed's lock
# example played by two contenders. alice takes the lock, holds it while it
# is renewed in the background, and releases it; bob, who was waiting on a
# long-poll, gets it at once with a higher fencing token.
set -euo pipefail
cd "$(dirname "$0")/.."

HOLD=${HOLD:-5s}
TTL=${TTL:-2s}

cargo build --release --locked -q -p elector --bin elector --example lock
bin=target/release

# Start the elector on a port the OS picks and read the address it prints.
exec 3< <(exec "$bin/elector" --listen 127.0.0.1:0 --identity demo --log warn)
elector_pid=$!
trap 'kill "$elector_pid" 2>/dev/null || true' EXIT
read -r -t 30 -u 3 line || { echo "the elector did not start" >&2; exit 1; }
url=${line#elector listening on }
echo "== elector (memory store) listening on $url"
echo "== two contenders for lock \"test\": hold $HOLD each, lease TTL $TTL (renewed at a third of it)"
echo

log=$(mktemp -d)
"$bin/examples/lock" --elector "$url" --id alice --hold "$HOLD" --ttl "$TTL" | tee "$log/alice" &
alice=$!
# Give alice a head start so the story is always told the same way round.
sleep 0.3
"$bin/examples/lock" --elector "$url" --id bob --hold "$HOLD" --ttl "$TTL" | tee "$log/bob" &
bob=$!
wait "$alice" "$bob"

ms() { awk -F'[:.]' '{ print (($1 * 60 + $2) * 60 + $3) * 1000 + $4 }' <<<"$1"; }
released=$(grep 'Unlocked' "$log/alice" | cut -c1-12)
acquired=$(grep 'I have the lock' "$log/bob" | cut -c1-12)
token_a=$(grep -o 'fencing token [0-9]*' "$log/alice" | grep -o '[0-9]*$')
token_b=$(grep -o 'fencing token [0-9]*' "$log/bob" | grep -o '[0-9]*$')
echo
echo "== bob got the lock $(( $(ms "$acquired") - $(ms "$released") )) ms after alice unlocked, with fencing token $token_b (alice had $token_a)."
echo "   The original elector never released a lock: bob would have waited out the TTL (30 s) plus its 10 s poll."
rm -rf "$log"
