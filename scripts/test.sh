#!/usr/bin/env bash
# Runs every test of metaparticle-sync: formatting and lints, the core's wasm
# builds, the wasm components, the core's unit and property tests, the
# elector's integration tests against real elector processes (over the
# memory store, a real etcd and the Kubernetes Lease API emulator), the
# host's tests running real components under real mpsync processes and a
# real Envoy, and deploy/'s manifests. `make test` calls it
# after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "core builds for wasm32-wasip2 and wasm32-wasip1 (guest component, Envoy filter)"
cargo build --locked -p mpsync-core --target wasm32-wasip2
cargo build --locked -p mpsync-core --target wasm32-wasip1

step "wasm components (apps, sync-guest, portable compositions)"
MPSYNC_WASM_DIR=$(scripts/build-wasm.sh | tail -n 1)
export MPSYNC_WASM_DIR

step "deploy/: kustomize renders, strict schema validation, envoy --mode validate"
scripts/check-deploy.sh

step "elector/openapi.yaml against a running elector (schemathesis)"
cargo build --locked -p elector
scripts/check-openapi.sh target/debug/elector

step "fuzz targets, briefly (make fuzz runs them longer)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh

step "doc tests"
cargo test --locked --workspace --doc

step "unit, property and integration tests"
cargo nextest run --locked --workspace --exclude sync-guest --exclude sync-apps --no-fail-fast
