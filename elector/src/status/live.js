// The status page's script, first half: what the page knows and how it
// learns it. It lists every election and lock through the elector's API,
// follows /v1/history with a long-poll so a hand-over shows within
// milliseconds, and re-lists every few seconds for what changes without a
// hand-over (time left, waiters). view.js draws it.
//
// Served as /status.js: this file, then view.js, in one function scope
// (elector/src/status.rs), so view.js uses what this file defines and
// neither puts a name on the page's window.
"use strict";

const PAGE = 1000; // records or changes per request: the API's maximum
const RELIST_EVERY_MS = 5000; // renewals and waiters show no hand-over
const DEBOUNCE_MS = 150; // hand-overs come in bursts (a release, then the next grant)
const POLL_MS = 25000; // one long-poll of /v1/history
const MAX_BACKOFF_MS = 15000;
const HISTORY_RETRY_MS = 60000; // asking an elector that keeps no history again
const MAX_CHANGES = 300; // hand-overs kept on the page
const MAX_ROWS = 2000; // rows drawn per table; the filter narrows
const MAX_LOOKUPS = 50; // per-name histories asked after one listing
const LOW = 0.25; // under this fraction of its lease left, a row turns amber
const KINDS = ["election", "lock"];
const WHY = {
  acquired: "acquired",
  released: "released",
  expired: "expired",
  session_ended: "session ended",
  transferred: "transferred",
};

const $ = (id) => document.getElementById(id);

const state = {
  records: { election: [], lock: [] },
  listed: false,
  // "kind/name" -> the change that gave the current holder the record:
  // {holder, token, at (ms since the epoch, on the elector's clock)}.
  since: new Map(),
  looked: new Set(), // "kind/name/token" whose own history was asked for already
  changes: [], // newest first; {gap: true} marks hand-overs the page missed
  changesDrawn: -1,
  changesVersion: 0,
  history: "unknown", // "ok", or "missing" on an elector without /v1/history
  skewMs: 0, // the elector's clock minus this browser's
  lastAnswer: 0,
  listFailures: 0,
  pollFailures: 0,
  problem: "",
  retryAt: 0,
};

// The rows on screen, kept across renders so that a selection or a
// hover survives a re-list: "kind/name" -> {tr, cells, record}.
const rows = { election: new Map(), lock: new Map() };
let whenCells = []; // [cell, at] of the hand-overs on screen

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function getJson(path) {
  let res;
  try {
    res = await fetch(path, { cache: "no-store", headers: { accept: "application/json" } });
  } catch (e) {
    throw new HttpError(0, `${path}: the elector did not answer (${e.message})`);
  }
  learnSkew(res);
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const body = await res.json();
      if (body && body.message) message += `: ${body.message}`;
    } catch (_) {
      // Not JSON (a proxy's page): the status says enough.
    }
    throw new HttpError(res.status, `${path}: ${message}`);
  }
  return res.json();
}

// Times held and "ago" are counted on the elector's clock: over a
// port-forward the browser's may be off by minutes.
function learnSkew(res) {
  const date = Date.parse(res.headers.get("date") || "");
  if (Number.isNaN(date)) return;
  const skew = date + 500 - Date.now(); // Date has whole seconds
  state.skewMs = Math.abs(skew) > 2000 ? skew : 0;
}

const serverNow = () => Date.now() + state.skewMs;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (failures) => Math.min(MAX_BACKOFF_MS, 500 * 2 ** (failures - 1)) * (0.5 + Math.random() / 2);

// ---- listing ------------------------------------------------------------

