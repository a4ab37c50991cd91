#!/usr/bin/env bash
# Runs every test of metaparticle-sync: formatting and lints, the core's wasm
# builds, the wasm components, the core's unit and property tests, the
# elector's integration tests against real elector processes (over the
# memory store, a real etcd and the Kubernetes Lease API emulator), the
# host's tests running real components under real mpsync processes, the
# stock wasmtime CLI, jco and a real Envoy, and deploy/'s manifests.
# `make test` calls it after scripts/setup.sh.
#
# One build serves every step: the workspace is compiled once, in the
# `test` profile (the one `cargo test` and nextest build in; `cargo build`
# would use `dev`, and every unit would be compiled twice), which the demo
# also uses. The parts of wasmtime the tests lean on are optimised (see
# Cargo.toml), and clippy is the workspace's compiler (see
# scripts/build-env.sh). Nothing is built twice, and nothing the demo built
# is built again.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { printf '\n== [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*"; }

source scripts/build-env.sh

# Every temporary file of the run (the tests' scratch folders, etcd's data,
# jco's and Chromium's) goes into one folder that is removed when the run
# ends: a process a test kills cannot clean up after itself, and repeated
# runs must not fill /tmp.
run_tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpsync-test.XXXXXX")
export TMPDIR=$run_tmp
trap 'rm -rf "$run_tmp"' EXIT

# make test must leave the work tree as it found it: whatever a step writes
# belongs under target/ or .tools/ (both ignored), never beside the sources.
status_before=$(git status --porcelain --untracked-files=all 2>/dev/null || true)

step "format"
cargo fmt --all --check

step "build and lints: the workspace, every target, once (cold: about 6 minutes on 2 cores; after make demo: under a minute)"
log=$(mktemp)
cargo build --locked --profile test --workspace --exclude sync-guest --exclude sync-apps --all-targets 2>&1 | tee "$log"
if grep -qE '^(warning|error)(\[|:)' "$log"; then
  echo "lints: the build above has warnings; the tests need none" >&2
  exit 1
fi

step "core builds for wasm32-wasip2 and wasm32-wasip1 (guest component, Envoy filter)"
cargo build --locked -p mpsync-core --target wasm32-wasip2
cargo build --locked -p mpsync-core --target wasm32-wasip1

step "wasm components (apps, sync-guest, JS and Python examples, portable compositions)"
MPSYNC_WASM_DIR=$(scripts/build-wasm.sh | tail -n 1)
export MPSYNC_WASM_DIR

step "deploy/: kustomize renders, strict schema validation, envoy --mode validate"
scripts/check-deploy.sh

step "elector/openapi.yaml against a running elector (schemathesis)"
scripts/check-openapi.sh target/debug/elector

step "fuzz targets, briefly (make fuzz runs them longer)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh

step "doc tests"
cargo test --locked --workspace --exclude sync-guest --exclude sync-apps --doc

step "unit, property and integration tests"
cargo nextest run --locked --workspace --exclude sync-guest --exclude sync-apps --no-fail-fast

step "the work tree is as the tests found it"
status_after=$(git status --porcelain --untracked-files=all 2>/dev/null || true)
if [ "$status_after" != "$status_before" ]; then
  echo "make test changed the work tree; git status now says:" >&2
  diff <(printf '%s\n' "$status_before") <(printf '%s\n' "$status_after") >&2 || true
  exit 1
fi

step "all tests passed"
