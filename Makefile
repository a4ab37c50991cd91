# metaparticle-sync: the two commands of the README, and the benchmarks.
# Each target first runs scripts/setup.sh, which installs what is missing.

.PHONY: setup demo test bench

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	@scripts/test.sh

bench: setup
	cargo build --locked --release -p elector --bin elector
	MPSYNC_WASM_DIR=$$(scripts/build-wasm.sh | tail -n 1) && export MPSYNC_WASM_DIR && \
	cargo bench --locked -p elector --bench elector && \
	cargo bench --locked -p mpsync --bench host && \
	cargo bench --locked -p mpsync --bench envoy && \
	cargo bench --locked -p mpsync --bench stores