async function listAll(kind) {
  const items = [];
  let cursor = null;
  for (;;) {
    const query = `limit=${PAGE}` + (cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`);
    const page = await getJson(`/v1/${kind}s?${query}`);
    items.push(...page.items);
    if (!page.next || page.next === cursor) return items;
    cursor = page.next;
  }
}

const relist = { timer: null, due: Infinity, running: false, again: false };

// One listing at a time; a request for one while it runs asks for
// another right after it, since what it lists may predate the request.
function scheduleRelist(delayMs) {
  if (relist.running) {
    relist.again = true;
    return;
  }
  const due = performance.now() + delayMs;
  if (relist.timer !== null && relist.due <= due) return;
  clearTimeout(relist.timer);
  relist.due = due;
  relist.timer = setTimeout(runRelist, delayMs);
}

async function runRelist() {
  relist.timer = null;
  relist.due = Infinity;
  relist.running = true;
  let next = RELIST_EVERY_MS;
  try {
    const [elections, locks] = await Promise.all(KINDS.map(listAll));
    const seen = performance.now();
    for (const r of elections.concat(locks)) r.seenAt = seen;
    state.records = { election: elections, lock: locks };
    state.listed = true;
    state.listFailures = 0;
    answered();
    render();
    lookUpSince();
  } catch (e) {
    state.listFailures += 1;
    next = backoff(state.listFailures);
    failed(e, next);
    render();
  } finally {
    relist.running = false;
  }
  const again = relist.again && state.listFailures === 0;
  relist.again = false;
  scheduleRelist(again ? DEBOUNCE_MS : next);
}

// ---- history --------------------------------------------------------------

async function follow() {
  let after = 0;
  let catchingUp = true; // reading what the elector already kept, without waiting
  for (;;) {
    let answer;
    try {
      // After a failure, ask without waiting first: a parked long-poll
      // would leave the page saying "reconnecting" for its whole length.
      const wait = catchingUp || state.pollFailures > 0 ? 0 : POLL_MS;
      answer = await getJson(`/v1/history?after=${after}&limit=${PAGE}&timeout_ms=${wait}`);
    } catch (e) {
      if (e.status === 404 || e.status === 405) {
        state.history = "missing";
        answered();
        state.changesVersion += 1;
        render();
        // The listing goes on alone; an elector upgraded in place may
        // keep a history later.
        await sleep(HISTORY_RETRY_MS);
        continue;
      }
      state.pollFailures += 1;
      const retry = backoff(state.pollFailures);
      failed(e, retry);
      await sleep(retry);
      continue;
    }
    const live = !catchingUp;
    if (state.pollFailures > 0 || (answer.gap && live)) {
      // Hand-overs may have happened unseen: list everything again.
      if (answer.gap && live) state.changes.unshift({ gap: true, at: serverNow() });
      state.changesVersion += 1;
      scheduleRelist(0);
    }
    state.pollFailures = 0;
    state.history = "ok";
    ingest(answer.changes, live);
    after = answer.next;
    if (catchingUp && answer.changes.length < PAGE) {
      catchingUp = false;
      // The first listing may have run before the last of these.
      scheduleRelist(DEBOUNCE_MS);
    }
    answered();
    render();
  }
}

function ingest(changes, live) {
  for (const c of changes) {
    const key = `${c.kind}/${c.name}`;
    if (c.to != null) state.since.set(key, { holder: c.to, token: c.token, at: Date.parse(c.at) });
    else state.since.delete(key);
    state.changes.unshift(c);
    if (live) applyChange(c);
  }
  if (changes.length === 0) return;
  if (state.changes.length > MAX_CHANGES) state.changes.length = MAX_CHANGES;
  state.changesVersion += 1;
  if (live) scheduleRelist(DEBOUNCE_MS);
}

// Shows a hand-over in its row at once; the listing it triggers brings
// the rest (time left, waiters) a moment later.
function applyChange(c) {
  const record = state.records[c.kind] && state.records[c.kind].find((r) => r.name === c.name);
  if (!record) return;
  record.token = c.token;
  if (c.to != null) record.holder = c.to;
  else delete record.holder;
  if (c.kind === "election") {
    if (c.address != null) record.address = c.address;
    else delete record.address;
  }
  delete record.expires_in_ms; // unknown until the listing
}

// A holder that took its record before the history this elector sent
// along: ask the record's own history (a few names per listing).
async function lookUpSince() {
  if (state.history !== "ok") return;
  // Bounded for a page left open for days: forgetting means at most
  // asking again.
  if (state.looked.size > 20000) state.looked.clear();
  const wanted = [];
  for (const kind of KINDS) {
    for (const { record } of rows[kind].values()) {
      const key = `${kind}/${record.name}`;
      const asked = `${key}/${record.token}`;
      if (!record.holder || heldSince(kind, record) !== null || state.looked.has(asked)) continue;
      state.looked.add(asked);
      wanted.push({ kind, record, key });
      if (wanted.length >= MAX_LOOKUPS) break;
    }
  }
  const worker = async () => {
    for (let w = wanted.shift(); w; w = wanted.shift()) {
      try {
        const answer = await getJson(`/v1/${w.kind}s/${encodeURIComponent(w.record.name)}/history`);
        const last = answer.changes.filter((c) => c.to === w.record.holder).pop();
        const known = state.since.get(w.key);
        if (last && (!known || known.holder !== last.to)) {
          state.since.set(w.key, { holder: last.to, token: last.token, at: Date.parse(last.at) });
        }
      } catch (_) {
        // Left as unknown; the listing is what matters.
      }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  tick();
}

function heldSince(kind, record) {
  const since = state.since.get(`${kind}/${record.name}`);
  // The holder alone: a hand-over to the next waiter may carry either
  // token, and the latest change naming the holder is its latest take.
  if (!since || since.holder !== record.holder) return null;
  return since.at;
}
