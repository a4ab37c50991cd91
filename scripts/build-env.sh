# Sourced by scripts/demo.sh, scripts/test.sh and the Makefile's long runs:
# how the workspace is built, so that each build reuses the one before.
#
# Clippy is the compiler of the workspace's own crates (clippy-driver is
# rustc plus the lints), so the lints come with the one build instead of a
# second, check-only compile of every dependency (`cargo clippy` compiles
# wasmtime again). Dependencies are compiled by plain rustc either way.
# test.sh fails on any warning; cargo replays a crate's warnings when it
# reuses the crate, so a warning found by the demo's build is not lost.
RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver)
export RUSTC_WORKSPACE_WRAPPER
