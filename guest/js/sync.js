// @metaparticle/sync's API on the metaparticle:sync WIT, for JavaScript
// components (componentize-js, world `app` of ../../wit).
//
//   const lock = new Lock('test', () => { ... }, () => { ... });
//   lock.lock();             // blocks until held, then calls onAcquired
//   sleep(45_000);           // waits, renewing and watching the lease
//   lock.unlock();
//
//   new Election('test', onLeader, onLost).run();   // campaigns for ever
//
//   new SharedLock('pool', onAcquired, onLost, { permits: 4 }).lock();  // one of 4
//   new SharedLock('book', onAcquired, onLost).lock();   // a reader; a Lock is the writer
//
// A component has no background: the provider renews when the app calls
// in. So this module owns the waiting. `sleep(ms)` (and `run()`) wait on
// the leases' pollables and a timer together: every wake lets the provider
// renew, and a lease found lost calls its onLost at once. Use `sleep`
// where the seed used `setTimeout`.

import { Lock as WitLock } from 'metaparticle:sync/lock@0.1.2';
import { Election as WitElection } from 'metaparticle:sync/election@0.1.2';
import { SharedLock as WitSharedLock } from 'metaparticle:sync/shared@0.1.2';
import { poll } from 'wasi:io/poll@0.2.12';
import { now, subscribeDuration, subscribeInstant } from 'wasi:clocks/monotonic-clock@0.2.12';

const FOREVER = 18446744073709551615n; // u64::MAX milliseconds
const live = new Set();

function describe(e) {
  const payload = e && e.payload !== undefined ? e.payload : e;
  if (payload && payload.tag) {
    return payload.val === undefined ? payload.tag : `${payload.tag}: ${payload.val}`;
  }
  return String(e);
}

function options(ttlMs, holder) {
  return { ttlMs: ttlMs === undefined ? undefined : BigInt(ttlMs), holder };
}

/** Waits `ms` milliseconds, keeping every lease of this component alive and
 * calling onLost for any found lost; returns early once `done()` is true
 * after those checks. */
export function sleep(ms, done = () => false) {
  const until = now() + BigInt(Math.max(0, Math.round(ms))) * 1_000_000n;
  for (;;) {
    // Subscribe, then look, then wait: a loss between the look and the
    // wait still wakes us.
    const handles = [...live];
    const pollables = handles.map((h) => h.subscribe());
    for (const h of handles) {
      h.check();
    }
    const left = until - now();
    if (left <= 0n || done()) {
      return;
    }
    poll([subscribeDuration(left), ...pollables]);
  }
}

/** A named lock, as in the seed: `onAcquired` is called when `lock()` gets
 * it, `onLost` when it is lost (without one, the process exits). */
export class Lock {
  constructor(name, onAcquired, onLost, { ttlMs, holder } = {}, inner = undefined) {
    this.name = name;
    this.onAcquired = onAcquired || (() => {});
    this.onLost = onLost;
    this.inner = inner || new WitLock(name, options(ttlMs, holder));
    this.held = false;
  }

  /** Blocks until the lock is held (waiting in line: waiters get it in the
   * order they came), then calls onAcquired. */
  lock() {
    const lease = this.inner.lockWithin(FOREVER);
    this.held = true;
    live.add(this);
    this.onAcquired(lease);
    return lease;
  }

  /** Releases the lock at once; throws if the elector could not confirm. */
  unlock() {
    live.delete(this);
    this.held = false;
    try {
      this.inner.unlock();
    } catch (e) {
      throw new Error(`unlock ${this.name}: ${describe(e)}`);
    }
  }

  /** The lease while held, else undefined: check it before acting. */
  lease() {
    return this.inner.lease();
  }

  subscribe() {
    return this.inner.subscribe();
  }

  check() {
    if (this.held && this.inner.lease() === undefined) {
      this.held = false;
      live.delete(this);
      if (this.onLost) {
        this.onLost();
      } else {
        console.error(`lost the lock ${this.name} and no onLost handler was given: exiting`);
        throw new Error(`lost the lock ${this.name}`);
      }
    }
  }
}

/** A shared hold of a lock, with Lock's callbacks: one of any number of
 * readers (no `permits`; a Lock of the same name is the writer, and waits
 * for every reader), or one of `permits` holders of a counting semaphore.
 * Each hold has its own lease and fencing token; `permit()` says which of
 * a semaphore's permits it is. */
export class SharedLock extends Lock {
  constructor(name, onAcquired, onLost, { ttlMs, holder, permits } = {}) {
    super(name, onAcquired, onLost, {}, new WitSharedLock(name, { ...options(ttlMs, holder), permits }));
  }

  /** Semaphores: which permit this hold is, while held. */
  permit() {
    return this.inner.permit();
  }
}

/** A leader election, as in the seed: `run()` campaigns for ever, calling
 * onLeader on winning and onLost on losing.
 *
 * A transfer of the leadership asked of this candidate (`mpsync leader
 * NAME --transfer-to ID`) makes it step down at once, like a resignation
 * (onLost, and `run()` campaigns again). With an `onTransfer(request)`
 * option it keeps leading instead: `onTransfer` is called once, when a
 * request first shows (`request.to`: the candidate asked for, or undefined
 * for anyone else), and the app calls `resign()` when its work is handed
 * off. */
export class Election {
  constructor(name, onLeader, onLost, { ttlMs, candidate, address, onTransfer } = {}) {
    this.name = name;
    this.onLeader = onLeader || (() => {});
    this.onLost = onLost || (() => {});
    this.onTransfer = onTransfer;
    const ttl = ttlMs === undefined ? undefined : BigInt(ttlMs);
    this.inner = new WitElection(name, { ttlMs: ttl, candidate, address });
    if (onTransfer) {
      this.inner.stepDownOnTransfer(false);
    }
    this.leading = false;
    this.asked = false;
  }

  /** Campaigns, leads while it can, campaigns again: never returns. */
  run() {
    for (;;) {
      this.campaign();
      // Until it loses, steps down on a transfer, or resigns (onTransfer).
      sleep(365 * 24 * 3_600_000, () => !this.leading);
    }
  }

  /** Blocks until this candidate leads, then calls onLeader. */
  campaign() {
    const leader = this.inner.campaign(FOREVER);
    this.leading = true;
    live.add(this);
    this.onLeader(leader);
    return leader;
  }

  /** Steps down at once; throws if the elector could not confirm. */
  resign() {
    live.delete(this);
    this.leading = false;
    this.asked = false;
    try {
      this.inner.resign();
    } catch (e) {
      throw new Error(`resign ${this.name}: ${describe(e)}`);
    }
  }

  isLeader() {
    return this.inner.isLeader();
  }

  /** The hand-over asked of this candidate while it leads (`{ to }`), else
   * undefined; by default it steps down at once, so only an election made
   * with `onTransfer` sees one for long. */
  transferRequested() {
    return this.inner.transferRequested();
  }

  subscribe() {
    return this.inner.subscribe();
  }

  check() {
    if (this.leading && !this.inner.isLeader()) {
      this.leading = false;
      this.asked = false;
      live.delete(this);
      this.onLost();
      return;
    }
    if (this.leading && this.onTransfer && !this.asked) {
      const request = this.inner.transferRequested();
      if (request !== undefined) {
        this.asked = true;
        this.onTransfer(request);
      }
    }
  }
}

export { subscribeInstant };
