// FinTrack Sentinel admin dashboard: a live view of the notifier's SSE feed.
//
// Constraints that shape this file: the Content-Security-Policy allows scripts and styles
// from 'self' only (no inline code, no style attributes, no eval), so all styling is done
// with classes or CSSOM properties; and every string in an event comes from API clients
// (user ids, merchants), so event data only ever reaches the page through textContent.
"use strict";

(function () {
  const MAX_ROWS = 500; // rows kept in the table (and records in memory)
  const SEEN_MAX = 10000; // event ids remembered for de-duplication
  const CHART_SECONDS = 60;
  const CHART_MIN_FRAME_MS = 200;
  const RESUMED_MS = 4000; // how long "resumed" shows before going back to "live"
  const RESUME_WINDOW_MS = 5000; // after a reconnect, older events arriving now are replays
  const OUTAGE_MS = 1500; // a reconnect faster than this is a rollover, not an outage
  const MIN_HEALTHY_MS = 2000; // a stream that ended sooner counts as a failed attempt
  const MAX_BACKOFF_MS = 5000;
  const TEXT_DEBOUNCE_MS = 350;
  const STATUSES = ["APPROVED", "FLAGGED", "BLOCKED", "FAILED"];
  const SEVERITIES = ["info", "low", "medium", "high", "critical"];
  const KINDS = ["decision", "alert"];

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat("en-US");
  const rateFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // ---------------------------------------------------------------- state
  let records = []; // newest first, at most MAX_ROWS
  const recordsById = new Map();
  const seen = new Set();
  const seenOrder = [];
  let incoming = []; // arrived, not yet merged into `records` (oldest first)
  let counts = zeroCounts();
  let alerts = { total: 0, bySeverity: {}, latest: null };
  let selected = null;
  let paused = false;
  let pausedNew = 0;
  let since = null; // null: since page load
  let renderQueued = false;
  let countersDirty = true;
  let chartDirty = true;
  let lastChartDraw = 0;
  let alertFlash = false; // a new alert arrived since the strip was last drawn
  const rulesSeen = new Set();

  // Throughput: decisions per second, keyed by whole second (local clock).
  let buckets = new Map();
  let windowStart = Date.now(); // when counting started (page load, filter change, clear)
  // Server clock minus browser clock is unknown; the smallest (arrival - decided_at) seen
  // approximates it (plus the fastest delivery), so replayed events can be placed in time.
  let clockSkew = null;

  // Connection.
  let source = null;
  let lastEventId = ""; // newest id seen on the current stream, for resuming
  let openedAt = 0; // when the current stream opened (0: not open)
  let lostAt = 0; // when the connection was lost (0: not lost)
  let graceTimer = 0;
  let reconnectedAt = 0;
  let replayed = 0;
  let resumedTimer = 0;
  let retryTimer = 0;
  let backoffMs = 1000;

  function zeroCounts() {
    return { APPROVED: 0, FLAGGED: 0, BLOCKED: 0, FAILED: 0, total: 0 };
  }

  // ---------------------------------------------------------------- filters
  const form = $("filters");
  const statusBoxes = Array.from(form.querySelectorAll('input[name="status"]'));

  function readFilters() {
    return {
      status: statusBoxes.filter((box) => box.checked).map((box) => box.value),
      severity: $("f-severity").value,
      kind: $("f-kind").value,
      user_id: $("f-user").value.trim(),
      rule: $("f-rule").value.trim(),
    };
  }

  function filterQuery(f) {
    const params = new URLSearchParams();
    if (f.status.length && f.status.length < STATUSES.length) params.set("status", f.status.join(","));
    if (f.severity) params.set("severity", f.severity);
    if (f.user_id) params.set("user_id", f.user_id);
    if (f.rule) params.set("rule", f.rule);
    if (f.kind) params.set("kind", f.kind);
    return params.toString();
  }

  function applyQueryToControls() {
    const params = new URLSearchParams(window.location.search);
    const status = params.get("status");
    if (status) {
      const wanted = new Set(status.split(",").map((s) => s.trim().toUpperCase()));
      if (STATUSES.some((s) => wanted.has(s))) {
        statusBoxes.forEach((box) => { box.checked = wanted.has(box.value); });
      }
    }
    const severity = params.get("severity");
    if (severity && SEVERITIES.includes(severity)) $("f-severity").value = severity;
    const kind = params.get("kind");
    if (kind && KINDS.includes(kind)) $("f-kind").value = kind;
    $("f-user").value = (params.get("user_id") || "").slice(0, 64);
    $("f-rule").value = (params.get("rule") || "").slice(0, 64);
  }

  // The same test the server applies, so rows already on screen can be filtered at once.
  function matches(rec, f) {
    const ev = rec.ev;
    if (f.status.length && !f.status.includes(ev.status)) return false;
    if (f.severity && SEVERITIES.indexOf(ev.severity) < SEVERITIES.indexOf(f.severity)) return false;
    if (f.kind && ev.kind !== f.kind) return false;
    if (f.user_id && ev.user_id !== f.user_id) return false;
    if (f.rule && !ev.reasons.some((r) => r.rule === f.rule)) return false;
    return true;
  }

  function onFiltersChanged() {
    const f = readFilters();
    const query = filterQuery(f);
    window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
    records = records.filter((rec) => matches(rec, f));
    incoming = incoming.filter((rec) => matches(rec, f));
    rebuildIndex();
    resetTallies();
    rebuildTable();
    // A new filter starts from now: replaying history for it could be unbounded.
    lastEventId = "";
    openStream(query, "");
  }

  let textTimer = 0;
  form.addEventListener("change", (event) => {
    const target = event.target;
    if (target.name === "status" && !statusBoxes.some((box) => box.checked)) {
      target.checked = true; // an empty status set would match nothing: keep at least one
      return;
    }
    if (target.type === "search") return; // handled by "input" with a debounce
    onFiltersChanged();
  });
  form.addEventListener("input", (event) => {
    if (event.target.type !== "search") return;
    window.clearTimeout(textTimer);
    textTimer = window.setTimeout(onFiltersChanged, TEXT_DEBOUNCE_MS);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.clearTimeout(textTimer);
    onFiltersChanged();
  });

  // ---------------------------------------------------------------- events in
  function str(value) {
    if (typeof value === "string") return value;
    if (value === null || value === undefined) return "";
    return String(value);
  }

  function num(value) {
    const n = Number(value);
    return Number.isFinite(n) ? n : 0;
  }

  // JSON from the wire → a plain record with known fields of known types.
  function parseEvent(type, id, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch (err) {
      console.warn("ignored an event that is not JSON", id, err);
      return null;
    }
    if (!data || typeof data !== "object") return null;
    const reasons = Array.isArray(data.reasons) ? data.reasons : [];
    const ev = {
      kind: KINDS.includes(data.kind) ? data.kind : type,
      txn_id: str(data.txn_id),
      user_id: str(data.user_id),
      amount: str(data.amount),
      currency: str(data.currency),
      merchant_type: str(data.merchant_type),
      source_ip: str(data.source_ip),
      status: str(data.status),
      score: num(data.score),
      severity: SEVERITIES.includes(data.severity) ? data.severity : "info",
      reasons: reasons
        .filter((r) => r && typeof r === "object")
        .map((r) => ({ rule: str(r.rule), score: num(r.score), reason: str(r.reason) })),
      received_at: str(data.received_at),
      decided_at: str(data.decided_at),
    };
    const arrived = Date.now();
    const decided = Date.parse(ev.decided_at);
    if (Number.isFinite(decided)) {
      const lag = arrived - decided;
      if (clockSkew === null || lag < clockSkew) clockSkew = lag;
    }
    const at = Number.isFinite(decided) ? Math.min(arrived, decided + (clockSkew || 0)) : arrived;
    return { id: id, ev: ev, arrived: arrived, at: at };
  }

  function remember(id) {
    if (seen.has(id)) return false;
    seen.add(id);
    seenOrder.push(id);
    if (seenOrder.length > SEEN_MAX) seen.delete(seenOrder.shift());
    return true;
  }

  function onMessage(message) {
    if (message.target !== source) return; // a stream we already replaced
    const id = message.lastEventId || "";
    if (id) lastEventId = id;
    if (id && !remember(id)) return; // a replay of something we already have
    const rec = parseEvent(message.type, id || "local-" + Date.now() + "-" + Math.random(), message.data);
    if (!rec) return;
    noteReplay(rec);
    tally(rec);
    incoming.push(rec);
    if (incoming.length > 2 * MAX_ROWS) incoming.splice(0, incoming.length - MAX_ROWS);
    if (paused) pausedNew += 1;
    scheduleRender();
  }

  function tally(rec) {
    const ev = rec.ev;
    for (const hit of ev.reasons) {
      if (hit.rule && rulesSeen.size < 100 && !rulesSeen.has(hit.rule)) {
        rulesSeen.add(hit.rule);
        $("rules-seen").appendChild(el("option")).value = hit.rule;
      }
    }
    if (ev.kind === "alert") {
      alerts.total += 1;
      alerts.bySeverity[ev.severity] = (alerts.bySeverity[ev.severity] || 0) + 1;
      alerts.latest = rec;
      alertFlash = true;
    } else {
      // Only decisions move the counters and the chart: an alert repeats a decision.
      if (STATUSES.includes(ev.status)) counts[ev.status] += 1;
      counts.total += 1;
      addToChart(rec);
      chartDirty = true;
    }
    countersDirty = true;
  }

  function resetTallies() {
    counts = zeroCounts();
    alerts = { total: 0, bySeverity: {}, latest: null };
    buckets = new Map();
    since = new Date();
    windowStart = Date.now();
    countersDirty = true;
    chartDirty = true;
    scheduleRender();
  }

  function rebuildIndex() {
    recordsById.clear();
    for (const rec of records) recordsById.set(rec.id, rec);
    if (selected) recordsById.set(selected.id, selected);
  }

  // ---------------------------------------------------------------- connection
  function setConn(state, text) {
    const badge = $("conn");
    badge.className = "badge badge--" + state;
    badge.dataset.state = state;
    $("conn-text").textContent = text;
  }

  // Reconnecting is done here rather than by EventSource's own retry: the notifier ends
  // every stream after a while by design, and reopening at once (resuming with the
  // `last_event_id` parameter) hides that rollover, while real failures back off.
  function openStream(query, after) {
    if (source) source.close();
    window.clearTimeout(retryTimer);
    const params = new URLSearchParams(query);
    if (after) params.set("last_event_id", after);
    const search = params.toString();
    const es = new EventSource("/events" + (search ? "?" + search : ""));
    source = es;
    es.addEventListener("decision", onMessage);
    es.addEventListener("alert", onMessage);
    es.addEventListener("open", () => {
      if (source !== es) return;
      openedAt = Date.now();
      backoffMs = 1000;
      window.clearTimeout(graceTimer);
      if (lostAt) {
        // Only a real outage can have missed events worth announcing.
        reconnectedAt = openedAt - lostAt > OUTAGE_MS ? openedAt : 0;
        replayed = 0;
        lostAt = 0;
      }
      if ($("conn").dataset.state !== "resumed") setConn("live", "Live");
    });
    es.addEventListener("error", () => {
      if (source !== es) return;
      // CLOSED: the server answered with an error status (signed out, overloaded).
      // CONNECTING: the connection dropped or the stream ended.
      const refused = es.readyState === EventSource.CLOSED;
      const lived = openedAt ? Date.now() - openedAt : 0;
      es.close();
      source = null;
      openedAt = 0;
      if (!lostAt) lostAt = Date.now();
      let delay = 0;
      if (refused || lived < MIN_HEALTHY_MS) {
        // Jitter spreads the reconnects of many dashboards after a notifier outage.
        delay = Math.round(backoffMs * (0.8 + 0.4 * Math.random()));
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      }
      window.clearTimeout(graceTimer);
      graceTimer = window.setTimeout(() => setConn("reconnecting", "Reconnecting…"), delay ? 0 : OUTAGE_MS);
      scheduleReopen(delay, refused);
    });
  }

  function scheduleReopen(delay, checkSession) {
    window.clearTimeout(retryTimer);
    retryTimer = window.setTimeout(async () => {
      if (checkSession && (await signedOut())) {
        window.location.assign("/login");
        return;
      }
      openStream(filterQuery(readFilters()), lastEventId);
    }, delay);
  }

  // The dashboard page itself redirects to sign-in once the session is gone.
  async function signedOut() {
    try {
      const probe = await fetch(window.location.pathname, {
        cache: "no-store",
        credentials: "same-origin",
        redirect: "manual",
      });
      return probe.type === "opaqueredirect" || probe.status === 401 || probe.status === 403;
    } catch (err) {
      return false; // unreachable is not signed out: keep retrying
    }
  }

  // After a reconnect, events decided before the reconnect are the ones we missed.
  function noteReplay(rec) {
    if (!reconnectedAt) return;
    if (rec.arrived - reconnectedAt > RESUME_WINDOW_MS) {
      reconnectedAt = 0;
      return;
    }
    if (rec.at >= reconnectedAt - 250) return;
    replayed += 1;
    setConn("resumed", "Resumed · " + numberFormat.format(replayed) + " replayed");
    window.clearTimeout(resumedTimer);
    resumedTimer = window.setTimeout(() => {
      if ($("conn").dataset.state === "resumed") setConn("live", "Live");
    }, RESUMED_MS);
  }

  // ---------------------------------------------------------------- formatting
  function pad(n, width) {
    return String(n).padStart(width || 2, "0");
  }

  function timeParts(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return [iso || "–", ""];
    const d = new Date(t);
    return [
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()),
      "." + pad(d.getMilliseconds(), 3),
    ];
  }

  function fullTime(iso) {
    const t = Date.parse(iso);
    if (!Number.isFinite(t)) return iso || "–";
    const d = new Date(t);
    return (
      d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      timeParts(iso).join("")
    );
  }

  // Amounts arrive as exact decimal text; group digits without going through a float.
  function formatAmount(text) {
    const m = /^(-?)(\d+)(\.\d+)?$/.exec(text);
    if (!m) return text;
    return m[1] + m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (m[3] || "");
  }

  const STATUS_CLASS = { APPROVED: "approved", FLAGGED: "flagged", BLOCKED: "blocked", FAILED: "failed" };

  function pill(status) {
    return el("span", "pill pill--" + (STATUS_CLASS[status] || "unknown"), status || "?");
  }

  function firstReason(ev) {
    if (!ev.reasons.length) return null;
    // The hit that contributed most explains the outcome best.
    return ev.reasons.reduce((best, r) => (r.score > best.score ? r : best), ev.reasons[0]);
  }

  // ---------------------------------------------------------------- table
  const tbody = $("rows");

  function rowFor(rec, isNew) {
    const ev = rec.ev;
    const tr = el("tr", ev.kind === "alert" ? "row--alert" : "");
    if (isNew) tr.classList.add("row--new");
    if (selected && selected.id === rec.id) tr.classList.add("is-selected");
    tr.dataset.id = rec.id;
    tr.dataset.txn = ev.txn_id;
    tr.dataset.status = STATUS_CLASS[ev.status] ? ev.status : "";
    tr.dataset.kind = ev.kind;
    tr.tabIndex = 0;

    const time = el("td", "num", timeParts(ev.decided_at)[0]);
    time.title = fullTime(ev.decided_at);

    const kind = el("td");
    if (ev.kind === "alert") kind.appendChild(el("span", "tag tag--alert", "Alert"));

    const txn = el("td", "mono", ev.txn_id.slice(0, 8));
    txn.title = ev.txn_id;
    const user = el("td", "", ev.user_id);
    user.title = ev.user_id;

    const amount = el("td", "num-col");
    amount.append(formatAmount(ev.amount), el("span", "cell-cur", ev.currency));

    const merchant = el("td", "", ev.merchant_type);
    merchant.title = ev.merchant_type;
    const ip = el("td", "mono", ev.source_ip);
    ip.title = ev.source_ip;
    const status = el("td");
    status.appendChild(pill(ev.status));
    const score = el("td", "num-col", String(ev.score));

    const reasonCell = el("td", "cell-reason");
    const top = firstReason(ev);
    if (top) {
      reasonCell.append(el("span", "cell-rule", top.rule), top.reason);
      reasonCell.title = top.rule + ": " + top.reason;
      if (ev.reasons.length > 1) reasonCell.append(el("span", "cell-muted", "  +" + (ev.reasons.length - 1)));
    } else {
      reasonCell.append(el("span", "cell-muted", "no rule fired"));
    }
    tr.append(time, kind, txn, user, amount, merchant, ip, status, score, reasonCell);
    return tr;
  }

  function mergeIncoming() {
    if (!incoming.length) return [];
    const fresh = incoming.slice(-MAX_ROWS).reverse(); // newest first
    incoming = [];
    records = fresh.concat(records);
    const dropped = records.length > MAX_ROWS ? records.splice(MAX_ROWS) : [];
    for (const rec of fresh) recordsById.set(rec.id, rec);
    for (const rec of dropped) if (!selected || rec.id !== selected.id) recordsById.delete(rec.id);
    return fresh;
  }

  function rebuildTable() {
    mergeIncoming();
    const frag = document.createDocumentFragment();
    for (const rec of records) frag.appendChild(rowFor(rec, false));
    tbody.replaceChildren(frag);
    updateTableMeta();
  }

  function renderNewRows() {
    const fresh = mergeIncoming();
    if (!fresh.length) return;
    const frag = document.createDocumentFragment();
    for (const rec of fresh) frag.appendChild(rowFor(rec, true));
    tbody.insertBefore(frag, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild.remove();
    updateTableMeta();
  }

  function updateTableMeta() {
    const n = tbody.rows.length;
    $("empty").hidden = n > 0;
    $("row-count").textContent = numberFormat.format(n) + (n === 1 ? " row" : " rows");
  }

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    window.requestAnimationFrame(render);
  }

  function render() {
    renderQueued = false;
    if (paused) {
      $("pause").textContent = pausedNew ? "Resume (" + numberFormat.format(pausedNew) + " new)" : "Resume";
    } else {
      renderNewRows();
    }
    if (countersDirty) {
      countersDirty = false;
      renderCounters();
      renderAlerts();
    }
    // The chart also redraws on a timer (time moves on); this keeps it in step with bursts.
    if (chartDirty && Date.now() - lastChartDraw >= CHART_MIN_FRAME_MS) drawChart();
  }

  // ---------------------------------------------------------------- counters and alerts
  function renderCounters() {
    $("count-total").textContent = numberFormat.format(counts.total);
    for (const status of STATUSES) {
      const n = counts[status];
      $("count-" + status).textContent = numberFormat.format(n);
      const share = counts.total ? (100 * n) / counts.total : 0;
      $("pct-" + status).textContent = counts.total ? rateFormat.format(share) + "%" : "–";
      $("seg-" + status).style.width = share + "%";
    }
    $("since").textContent = since ? "since " + timeParts(since.toISOString())[0] : "since page load";
  }

  function renderAlerts() {
    const strip = $("alert-strip");
    $("alert-count").textContent = numberFormat.format(alerts.total);
    const sev = $("alert-sev");
    const chips = [];
    for (let i = SEVERITIES.length - 1; i >= 0; i -= 1) {
      const name = SEVERITIES[i];
      const n = alerts.bySeverity[name];
      if (n) chips.push(el("span", "sev sev--" + name, numberFormat.format(n) + " " + name));
    }
    sev.replaceChildren(...chips);
    const latest = $("alert-latest");
    strip.classList.toggle("alert-strip--quiet", alerts.total === 0);
    if (alerts.latest) {
      const ev = alerts.latest.ev;
      const top = firstReason(ev);
      latest.disabled = false;
      latest.textContent =
        "Latest: " + ev.status + " · " + ev.user_id + " · " + formatAmount(ev.amount) + " " +
        ev.currency + (top ? " · " + top.reason : "");
    } else {
      latest.disabled = true;
      latest.textContent = "No alerts yet.";
    }
    if (alertFlash) {
      alertFlash = false;
      strip.classList.remove("alert-strip--flash");
      void strip.offsetWidth; // restart the CSS animation
      strip.classList.add("alert-strip--flash");
    }
  }

  $("alert-latest").addEventListener("click", () => {
    if (alerts.latest) select(alerts.latest);
  });

  // ---------------------------------------------------------------- detail panel
  function select(rec) {
    const previous = tbody.querySelector("tr.is-selected");
    if (previous) previous.classList.remove("is-selected");
    selected = rec;
    $("detail").classList.toggle("is-open", Boolean(rec));
    if (!rec) {
      $("detail-body").hidden = true;
      $("detail-empty").hidden = false;
      return;
    }
    recordsById.set(rec.id, rec);
    for (const tr of tbody.rows) {
      if (tr.dataset.id === rec.id) {
        tr.classList.add("is-selected");
        break;
      }
    }
    const ev = rec.ev;
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("d-status").replaceWith(Object.assign(pill(ev.status), { id: "d-status" }));
    const kind = $("d-kind");
    kind.className = ev.kind === "alert" ? "tag tag--alert" : "tag";
    kind.textContent = ev.kind === "alert" ? "Alert" : "Decision";
    const sev = $("d-severity");
    sev.className = "sev sev--" + ev.severity;
    sev.textContent = ev.severity;
    $("d-score").textContent = String(ev.score);
    $("d-amount").textContent = formatAmount(ev.amount) + " " + ev.currency;
    $("d-txn").textContent = ev.txn_id;
    $("d-user").textContent = ev.user_id;
    $("d-merchant").textContent = ev.merchant_type;
    $("d-ip").textContent = ev.source_ip;
    $("d-received").textContent = fullTime(ev.received_at);
    const latency = Date.parse(ev.decided_at) - Date.parse(ev.received_at);
    $("d-decided").textContent =
      fullTime(ev.decided_at) + (Number.isFinite(latency) ? "  (+" + numberFormat.format(latency) + " ms)" : "");
    $("d-event").textContent = rec.id;
    $("d-hit-count").textContent = ev.reasons.length ? "(" + ev.reasons.length + ")" : "";
    // Biggest contribution first, as the API lists them.
    const hits = ev.reasons.slice().sort((a, b) => b.score - a.score);
    const rows = hits.map((hit) => {
      const tr = el("tr");
      tr.append(el("td", "", hit.rule), el("td", "num-col", String(hit.score)), el("td", "", hit.reason));
      return tr;
    });
    $("d-hits-body").replaceChildren(...rows);
    $("d-hits").hidden = rows.length === 0;
    $("d-no-hits").hidden = rows.length !== 0;
  }

  function rowRecord(target) {
    const tr = target.closest("tr");
    return tr && tr.dataset.id ? recordsById.get(tr.dataset.id) : undefined;
  }

  tbody.addEventListener("click", (event) => {
    const rec = rowRecord(event.target);
    if (rec) select(rec);
  });
  tbody.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    const rec = rowRecord(event.target);
    if (rec) {
      event.preventDefault();
      select(rec);
    }
  });
  $("detail-close").addEventListener("click", () => select(null));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && selected) select(null);
  });

  // ---------------------------------------------------------------- pause / clear
  $("pause").addEventListener("click", () => {
    paused = !paused;
    const button = $("pause");
    button.setAttribute("aria-pressed", String(paused));
    if (paused) {
      pausedNew = 0;
      button.textContent = "Resume";
    } else {
      button.textContent = "Pause";
      rebuildTable();
    }
  });

  $("clear").addEventListener("click", () => {
    records = [];
    incoming = [];
    rebuildIndex();
    resetTallies();
    rebuildTable();
  });

  // ---------------------------------------------------------------- chart
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  let palette = readPalette();

  function readPalette() {
    const css = window.getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return {
      APPROVED: v("--approved"),
      FLAGGED: v("--flagged"),
      BLOCKED: v("--blocked"),
      FAILED: v("--failed"),
      grid: v("--chart-grid"),
      text: v("--chart-text"),
      font: v("--font") || "sans-serif",
    };
  }

  function addToChart(rec) {
    const second = Math.floor(rec.at / 1000);
    const now = Math.floor(Date.now() / 1000);
    if (second <= now - CHART_SECONDS) return;
    let bucket = buckets.get(second);
    if (!bucket) {
      bucket = { APPROVED: 0, FLAGGED: 0, BLOCKED: 0, FAILED: 0, total: 0 };
      buckets.set(second, bucket);
    }
    if (STATUSES.includes(rec.ev.status)) bucket[rec.ev.status] += 1;
    bucket.total += 1;
  }

  // A whole-number grid step (1, 2, 5 × 10^k) giving at most four steps up to `peak`.
  function gridStep(peak) {
    const rough = Math.max(1, peak / 4);
    const magnitude = Math.pow(10, Math.floor(Math.log10(rough)));
    for (const m of [1, 2, 5, 10]) {
      if (rough <= m * magnitude) return m * magnitude;
    }
    return 10 * magnitude;
  }

  function drawChart() {
    chartDirty = false;
    lastChartDraw = Date.now();
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);

    const nowMs = Date.now();
    const nowSecond = Math.floor(nowMs / 1000);
    const first = nowSecond - CHART_SECONDS + 1;
    for (const key of buckets.keys()) if (key < first) buckets.delete(key);

    let peak = 0;
    let sum = 0;
    for (let s = first; s <= nowSecond; s += 1) {
      const b = buckets.get(s);
      if (b) {
        peak = Math.max(peak, b.total);
        sum += b.total;
      }
    }
    const current = buckets.get(nowSecond);
    const lastFull = buckets.get(nowSecond - 1);
    // Averaged over the seconds the window has covered so far (so never above the peak).
    const spanSeconds = Math.min(CHART_SECONDS, nowSecond - Math.floor(windowStart / 1000) + 1);
    // Decisions in the last 1000 ms, taking the previous second pro rata.
    const elapsed = (nowMs % 1000) / 1000;
    const recent = (current ? current.total : 0) + (lastFull ? lastFull.total : 0) * (1 - elapsed);
    $("rate-now").textContent = rateFormat.format(Math.round(recent));
    $("rate-avg").textContent = rateFormat.format(sum / Math.max(1, spanSeconds));
    $("rate-peak").textContent = numberFormat.format(peak);

    const left = 36;
    const right = 8;
    const top = 8;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const highest = Math.max(4, peak);
    const step = gridStep(highest);
    const steps = Math.ceil(highest / step);
    const yMax = step * steps;

    ctx.font = "11px " + palette.font;
    ctx.textBaseline = "middle";
    ctx.lineWidth = 1;
    for (let i = 0; i <= steps; i += 1) {
      const value = step * i;
      const y = Math.round(top + plotH - (plotH * i) / steps) + 0.5;
      ctx.strokeStyle = palette.grid;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + plotW, y);
      ctx.stroke();
      ctx.fillStyle = palette.text;
      ctx.textAlign = "right";
      ctx.fillText(numberFormat.format(value), left - 6, y);
    }

    const slot = plotW / CHART_SECONDS;
    const barW = Math.max(1, slot - Math.max(1, slot * 0.22));
    for (let s = first; s <= nowSecond; s += 1) {
      const b = buckets.get(s);
      if (!b || !b.total) continue;
      const x = left + (s - first) * slot + (slot - barW) / 2;
      let y = top + plotH;
      for (const status of STATUSES) {
        if (!b[status]) continue;
        const h = (plotH * b[status]) / yMax;
        ctx.fillStyle = palette[status];
        ctx.globalAlpha = s === nowSecond ? 0.55 : 1; // the current second is still filling
        ctx.fillRect(x, y - h, barW, h);
        y -= h;
      }
      ctx.globalAlpha = 1;
    }

    ctx.fillStyle = palette.text;
    ctx.textBaseline = "alphabetic";
    for (const ago of [60, 45, 30, 15, 0]) {
      const x = left + plotW * (1 - ago / CHART_SECONDS);
      ctx.textAlign = ago === 60 ? "left" : ago === 0 ? "right" : "center";
      ctx.fillText(ago ? "-" + ago + "s" : "now", x, height - 4);
    }
  }

  if (window.ResizeObserver) new ResizeObserver(drawChart).observe(canvas.parentElement);
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    palette = readPalette();
    drawChart();
  });
  window.setInterval(() => {
    if (!document.hidden) drawChart();
  }, 250);

  // ---------------------------------------------------------------- start
  applyQueryToControls();
  renderCounters();
  renderAlerts();
  updateTableMeta();
  drawChart();
  openStream(filterQuery(readFilters()), "");
})();
