//! The fault-injection history checker of metaparticle-sync (`make chaos`).
//!
//! Real clients take locks, and stand in an election, through a real
//! elector while contenders die and freeze, electors restart, stores pause
//! and restart, a holder's clock runs slow or fast, a stranger tries to
//! renew and release leases it does not hold, and an operator asks the
//! leader to hand over; every critical section (a leader's term among
//! them) reports to a fencing-aware resource that keeps an append-only
//! history; the checker then counts overlapping sections, stale writes
//! accepted, tokens that did not grow, the stranger's attempts the elector
//! accepted, transfers that broke their reservation or were accepted from
//! a candidate that did not lead, and phantoms in the electors' histories.
//!
//! # Modules
//!
//! - [`config`]: what a run is given ([`store`], binaries, sizes, clock
//!   rate).
//! - [`run`]: one run, from start to report.
//! - [`cluster`]: the store, the network to it, and the [`electors`].
//! - [`contender`]: the processes that take locks through real clients;
//!   [`race`]: the racing contenders of the fairness control; [`elect`]:
//!   the candidates of an election, through `mpsync elect`.
//! - [`transferrer`]: the actor that asks the election's leader to hand
//!   over.
//! - [`clock`]: the clock fault, through libfaketime.
//! - [`stranger`]: the actor that tries other holders' leases.
//! - [`fault`] and [`inject`]: the kinds of fault, and injecting one;
//!   [`procs`]: the processes a fault aims at.
//! - [`fence`]: the fencing-aware resource and the history; [`hold`]: how
//!   a section holds its lock (exclusive, a reader, a permit) and the
//!   fencing rule.
//! - [`check`]: sections, overlaps, stale writes, token growth, strangers;
//!   [`fair`]: waiters overtaken by later ones, from the places in line
//!   that the [`watcher`] saw; [`views`]: the views the watch
//!   [`observer`] accepted from `POST /v1/watch`; [`transfers`]: the
//!   transfers honoured, and the reservation and `from` kept;
//!   [`histories`]: no phantom in the electors' histories.
//! - [`report`]: the report, as data and as text.
//! - [`rng`]: the seeded generator behind every random choice.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod check;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod contender;
pub mod elect;
pub mod electors;
pub mod fair;
pub mod fault;
pub mod fence;
pub mod histories;
pub mod hold;
pub mod inject;
pub mod observer;
pub mod procs;
pub mod race;
pub mod report;
pub mod rng;
pub mod run;
pub mod store;
pub mod stranger;
pub mod transferrer;
pub mod transfers;
pub mod views;
pub mod watcher;
