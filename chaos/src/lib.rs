//! The fault-injection history checker of metaparticle-sync (`make chaos`).
//!
//! Real clients take locks through a real elector while contenders die and
//! freeze, electors restart and stores pause and restart; every critical
//! section reports to a fencing-aware resource that keeps an append-only
//! history; the checker then counts overlapping sections, stale writes
//! accepted and tokens that did not grow.
//!
//! # Modules
//!
//! - [`fence`]: the fencing-aware resource and the history.
//! - [`check`]: sections, overlaps, stale writes, token growth.
//! - [`run`]: one run: store, electors, contenders, faults, report.
//! - [`rng`]: the seeded generator behind every random choice.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod check;
pub mod fence;
pub mod rng;
pub mod run;
