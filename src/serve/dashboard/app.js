// The pas dashboard: the fleet of `pas serve`'s root, live. Plain JS, no framework, no
// network but the server's own endpoints:
//   GET  api/status                      the same JSON as `pas status --all --json`
//   GET  events                          server-sent events of every cell's events log
//   GET  api/cells/{cell}/requests       requests waiting for an operator
//   POST api/cells/{cell}/agents/{agent}/{pause|resume|revive|stop|restart}
//   POST api/cells/{cell}/requests/{id}/{approve|deny}
//   GET  quotas, reservations?status=active   with X-Pas-Cell: the Resource Manager's
// Writes carry `Authorization: Bearer <token>`; errors are `{"error": "..."}` and are shown
// as they come. Beats are not events, so the status is also polled (every POLL_MS, slower
// when a read takes long, never while the tab is hidden); events only make the next read
// come sooner. Per cell, requests, quota and reservations are read for the cells drawn
// only, when an event came from the cell or every EXTRAS_MS.
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "pas.serve.token";
  const POLL_MS = 2000;
  const DEBOUNCE_MS = 250;
  const EVENTS_KEPT = 100;
  const SHOWN_MAX = 300;
  const HISTORY = "5m";
  const EXTRAS_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...kids);
    return node;
  };
  const svg = (tag, attrs) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  };

  // Health words (src/model/status.rs) grouped into five colours.
  const HEALTH_CLASS = {
    healthy: "h-healthy",
    degraded: "h-late",
    late: "h-late",
    unhealthy: "h-down",
    down: "h-down",
    dead: "h-dead",
    failed: "h-dead",
    unknown: "h-unknown",
    offline: "h-unknown",
  };
  const healthClass = (h) => HEALTH_CLASS[h] || "h-unknown";
  // Kinds of `GET api/cells/{cell}/requests` items.
  const REQUEST_WORDS = { revive: "revival", budget: "context breach" };
  const CELL_CLASS = { active: "c-active", completed: "c-completed", failed: "c-failed" };

  const state = {
    status: null,
    fetchedAt: 0, // performance.now() when `status` arrived: ages tick on from there
    cells: new Map(), // cell id -> {at, requests, quotas, reservations}
    dirty: new Set(), // cells with events since their requests were read
    beats: new Map(), // "cell/agent" -> heartbeat_count last shown
    pulses: new Map(), // "cell/agent" -> performance.now() of its last event
    cards: new Map(), // "cell/agent" -> card parts
    filter: "",
  };
  const key = (cell, agent) => `${cell}/${agent}`;
  const domId = (prefix, cell, agent) =>
    `${prefix}-${cell}-${agent}`.replace(/[^A-Za-z0-9_-]/g, "_");

  // ---- formatting -------------------------------------------------------------------

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
    return `${Math.floor(s / 86400)}d${Math.floor(s / 3600) % 24}h`;
  }
  const pct = (x) => `${Math.round(x * 100)}%`;
  const tokens = (n) => (n >= 1000 ? `${Math.round(n / 1000)}k` : `${n}`);
  const clamp01 = (x) => Math.min(1, Math.max(0, x));
  const ctxFraction = (a) =>
    a.ctx_limit > 0 && a.ctx_used !== null && a.ctx_used !== undefined
      ? clamp01(a.ctx_used / a.ctx_limit)
      : null;
  const bytes = (n) => {
    for (const [f, unit] of [[1e12, "TB"], [1e9, "GB"], [1e6, "MB"], [1e3, "kB"]]) {
      if (n >= f) return `${+(n / f).toFixed(1)} ${unit}`;
    }
    return n ? `${n} B` : "0";
  };
  // Resources as `pas quota` names them (memory in bytes), with how to write an amount.
  const RESOURCES = [
    ["cpu", "cpu", (n) => `${+n.toFixed(2)} core${n === 1 ? "" : "s"}`],
    ["memory", "memory", bytes],
    ["gpu", "gpu", (n) => `${n}`],
    ["gpu_memory", "gpu memory", bytes],
  ];
  const elapsed = () => (performance.now() - state.fetchedAt) / 1000;
  const beatAge = (a) =>
    a.heartbeat_age_seconds === null || a.heartbeat_age_seconds === undefined
      ? null
      : a.heartbeat_age_seconds + elapsed();
  const time = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false });
  };

  // ---- notices ----------------------------------------------------------------------

  let noticeTimer = null;
  function notice(text, kind) {
    const box = $("notice");
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = false;
    clearTimeout(noticeTimer);
    if (kind !== "error") noticeTimer = setTimeout(() => (box.hidden = true), 4000);
  }

  // ---- the token --------------------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }
  function storeToken(token, remember) {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
      localStorage.removeItem(TOKEN_KEY);
      if (token) (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
    } catch (_) {
      notice("this browser keeps no storage: the token is asked again next time", "info");
    }
  }
  /** Asks for the token; resolves to it, or "" when the user cancels. */
  function askToken() {
    const dialog = $("token-dialog");
    const input = $("token-input");
    input.value = "";
    $("token-remember").checked = (() => {
      try {
        return localStorage.getItem(TOKEN_KEY) !== null;
      } catch (_) {
        return false;
      }
    })();
    return new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          if (dialog.returnValue === "save" && input.value.trim()) {
            storeToken(input.value.trim(), $("token-remember").checked);
            resolve(input.value.trim());
          } else {
            if (dialog.returnValue === "forget") {
              storeToken("", false);
              notice("token forgotten", "info");
            }
            resolve("");
          }
        },
        { once: true },
      );
      dialog.returnValue = "";
      dialog.showModal();
      input.focus();
    });
  }

  // ---- HTTP -------------------------------------------------------------------------

  /** Calls the server; resolves to the parsed JSON body, rejects with its `error`. */
  async function api(method, path, extra) {
    const headers = { Accept: "application/json", ...extra };
    if (method !== "GET") {
      const token = storedToken() || (await askToken());
      if (!token) throw new Error("not sent: controls need the server's token (Token…)");
      headers.Authorization = `Bearer ${token}`;
    }
    const res = await fetch(path, { method, headers, cache: "no-store" });
    const text = await res.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      if (res.status === 401) storeToken("", false);
      const said = body && typeof body.error === "string" ? body.error : text.trim();
      throw new Error(said || `${res.status} ${res.statusText}`);
    }
    return body;
  }

  // ---- reading the fleet --------------------------------------------------------------

  let refreshTimer = null;
  let inFlight = false;
  let again = false;
  let lastReadMs = 0;

  /** A read of the fleet after `delay` ms, unless one is already due sooner. */
  function soon(delay) {
    if (refreshTimer !== null) return;
    refreshTimer = setTimeout(() => {
      refreshTimer = null;
      refresh();
    }, delay);
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    const started = performance.now();
    try {
      const status = await api("GET", "api/status");
      const arrived = performance.now(); // the ages in it count on from here
      // Per cell drawn: the requests waiting, and the quota and active reservations (the
      // Resource Manager's endpoints) for the resource bars; read again when an event
      // came from the cell, else every EXTRAS_MS, so a big root costs a bounded number of
      // requests per read.
      const now = performance.now();
      const due = visible(status).cells.map((v) => v.cell.id).filter((id) => {
        const had = state.cells.get(id);
        return !had || state.dirty.has(id) || now - had.at > EXTRAS_MS;
      });
      due.forEach((id) => state.dirty.delete(id));
      const fresh = await Promise.all(due.map(extras));
      const cells = new Map();
      for (const c of status.cells || []) if (state.cells.has(c.id)) cells.set(c.id, state.cells.get(c.id));
      for (const [id, info] of fresh) cells.set(id, info);
      state.cells = cells;
      state.status = status;
      state.fetchedAt = arrived;
      // A read that worked clears the last one's complaint (render may make a new one).
      if ($("notice").dataset.kind === "read") $("notice").hidden = true;
      render();
    } catch (err) {
      notice(`cannot read the fleet: ${err.message}`, "read");
    } finally {
      inFlight = false;
      lastReadMs = performance.now() - started;
      if (again) {
        again = false;
        soon(DEBOUNCE_MS);
      }
    }
  }

  /** One cell's requests, quota and active reservations. */
  async function extras(id) {
    const one = { "X-Pas-Cell": id };
    const [requests, quotas, reservations] = await Promise.all([
      api("GET", `api/cells/${encodeURIComponent(id)}/requests`).then(items, (err) => [{ readError: err.message }]),
      api("GET", "quotas", one).then(items, () => []),
      api("GET", "reservations?status=active", one).then(items, () => []),
    ]);
    return [id, { at: performance.now(), requests, quotas, reservations }];
  }

  function poll() {
    // A slow read (a big fleet, a busy machine) is not repeated back to back; a tab out
    // of sight reads nothing until it is seen again.
    if (!document.hidden) soon(0);
    setTimeout(poll, Math.max(POLL_MS, lastReadMs * 4));
  }

  const items = (body) => (Array.isArray(body) ? body : (body && body.items) || []);

  // ---- rendering --------------------------------------------------------------------

  function shown(cell, agent) {
    const f = state.filter;
    if (!f) return true;
    return [agent.id, agent.name, agent.role, agent.health, agent.current_task, cell.name, cell.id]
      .filter(Boolean)
      .some((s) => String(s).toLowerCase().includes(f));
  }

  /** The cells and agents drawn: those the filter keeps, up to SHOWN_MAX agents (a big
   *  fleet is narrowed with the filter rather than drawn whole). */
  function visible(status) {
    const cells = [];
    let count = 0;
    let hidden = 0;
    for (const cell of status.cells || []) {
      const agents = (cell.agents || []).filter((a) => shown(cell, a));
      const kept = agents.slice(0, Math.max(0, SHOWN_MAX - count));
      hidden += agents.length - kept.length;
      count += kept.length;
      const named = [cell.name, cell.id].some((w) => String(w || "").toLowerCase().includes(state.filter));
      if (kept.length || (!agents.length && named && count < SHOWN_MAX)) cells.push({ cell, agents: kept });
    }
    return { cells, hidden };
  }

  function render() {
    const status = state.status;
    if (!status) return;
    const totals = status.totals || {};
    const health = Object.entries(totals.health || {})
      .map(([h, n]) => `${n} ${h}`)
      .join(" · ");
    const summary = `${totals.cells ?? 0} cell(s), ${totals.agents ?? 0} agent(s)` + (health ? `: ${health}` : "");
    // A live region: changed only when the words change.
    if ($("summary").textContent !== summary) $("summary").textContent = summary;
    const errors = (status.errors || []).map((e) => (typeof e === "string" ? e : e.message || JSON.stringify(e)));
    if (errors.length) notice(errors.join("; "), "read");
    renderTree(status);
    renderCards(status);
    renderRequests(status);
  }

  /** The tree: cells -> agents -> current task, one row each; colour by health, radius by
   *  context used. */
  function renderTree(status) {
    const rows = [];
    const { cells, hidden } = visible(status);
    for (const { cell, agents } of cells) {
      rows.push({ kind: "cell", depth: 0, cell });
      for (const agent of agents) {
        rows.push({ kind: "agent", depth: 1, cell, agent });
        if (agent.current_task) rows.push({ kind: "task", depth: 2, cell, agent });
      }
    }
    const ROW = 30;
    const height = Math.max(rows.length, 1) * ROW + 8;
    const root = svg("svg", {
      class: "tree-svg",
      width: "100%",
      height: String(height),
      role: "group",
      "aria-label": `fleet tree: ${rows.filter((r) => r.kind === "agent").length} agent(s)`,
    });
    const now = performance.now();
    const parentY = [];
    rows.forEach((row, i) => {
      const x = 14 + row.depth * 26;
      const y = 18 + i * ROW;
      parentY[row.depth] = y;
      if (row.depth > 0) {
        const px = 14 + (row.depth - 1) * 26;
        const py = parentY[row.depth - 1];
        root.append(svg("path", { class: "edge", d: `M${px},${py + 6} V${y} H${x - 8}` }));
      }
      const link = svg("a", {});
      let label;
      if (row.kind === "cell") {
        const c = row.cell;
        const t = c.tasks || {};
        link.setAttribute("class", `node cell ${CELL_CLASS[c.status] || "c-other"}`);
        link.append(svg("rect", { x: x - 7, y: y - 7, width: 14, height: 14, rx: 3 }));
        label = `${c.name || c.id}  ${c.status}  ${t.completed ?? 0}/${t.total ?? 0} tasks done`;
        link.setAttribute("aria-label", `cell ${c.name}, ${c.status}`);
      } else if (row.kind === "agent") {
        const a = row.agent;
        const frac = ctxFraction(a);
        const r = 4 + 8 * (frac ?? 0.15);
        const k = key(row.cell.id, a.id);
        const pulse = now - (state.pulses.get(k) || -1e9) < 1500 ? " pulse" : "";
        link.setAttribute("class", `node agent ${healthClass(a.health)}${pulse}`);
        link.setAttribute("href", `#${domId("card", row.cell.id, a.id)}`);
        link.setAttribute(
          "aria-label",
          `agent ${a.id}, ${a.health}` + (frac === null ? "" : `, context ${pct(frac)}`),
        );
        link.append(svg("circle", { cx: x, cy: y, r: r.toFixed(1) }));
        label = `${a.id}  ${a.health}` + (frac === null ? "" : `  ctx ${pct(frac)}`);
      } else {
        const a = row.agent;
        link.setAttribute("class", "node task");
        link.append(svg("circle", { cx: x, cy: y, r: 3 }));
        label = `task ${a.current_task}` + (a.progress === null || a.progress === undefined ? "" : ` · ${pct(a.progress)}`);
      }
      const text = svg("text", { x: x + 16, y: y + 4 });
      text.textContent = label;
      link.append(text);
      root.append(link);
    });
    const box = $("tree");
    box.replaceChildren(root);
    if (hidden) box.append(el("p", { class: "more", text: `${hidden} more agent(s) not drawn: filter to narrow` }));
    if (!rows.length) box.append(el("p", { class: "empty", text: "no cells in this root yet" }));
  }

  function bar(label, fraction, text, cls) {
    const outer = el("div", {
      class: `bar ${cls || ""}`,
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
    });
    const fill = el("span", { class: "fill" });
    outer.append(fill);
    const row = el("div", { class: "bar-row" }, el("span", { class: "bar-label", text: label }), outer, el("span", { class: "bar-text" }));
    const set = (f, t) => {
      if (f === null) {
        outer.removeAttribute("aria-valuenow");
        fill.style.width = "0";
      } else {
        outer.setAttribute("aria-valuenow", String(Math.round(f * 100)));
        fill.style.width = `${(f * 100).toFixed(1)}%`;
      }
      row.lastChild.textContent = t;
    };
    set(fraction, text);
    return { row, outer, set };
  }

  function control(text, action, cellId, agentId, cls) {
    const b = el("button", {
      type: "button",
      class: cls || "",
      "data-action": action,
      "aria-label": `${text} ${agentId}`,
      text,
    });
    b.addEventListener("click", () => act(b, `api/cells/${encodeURIComponent(cellId)}/agents/${encodeURIComponent(agentId)}/${action}`, `${action} ${agentId}`));
    return b;
  }

  function newCard(cell, agent) {
    const id = domId("card", cell.id, agent.id);
    const dot = el("span", { class: "beat", "aria-hidden": "true" });
    const title = el("h3", { id: `${id}-title` }, dot, el("span", { class: "name" }));
    const badge = el("span", { class: "badge" });
    const meta = el("p", { class: "meta" });
    const facts = el("dl", { class: "facts" });
    const factParts = {};
    for (const [k, label] of [["beat", "heartbeat"], ["proc", "process"], ["state", "state"], ["restarts", "restarts"]]) {
      const dd = el("dd", { "data-fact": k });
      facts.append(el("div", {}, el("dt", { text: label }), dd));
      factParts[k] = dd;
    }
    const task = el("p", { class: "task" });
    const progress = bar("progress", null, "", "b-progress");
    const context = bar("context", null, "", "b-context");
    const resources = el("div", { class: "resources" });
    const spend = el("p", { class: "spend" });
    const pauseBtn = control("Pause", "pause", cell.id, agent.id);
    const resumeBtn = control("Resume", "resume", cell.id, agent.id);
    const controls = el(
      "div",
      { class: "controls", role: "group", "aria-label": `controls of ${agent.id}` },
      pauseBtn,
      resumeBtn,
      control("Revive", "revive", cell.id, agent.id),
      control("Restart", "restart", cell.id, agent.id),
      control("Stop", "stop", cell.id, agent.id, "danger"),
    );
    const card = el(
      "article",
      { class: "card", id, "aria-labelledby": `${id}-title`, "data-cell": cell.id, "data-agent": agent.id },
      el("header", {}, title, badge),
      meta,
      facts,
      task,
      progress.row,
      context.row,
      resources,
      spend,
      controls,
    );
    return { card, dot, title, badge, meta, facts: factParts, task, progress, context, resources, spend, pauseBtn, resumeBtn };
  }

  function renderCards(status) {
    const box = $("cards");
    const seen = new Set();
    let count = 0;
    let previous = null;
    for (const { cell, agents } of visible(status).cells) {
      for (const a of agents) {
        count += 1;
        const k = key(cell.id, a.id);
        seen.add(k);
        let parts = state.cards.get(k);
        if (!parts) {
          parts = newCard(cell, a);
          state.cards.set(k, parts);
        }
        updateCard(parts, cell, a, k);
        // Keep the fleet's order without moving cards that are already in place (a moved
        // node loses its focus).
        const want = previous ? previous.nextSibling : box.firstChild;
        if (want !== parts.card) box.insertBefore(parts.card, want);
        previous = parts.card;
      }
    }
    for (const [k, parts] of state.cards) {
      if (!seen.has(k)) {
        parts.card.remove();
        state.cards.delete(k);
        state.beats.delete(k);
      }
    }
    const empty = box.querySelector(".empty");
    if (!count && !empty) box.append(el("p", { class: "empty", text: "no agents to show" }));
    if (count && empty) empty.remove();
  }

  function updateCard(p, cell, a, k) {
    p.card.className = `card ${healthClass(a.health)}`;
    p.card.dataset.health = a.health;
    p.card.dataset.status = a.status;
    p.title.querySelector(".name").textContent = a.name && a.name !== a.id ? `${a.name} (${a.id})` : a.id;
    p.badge.textContent = a.health;
    p.meta.textContent = [a.role, `cell ${cell.name || cell.id}`, a.status].filter(Boolean).join(" · ");
    const before = state.beats.get(k);
    if (before !== undefined && a.heartbeat_count > before) {
      p.dot.classList.remove("flash");
      void p.dot.offsetWidth; // restart the animation
      p.dot.classList.add("flash");
    }
    state.beats.set(k, a.heartbeat_count);
    p.agent = a;
    p.facts.beat.textContent = beatText(a);
    p.facts.proc.textContent = a.pid ? `${a.process || "running"} · pid ${a.pid}` : a.process || "none";
    p.facts.state.textContent =
      (a.state || "-") + (a.next_restart_in_seconds ? ` · restart in ${age(a.next_restart_in_seconds)}` : "");
    p.facts.restarts.textContent = String(a.restart_count ?? 0);
    p.task.textContent = a.current_task ? `task ${a.current_task}` : "no task";
    const prog = a.progress === null || a.progress === undefined ? null : clamp01(a.progress);
    p.progress.set(prog, prog === null ? "-" : pct(prog));
    const frac = ctxFraction(a);
    p.context.set(
      frac,
      frac === null ? "-" : `${pct(frac)} · ${tokens(a.ctx_used)}/${tokens(a.ctx_limit)}` + (a.ctx_state && a.ctx_state !== "ok" ? ` ${a.ctx_state}` : ""),
    );
    p.context.outer.dataset.state = a.ctx_state || "ok";
    p.resources.replaceChildren(...resourceBars(state.cells.get(cell.id) || {}, a.id));
    const spend = [];
    if (a.tokens_used !== null && a.tokens_used !== undefined) spend.push(`${tokens(a.tokens_used)} tokens`);
    if (a.cost_usd !== null && a.cost_usd !== undefined) spend.push(`$${a.cost_usd.toFixed(2)}`);
    p.spend.textContent = spend.length ? `spent ${spend.join(" · ")}` : "";
    p.spend.hidden = !spend.length;
    const paused = a.status === "paused";
    p.pauseBtn.hidden = paused;
    p.resumeBtn.hidden = !paused;
  }

  /** What the agent's active reservations hold of each resource the cell has a quota for
   *  (or that it holds without one). */
  function resourceBars(info, agent) {
    const held = {};
    for (const r of info.reservations || []) {
      if (r.agent !== agent) continue;
      for (const [res] of RESOURCES) held[res] = (held[res] || 0) + (Number(r[res]) || 0);
    }
    const rows = [];
    for (const [res, label, fmt] of RESOURCES) {
      const quota = (info.quotas || []).find((q) => q.resource === res);
      const cap = quota && quota.capacity > 0 ? quota.capacity : null;
      const mine = held[res] || 0;
      if (cap === null && !mine) continue;
      const text = cap === null ? `${fmt(mine)}, no quota` : `${fmt(mine)} of ${fmt(cap)}`;
      rows.push(bar(label, cap === null ? null : clamp01(mine / cap), text, "b-resource").row);
    }
    return rows;
  }

  function beatText(a) {
    const s = beatAge(a);
    return s === null ? "never" : `${age(s)} ago · ${a.heartbeat_count ?? 0} beat(s)`;
  }

  function renderRequests(status) {
    const list = $("requests");
    const items = [];
    for (const cell of status.cells || []) {
      for (const r of (state.cells.get(cell.id) || {}).requests || []) {
        if (r.readError) {
          items.push(el("li", { class: "failed", text: `cell ${cell.name}: requests cannot be read: ${r.readError}` }));
          continue;
        }
        const id = r.id;
        const what = `${REQUEST_WORDS[r.kind] || r.kind || "request"}${r.agent ? ` of ${r.agent}` : ""}`;
        const why = [
          r.cause,
          typeof r.ratio === "number" ? `context at ${pct(r.ratio)}` : null,
          r.at ? `filed ${time(r.at)}` : null,
        ]
          .filter(Boolean)
          .join(" · ");
        const base = `api/cells/${encodeURIComponent(cell.id)}/requests/${encodeURIComponent(id)}`;
        const approve = el("button", { type: "button", "data-action": "approve", "aria-label": `Approve ${what}`, text: "Approve" });
        const deny = el("button", { type: "button", class: "danger", "data-action": "deny", "aria-label": `Deny ${what}`, text: "Deny" });
        approve.addEventListener("click", () => act(approve, `${base}/approve`, `approve ${id}`));
        deny.addEventListener("click", () => act(deny, `${base}/deny`, `deny ${id}`));
        items.push(
          el(
            "li",
            { "data-request": id, "data-agent": r.agent || "" },
            el("div", {}, el("strong", { text: what }), el("span", { class: "muted", text: ` · cell ${cell.name} · ${id}` })),
            why ? el("p", { text: why }) : "",
            el("div", { class: "controls" }, approve, deny),
          ),
        );
      }
    }
    // Do not rebuild while a button inside has the focus and nothing changed.
    const signature = items.map((li) => li.textContent).join("\n");
    if (list.dataset.signature !== signature) {
      list.replaceChildren(...items);
      list.dataset.signature = signature;
    }
    $("requests-panel").hidden = items.length === 0;
  }

  /** Runs a control: one POST, the answer (or the server's error) shown, then a re-read. */
  async function act(button, path, what) {
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const body = await api("POST", path);
      const said = body && (body.message || body.status);
      notice(`${what}: done${typeof said === "string" ? ` (${said})` : ""}`, "ok");
    } catch (err) {
      notice(`${what}: ${err.message}`, "error");
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      soon(0);
    }
  }

  // ---- ticking ages -------------------------------------------------------------------

  function tick() {
    for (const p of state.cards.values()) {
      if (p.agent) p.facts.beat.textContent = beatText(p.agent);
    }
  }

  // ---- the events stream --------------------------------------------------------------

  let lastEventId = null;
  let streamed = false;
  let retryMs = 1000;

  function setConn(s, text) {
    const c = $("conn");
    c.dataset.state = s;
    c.textContent = text;
    c.setAttribute("aria-label", `events stream: ${text}`);
  }

  /** Reads `events` with fetch (EventSource would deliver only the kinds listened to by
   *  name); reconnects with backoff, resuming after the last id seen. */
  async function stream() {
    setConn("connecting", "connecting");
    try {
      const headers = { Accept: "text/event-stream" };
      if (lastEventId !== null) headers["Last-Event-ID"] = lastEventId;
      // The first connection shows the last minutes too; a reconnection resumes after
      // the last event seen.
      const url = lastEventId === null && !streamed ? `events?since=${HISTORY}` : "events";
      const res = await fetch(url, { headers, cache: "no-store" });
      if (!res.ok || !res.body) throw new Error(`events: ${res.status}`);
      setConn("live", "live");
      streamed = true;
      retryMs = 1000;
      soon(0); // what happened while disconnected
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      let ev = { kind: "", data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          let line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            if (ev.data.length) dispatch(ev);
            ev = { kind: "", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "data") ev.data.push(val);
          else if (field === "event") ev.kind = val;
          else if (field === "id") lastEventId = val;
          else if (field === "retry" && /^\d+$/.test(val)) retryMs = Number(val);
        }
      }
    } catch (_) {
      // Shown by the indicator; the next attempt follows.
    }
    setConn("down", `reconnecting in ${Math.round(retryMs / 1000)}s`);
    setTimeout(stream, retryMs);
    retryMs = Math.min(retryMs * 2, 15000);
  }

  function dispatch(ev) {
    let data;
    try {
      data = JSON.parse(ev.data.join("\n"));
    } catch (_) {
      return;
    }
    const kind = ev.kind || data.kind || "event";
    if (data.cell) state.dirty.add(data.cell);
    if (data.cell && data.agent) state.pulses.set(key(data.cell, data.agent), performance.now());
    const list = $("events");
    const li = el(
      "li",
      { class: `lvl-${data.level || "info"}` },
      el("time", { datetime: data.time || "", text: time(data.time) }),
      el("span", { class: "kind", text: kind }),
      el("span", { class: "msg", text: data.message || "" }),
    );
    list.prepend(li);
    while (list.children.length > EVENTS_KEPT) list.lastChild.remove();
    soon(DEBOUNCE_MS);
  }

  // ---- start --------------------------------------------------------------------------

  function start() {
    $("token-button").addEventListener("click", () => askToken());
    const filter = el("input", {
      id: "filter",
      type: "search",
      placeholder: "filter: agent, role, health, task, cell",
      "aria-label": "filter agents",
    });
    filter.addEventListener("input", () => {
      state.filter = filter.value.trim().toLowerCase();
      render();
    });
    $("agents-title").after(filter);
    document.addEventListener("visibilitychange", () => document.hidden || soon(0));
    setInterval(tick, 1000);
    poll();
    stream();
  }

  start();
})();
