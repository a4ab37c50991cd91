# metaparticle-sync: the two commands of the README, and the benchmarks.
# Each target first runs scripts/setup.sh, which installs what is missing.

.PHONY: setup demo test bench bench-instructions bench-failover bench-fair bench-shards chaos fuzz

setup:
	@scripts/setup.sh

# The demo installs only what it needs (the wasm targets, protoc, Envoy).
demo:
	@scripts/setup.sh demo
	@scripts/demo.sh

test: setup
	@scripts/test.sh

bench: setup
	cargo build --locked --release --bins
	MPSYNC_WASM_DIR=$$(scripts/build-wasm.sh | tail -n 1) && export MPSYNC_WASM_DIR && \
	cargo bench --locked -p elector --bench elector && \
	cargo bench --locked -p elector --bench capacity && \
	cargo bench --locked -p elector --bench churn && \
	cargo bench --locked -p elector --bench fair && \
	cargo bench --locked -p elector --bench watch && \
	cargo bench --locked -p elector --bench leader_service && \
	cargo bench --locked -p mpsync-e2e --bench host && \
	cargo bench --locked -p envoy-e2e --bench envoy && \
	cargo bench --locked -p envoy-e2e --bench failover && \
	cargo bench --locked -p envoy-e2e --bench shards && \
	cargo bench --locked -p mpsync-e2e --bench stores && \
	cargo bench --locked -p mpsync-e2e --bench handles && \
	cargo bench --locked -p mpsync-e2e --bench failover
	$(MAKE) --no-print-directory bench-instructions

# Envoy's instructions per request (callgrind) with and without the leader
# filter, the EDS path and 1,000 shards; a few minutes. Knobs: BENCH_REQUESTS
# (2000), BENCH_WARMUP (500), BENCH_SHARDS (1000), BENCH_ONLY (row numbers).
bench-instructions: setup
	cargo build --locked --release --bins
	MPSYNC_WASM_DIR=$$(scripts/build-wasm.sh | tail -n 1) && export MPSYNC_WASM_DIR && \
	cargo bench --locked -p envoy-e2e --bench instructions

# 10,000 shards through one Envoy with 2 and with 4 workers (leader filter
# sharded by header, real elector and upstreams): connections from Envoy to
# the elector, elector and Envoy RSS, leader change to the first request
# routed to the new leader; a few minutes. Instructions per request at
# 10,000 shards: BENCH_SHARDS=10000 BENCH_ONLY=8,9 make bench-instructions.
# Knobs: SHARDS (10000), WORKERS ("2 4"), CHANGES (200), WHOLE (1: also an
# elector that keeps no watch sets, every watch sending every name, the
# comparison; 0: not), HTTP1 (0; 1: also the elector cluster on HTTP/1.1).
bench-shards: setup
	cargo build --locked --release --bins
	MPSYNC_WASM_DIR=$$(scripts/build-wasm.sh | tail -n 1) && export MPSYNC_WASM_DIR && \
	cargo bench --locked -p envoy-e2e --bench shards

# Crash failover of `mpsync lock` with sessions and without (SIGKILL of the
# holder to the successor's grant) on every store at TTL 10 s and 30 s, and
# what sessions cost (elector RSS per session, lock cycles per second); about
# 12 minutes, most of it waiting out TTLs without sessions. Knobs:
# FAILOVER_STORES (memory etcd kubernetes), FAILOVER_TTLS (10 30, seconds),
# FAILOVER_KILLS (50; 0 measures only the costs), FAILOVER_LANES (10 names
# at once), BENCH_SESSIONS (1000), BENCH_TASKS (8), BENCH_CYCLE_ROUNDS (5),
# BENCH_CYCLE_SECS (1).
bench-failover: setup
	cargo build --locked --release --bins
	cargo bench --locked -p mpsync-e2e --bench failover

# Fair locks against today's race (memory store): 8 contenders re-locking
# one lock (longest wait, Jain's index), 5,000 waiters parked on one lock
# (release to the next grant, answers per release), a semaphore of 10
# permits under 100 contenders against 10 plain locks; about 5 minutes.
# Knobs: FAIR_SECONDS (60 per mode), FAIR_PARKED (5000), FAIR_RELEASES
# (200), FAIR_RACE_RELEASES (20), FAIR_SEM_SECONDS (10 per row), FAIR_PARTS
# (1 2 3).
bench-fair: setup
	cargo bench --locked -p elector --bench fair

# The fault-injection history checker, long run: every store, real clients
# (mpsync lock on plain locks, on a semaphore of 2 and on a read-write lock;
# the wasm app native and portable), random faults, a stranger trying leases
# it does not hold, and a check that no waiter in line is overtaken. Knobs: CHAOS_STORES (memory etcd
# kubernetes), CHAOS_HANDOVERS (10000 per store), CHAOS_TIME_LIMIT (20m per
# store), CHAOS_SEED (default: from the clock; printed), CHAOS_CLOCK_RATE
# (a holder whose clocks run at this rate, through libfaketime: safe from
# 0.8 up by lease_safety's bound, shown safe at 0.9 and caught at 0.5),
# CHAOS_ARGS (any other mpsync-chaos flag; see its
# --help). The reports go to the terminal and to target/chaos/report.json;
# the histories (STORE.jsonl) and the electors' output (STORE-electors.log)
# to target/chaos/.
CHAOS_STORES ?= memory etcd kubernetes
CHAOS_HANDOVERS ?= 10000
CHAOS_TIME_LIMIT ?= 20m
chaos: setup
	. scripts/build-env.sh && cargo build --locked --profile test --bins
	MPSYNC_WASM_DIR=$$(scripts/build-wasm.sh | tail -n 1) && export MPSYNC_WASM_DIR && \
	target/debug/mpsync-chaos $(foreach s,$(CHAOS_STORES),--store $(s)) \
	  --handovers $(CHAOS_HANDOVERS) --time-limit $(CHAOS_TIME_LIMIT) \
	  $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(if $(CHAOS_CLOCK_RATE),--clock-rate $(CHAOS_CLOCK_RATE)) \
	  --json target/chaos/report.json --history-dir target/chaos $(CHAOS_ARGS)

# Every fuzz target for FUZZ_SECONDS each (default 300); see scripts/fuzz.sh.
FUZZ_SECONDS ?= 300
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh
