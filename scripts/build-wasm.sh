#!/usr/bin/env bash
# Builds the wasm components once, in release mode for wasm32-wasip2, into
# the shared target directory, and composes the portable variant of each
# example app with the sync-guest component:
#   lock.wasm, election.wasm, probe.wasm     apps importing metaparticle:sync
#   churn.wasm                               handles opened and dropped (e2e/tests/handles.rs)
#   chaos.wasm                               the chaos checker's wasm contender
#   sync_guest.wasm                          the portable provider
#   lock-js.wasm, election-js.wasm           the JavaScript examples (guest/js, componentize-js)
#   lock-py.wasm, election-py.wasm           the Python examples (guest/python, componentize-py)
#   *.portable.wasm                          app + provider: WASI and wasi:http only
#   ../../wasm32-wasip1/release/leader_filter.wasm   the Envoy leader filter
#   ../../wasm32-wasip1/release/baseline_filter.wasm a no-op filter (benchmark floor)
# Prints the output directory on its last line.
#   scripts/build-wasm.sh demo   only the Rust apps and the filters (no JS,
#                                Python or compositions): what `make demo` runs
# The compositions use wac-plug (tools/) from the workspace's build (debug,
# else release): `cargo build --profile test --bins` first.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release --target wasm32-wasip2 -p sync-guest -p sync-apps
cargo build --locked --release --target wasm32-wasip1 -p leader-filter -p baseline-filter
target="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target/wasm32-wasip2/release"
if [ "${1:-}" != demo ]; then
  node guest/js/build.mjs "$out"
  guest/python/build.sh "$out"
  plug="$target/debug/wac-plug"
  [ -x "$plug" ] || plug="$target/release/wac-plug"
  [ -x "$plug" ] || { echo "wac-plug is missing: run \`cargo build --profile test --bins\` first" >&2; exit 1; }
  for app in lock election probe chaos lock-js election-js lock-py election-py; do
    "$plug" "$out/$app.wasm" --plug "$out/sync_guest.wasm" -o "$out/$app.portable.wasm"
  done
fi
echo "$out"
