// The status page's script, second half: drawing what live.js learnt,
// counting leases down between listings, and starting both. Names,
// holders and addresses are chosen by clients: they only ever go in as
// text (textContent, setAttribute), never as markup.

// ---- the line at the top ------------------------------------------------

function answered() {
  state.lastAnswer = serverNow();
  showConn();
}

function failed(e, retryMs) {
  state.problem = e.message;
  state.retryAt = Date.now() + retryMs;
  showConn();
}

function showConn() {
  const conn = $("conn");
  let text = "live";
  let cls = "live";
  if (state.listFailures > 0 || state.pollFailures > 0) {
    text = "reconnecting…";
    cls = "reconnecting";
  } else if (!state.listed || state.history === "unknown") {
    text = "connecting…";
    cls = "connecting";
  } else if (state.history === "missing") {
    text = `re-listing every ${RELIST_EVERY_MS / 1000} s (this elector keeps no history)`;
    cls = "degraded";
  }
  conn.textContent = text;
  conn.className = `conn ${cls}`;
  // The tab says it too, for a page left open in the background.
  const title = `${$("identity").textContent} · metaparticle-sync elector`;
  document.title = cls === "live" ? title : `(${text}) ${title}`;
  tickBanner();
}

function tickBanner() {
  const banner = $("problem");
  const failing = state.listFailures > 0 || state.pollFailures > 0;
  banner.hidden = !failing;
  if (!failing) return;
  const left = Math.max(0, Math.ceil((state.retryAt - Date.now()) / 1000));
  setText(banner, `${state.problem}. Retrying in ${left} s; the tables show what was last seen.`);
}

// ---- drawing ----------------------------------------------------------------

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function filterText() {
  return $("filter").value.trim().toLowerCase();
}

function recordMatches(record, filter) {
  if (!filter) return true;
  const names = [record.name, record.holder || ""].concat((record.shares || []).map((s) => s.holder));
  return names.some((n) => n.toLowerCase().includes(filter));
}

function listNames(names, more) {
  const shown = names.slice(0, 3).join(", ");
  return names.length > 3 || more ? `${shown}, …` : shown;
}

function holderText(kind, r) {
  if (r.holder) return r.holder;
  if (r.shares && r.shares.length) {
    const permits = r.permits ? ` (${r.shares.length} of ${r.permits} permits)` : "";
    return `shared: ${listNames(r.shares.map((s) => s.holder))}${permits}`;
  }
  return kind === "election" ? "no leader" : "free";
}

function waitingText(r) {
  if (!r.waiting) return "";
  return `${r.waiting}: ${listNames(r.line.map((w) => w.holder), r.waiting > r.line.length)}`;
}

// A transfer on a led election is asked of its leader; on one with no
// leader, it is the reservation the leader left when it stepped down.
function transferText(r) {
  const t = r.transfer;
  if (!t) return "";
  if (r.holder) return `${t.from} → ${t.to != null ? t.to : "anyone else"}`;
  return t.to != null ? `kept for ${t.to}` : `not for ${t.from}`;
}

const COLUMNS = {
  election: ["name", "holder", "address", "token", "held", "left", "transfer"],
  lock: ["name", "holder", "token", "held", "left", "waiting"],
};

function newRow(kind, name) {
  const tr = document.createElement("tr");
  tr.dataset.kind = kind;
  tr.dataset.name = name;
  const cells = {};
  for (const column of COLUMNS[kind]) {
    const td = document.createElement("td");
    td.className = column;
    tr.append(td);
    cells[column] = td;
  }
  return { tr, cells, record: null };
}

