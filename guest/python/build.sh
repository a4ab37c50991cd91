#!/usr/bin/env bash
# Builds the Python examples into components for the `app` world of
# ../../wit with componentize-py (installed by scripts/setup.sh into
# .tools/componentize-py):
#   guest/python/build.sh OUT_DIR  ->  OUT_DIR/lock-py.wasm, election-py.wasm
# A component newer than its sources is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$1
tool="$root/.tools/componentize-py"
# componentize-py imports the app to snapshot it, and its interpreter
# writes __pycache__/ beside the sources whatever PYTHONDONTWRITEBYTECODE
# says: build from a copy, so a build leaves nothing in the work tree.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp "$here"/*.py "$src"/
for app in lock election; do
  target="$out/$app-py.wasm"
  if [ -f "$target" ] && [ -z "$(find "$here"/*.py "$root/wit/sync.wit" -newer "$target")" ]; then
    echo "python: $target is up to date" >&2
    continue
  fi
  start=$(date +%s)
  (cd "$src" && PYTHONPATH="$tool" "$tool/bin/componentize-py" -d "$root/wit" -w app \
    componentize "$app" -o "$target" >/dev/null)
  echo "python: built $target ($(( $(stat -c %s "$target") / 1000000 )) MB) in $(( $(date +%s) - start )) s" >&2
done
