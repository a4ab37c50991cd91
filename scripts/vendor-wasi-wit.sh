#!/usr/bin/env bash
# Copies the WASI 0.2 WIT that wit/ refers to into wit/deps/, from the
# wasmtime-wasi and wasmtime-wasi-http crates of the wasmtime release the
# host is built on (48.0.8: WASI 0.2.12), so the app world resolves with
# nothing but wit/. Run after changing the wasmtime version; the files are
# committed, and host/tests/wit.rs checks they resolve.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=48.0.8
registry=$(dirname "$(cargo metadata --format-version 1 --locked 2>/dev/null \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="wasmtime-wasi"))')")
wasi="$registry/src/p2/wit/deps"
http="$(dirname "$registry")/wasmtime-wasi-http-$VERSION/wit/deps/http.wit"
case "$registry" in *"wasmtime-wasi-$VERSION"*) ;; *) echo "expected wasmtime-wasi $VERSION, found $registry" >&2; exit 1;; esac
for package in cli clocks filesystem io random sockets; do
  mkdir -p "wit/deps/$package"
  cp "$wasi/$package.wit" "wit/deps/$package/$package.wit"
done
mkdir -p wit/deps/http
cp "$http" wit/deps/http/http.wit
echo "wit/deps: WASI 0.2.12 from wasmtime-wasi $VERSION and wasmtime-wasi-http $VERSION"