function fillRow(kind, row, r) {
  row.record = r;
  const c = row.cells;
  const held = Boolean(r.holder || (r.shares && r.shares.length));
  setText(c.name, r.name);
  setText(c.holder, holderText(kind, r));
  c.holder.classList.toggle("nobody", !held);
  c.holder.title = r.shares && r.shares.length ? r.shares.map((s) => `${s.holder} (token ${s.token})`).join("\n") : "";
  setText(c.token, String(r.token));
  if (c.address) setText(c.address, r.address || "");
  if (c.waiting) {
    setText(c.waiting, waitingText(r));
    c.waiting.title = (r.line || []).map((w) => `${w.position + 1}. ${w.holder}${w.shared ? " (shared)" : ""}`).join("\n");
  }
  if (c.transfer) setText(c.transfer, transferText(r));
  row.tr.classList.toggle("free", !held);
  row.tr.classList.toggle("leaderless", kind === "election" && !held);
  row.tr.classList.toggle("waited", Boolean(r.waiting));
  row.tr.classList.toggle("transfer", Boolean(r.transfer));
}

function renderRecords(kind, filter) {
  const all = state.records[kind];
  const matching = all.filter((r) => recordMatches(r, filter));
  const shown = matching.slice(0, MAX_ROWS);
  const tbody = $(`${kind}s`).tBodies[0];
  const old = rows[kind];
  const now = new Map();
  let at = tbody.firstChild;
  for (const r of shown) {
    const key = r.name;
    const row = old.get(key) || newRow(kind, key);
    fillRow(kind, row, r);
    now.set(key, row);
    // Moved only when out of place, so a selection in a row survives.
    if (row.tr === at) at = at.nextSibling;
    else tbody.insertBefore(row.tr, at);
  }
  while (at) {
    const next = at.nextSibling;
    at.remove();
    at = next;
  }
  rows[kind] = now;

  const plural = `${kind}s`;
  let empty = "";
  if (!state.listed) {
    empty = state.listFailures > 0 ? `No ${plural} listed yet: the elector does not answer (see above).` : "Loading…";
  } else if (all.length === 0) {
    empty =
      kind === "election"
        ? "No elections in the store: one appears here when a candidate first campaigns."
        : "No locks in the store: one appears here when something first takes it.";
  } else if (matching.length === 0) {
    empty = `None of the ${all.length} ${plural} has a name or holder containing “${filter}”.`;
  } else if (matching.length > shown.length) {
    empty = `Showing the first ${shown.length} of ${matching.length} ${plural}, in name order: filter to narrow.`;
  }
  const note = $(`${plural}-empty`);
  setText(note, empty);
  note.hidden = empty === "";
}

function changeMatches(c, filter) {
  if (!filter || c.gap) return true;
  return [c.name, c.from || "", c.to || ""].some((n) => n.toLowerCase().includes(filter));
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.className = cls;
  td.textContent = text;
  return td;
}

function renderChanges(filter) {
  const drawn = `${state.changesVersion}/${filter}`;
  if (state.changesDrawn === drawn) return;
  state.changesDrawn = drawn;
  const tbody = $("changes").tBodies[0];
  const fresh = [];
  whenCells = [];
  const shown = state.changes.filter((c) => changeMatches(c, filter));
  for (const c of shown) {
    const tr = document.createElement("tr");
    const when = cell("", "when");
    const at = c.gap ? c.at : Date.parse(c.at);
    when.title = new Date(at).toISOString();
    whenCells.push([when, at]);
    tr.append(when);
    if (c.gap) {
      tr.className = "gap";
      const note = cell("Hand-overs were missed here (the elector dropped them or restarted); the tables were listed again.", "note");
      note.colSpan = 5;
      tr.append(note);
    } else {
      tr.dataset.kind = c.kind;
      tr.dataset.name = c.name;
      tr.dataset.why = c.why;
      tr.className = `why-${c.why}`;
      tr.append(
        cell(c.kind, "kind"),
        cell(c.name, "name"),
        cell(WHY[c.why] || String(c.why), "why"),
        cell(`${c.from != null ? c.from : "nobody"} → ${c.to != null ? c.to : "nobody"}`, "who"),
        cell(String(c.token), "token"),
      );
    }
    fresh.push(tr);
  }
  tbody.replaceChildren(...fresh);
  let empty = "";
  if (state.history === "missing") {
    empty =
      "This elector keeps no history (an older elector, or one started with --history 0): hand-overs cannot be " +
      "shown. The tables above stay current.";
  } else if (state.history === "unknown") {
    empty = state.pollFailures > 0 ? "No history yet: the elector does not answer (see above)." : "Loading…";
  } else if (state.changes.length === 0) {
    empty = "No hand-overs since this elector started (or since its history was last emptied).";
  } else if (shown.length === 0) {
    empty = `None of the last ${state.changes.length} hand-overs names “${filter}”.`;
  }
  const note = $("changes-empty");
  setText(note, empty);
  note.hidden = empty === "";
}

function renderCounts() {
  const count = (kind, pred) => state.records[kind].filter(pred).length;
  const isHeld = (r) => Boolean(r.holder || (r.shares && r.shares.length));
  const elections = state.records.election.length;
  const leaderless = count("election", (r) => !isHeld(r));
  const locks = state.records.lock.length;
  const held = count("lock", isHeld);
  const waited = count("lock", (r) => r.waiting > 0);
  const transfers = count("election", (r) => r.transfer && r.holder);
  const parts = [
    `${elections} election${elections === 1 ? "" : "s"} (${elections - leaderless} led, ${leaderless} without a leader)`,
    `${locks} lock${locks === 1 ? "" : "s"} (${held} held, ${locks - held} free, ${waited} with waiters)`,
  ];
  if (transfers) parts.push(`${transfers} transfer${transfers === 1 ? "" : "s"} asked`);
  setText($("counts"), state.listed ? parts.join(" · ") : "");
  $("counts").classList.toggle("alarm", leaderless > 0);
}

function render() {
  const filter = filterText();
  for (const kind of KINDS) renderRecords(kind, filter);
  renderChanges(filter);
  renderCounts();
  tick();
}

// ---- the clock ------------------------------------------------------------

function fmtDuration(ms) {
  ms = Math.max(0, ms);
  if (ms < 10000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} m ${String(s % 60).padStart(2, "0")} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, "0")} m`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

function clockTime(ms) {
  return new Date(ms).toLocaleTimeString([], { hour12: false });
}

function tick() {
  const now = performance.now();
  const wall = serverNow();
  for (const kind of KINDS) {
    for (const { tr, cells, record: r } of rows[kind].values()) {
      let left = "";
      let low = false;
      let over = false;
      if (r.expires_in_ms != null) {
        const ms = Math.max(0, r.expires_in_ms - (now - r.seenAt));
        over = ms === 0;
        left = over ? "overdue" : fmtDuration(ms);
        low = !over && ms < r.ttl_ms * LOW;
      } else if (r.holder) {
        left = "…";
      }
      setText(cells.left, left);
      tr.classList.toggle("low", low);
      tr.classList.toggle("over", over);
      const since = r.holder ? heldSince(kind, r) : null;
      setText(cells.held, since !== null ? fmtDuration(wall - since) : r.holder ? "?" : "");
      cells.held.title =
        since !== null
          ? `since ${new Date(since).toISOString()}`
          : r.holder
            ? "held since before this elector's history begins"
            : "";
    }
  }
  for (const [td, at] of whenCells) setText(td, `${clockTime(at)} (${fmtDuration(wall - at)} ago)`);
  setText($("updated"), state.lastAnswer ? `${clockTime(state.lastAnswer)} (${fmtDuration(wall - state.lastAnswer)} ago)` : "not yet");
  tickBanner();
}

// ---- start ------------------------------------------------------------------

function start() {
  const filter = $("filter");
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("filter");
  if (fromHash) filter.value = fromHash;
  filter.addEventListener("input", () => {
    // In the address, so the filtered view can be shared; no reload.
    const value = filter.value.trim();
    history.replaceState(null, "", value ? `#filter=${encodeURIComponent(value)}` : location.pathname);
    render();
  });
  setInterval(tick, 250);
  scheduleRelist(0);
  follow();
}

start();
