// hookd console: one page over hookd's own /v1 API, embedded in the binary.
//
// The token lives in sessionStorage and goes out only as an Authorization header (no cookies,
// so no CSRF). Everything is built with DOM calls and textContent: no innerHTML, no inline
// script or style, so the page runs under `default-src 'self'`. The live feed reads
// GET /v1/stream with fetch (EventSource cannot send a header) and refreshes the open view.
"use strict";

const TOKEN_KEY = "hookd-token";
const main = document.getElementById("main");
const statusLine = document.getElementById("status");
const nav = document.getElementById("nav");
let stream = null; // AbortController of the live feed
const feed = []; // newest first, at most FEED_MAX lines
const FEED_MAX = 200;
let refreshTimer = null;
let shown = 0; // the newest refresh started (see refresh)
let view = { name: "", id: null, refresh: null };
// A rotation's new secret, kept across live refreshes of its endpoint's view until the
// operator says it is copied (or leaves the view): shown once, but not lost to a refresh.
let newSecret = null;

// --- small helpers -----------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

function badge(state) {
  const s = state || "other";
  return h("span", { class: `badge s-${s}` }, s.replace("_", " "));
}

function age(seconds) {
  if (!seconds) return "—";
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

function say(message, isError) {
  statusLine.textContent = message;
  statusLine.className = isError ? "error" : "";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) {
    const msg = (data && data.error && data.error.message) || r.statusText;
    if (r.status === 401 || r.status === 403) {
      logout(`The token was refused (${r.status}): ${msg}`);
    }
    throw new ApiError(r.status, msg);
  }
  return data;
}

async function act(label, fn) {
  try {
    say(`${label}…`);
    const message = await fn();
    say(message || `${label}: done`);
  } catch (e) {
    say(`${label} failed: ${e.message}`, true);
  }
}

// --- login -------------------------------------------------------------------------------

function showLogin(message) {
  nav.hidden = true;
  const input = h("input", {
    id: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "token-help",
  });
  const form = h(
    "form",
    { id: "login-form", onsubmit: (e) => { e.preventDefault(); login(input.value.trim()); } },
    h("label", { for: "token" }, "Admin token", input),
    h("p", { id: "token-help", class: "muted" },
      "An admin token of this hookd (auth.admin_tokens, or the data directory's admin.token). " +
      "It is kept in this tab only."),
    h("button", { type: "submit", class: "primary" }, "Log in"),
  );
  shown += 1; // a refresh still waiting for hookd must not cover the form
  main.replaceChildren(h("section", { class: "login card" }, h("h1", {}, "hookd console"), form));
  if (message) say(message, true);
  input.focus();
}

async function login(value) {
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("GET", "/v1/endpoints");
  } catch (e) {
    if (!(e instanceof ApiError) || (e.status !== 401 && e.status !== 403)) {
      say(`Cannot reach hookd: ${e.message}`, true);
    }
    return;
  }
  say("Logged in.");
  startStream();
  route();
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  newSecret = null;
  if (stream) stream.abort();
  stream = null;
  showLogin(message);
  if (!message) say("Logged out.");
}

// --- views -------------------------------------------------------------------------------

async function endpointsView() {
  const list = await api("GET", "/v1/endpoints");
  const details = await Promise.all(
    list.endpoints.map((e) => api("GET", `/v1/endpoints/${encodeURIComponent(e.id)}`)),
  );
  const rows = details.map((e) => {
    const s = e.stats;
    const hour = s.last_hour || { attempts: 0, succeeded: 0 };
    const ratio = hour.attempts ? `${Math.round((100 * hour.succeeded) / hour.attempts)} %` : "—";
    return h("tr", { "data-endpoint": e.id },
      h("td", {}, h("a", { href: `#/endpoints/${e.id}` }, e.url), h("div", { class: "muted mono" }, e.id)),
      h("td", {}, e.tenant),
      h("td", {}, badge(s.state), e.paused_reason ? h("div", { class: "muted" }, e.paused_reason) : null),
      h("td", { class: "num" }, s.pending),
      h("td", { class: "num hide-narrow" }, s.in_flight),
      h("td", { class: "num hide-narrow" }, age(s.oldest_pending_age_seconds)),
      h("td", { class: "num hide-narrow" }, ratio),
      h("td", { class: "error-text" }, s.last_error || ""),
    );
  });
  return [
    h("h1", {}, "Endpoints"),
    details.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "endpoints" },
          h("thead", {}, h("tr", {},
            h("th", {}, "Endpoint"), h("th", {}, "Tenant"), h("th", {}, "State"),
            h("th", {}, "Pending"), h("th", { class: "hide-narrow" }, "In flight"),
            h("th", { class: "hide-narrow" }, "Oldest pending"),
            h("th", { class: "hide-narrow" }, "Success (1 h)"), h("th", {}, "Last error"))),
          h("tbody", {}, rows)))
      : h("p", {}, "No endpoints yet."),
  ];
}

const STATUSES = ["", "pending", "succeeded", "failed", "expired", "cancelled"];

async function endpointView(id, opts) {
  const e = await api("GET", `/v1/endpoints/${encodeURIComponent(id)}`);
  const s = e.stats;
  const filter = opts.status || "";
  const q = new URLSearchParams({ limit: "20" });
  if (filter) q.set("status", filter);
  if (opts.cursor) q.set("cursor", opts.cursor);
  const page = await api("GET", `/v1/endpoints/${encodeURIComponent(id)}/deliveries?${q}`);
  const paused = e.status === "paused";
  const path = `/v1/endpoints/${encodeURIComponent(id)}`;
  const secretSlot = h("div", { id: "secret-slot" },
    newSecret && newSecret.endpoint === id ? secretPanel() : null);
  const since = h("input", { id: "recover-since", type: "datetime-local", required: true });
  const until = h("input", { id: "recover-until", type: "datetime-local" });
  const select = h("select", { id: "status-filter",
    onchange: () => { view.opts = { status: select.value }; refresh(); } },
    STATUSES.map((st) => h("option", { value: st, selected: st === filter }, st || "all")));
  const settings = [
    ["URL", e.url], ["Tenant", e.tenant], ["Event types", e.event_types.join(", ")],
    ["Status", e.status + (e.paused_reason ? ` (${e.paused_reason})` : "")],
    ["Signing", e.signing + (e.public_key ? ` — ${e.public_key}` : "")],
    ["Max concurrency", e.max_concurrency], ["Timeout", e.timeout],
    ["Retry schedule", e.retry_schedule.join(", ")],
    ["Headers", Object.keys(e.headers || {}).join(", ") || "—"],
    ["Filter", e.filter ? JSON.stringify(e.filter) : "—"],
    ["Proxy", e.proxy || "—"],
  ];
  const stats = [
    ["State", badge(s.state)], ["Pending", s.pending], ["In flight", s.in_flight],
    ["Succeeded", s.succeeded], ["Failed", s.failed],
    ["Consecutive failures", s.consecutive_failures],
    ["Oldest pending", age(s.oldest_pending_age_seconds)],
    ["Last success", when(s.last_success_at)], ["Last failure", when(s.last_failure_at)],
    ["Failing since", when(s.failing_since)], ["Next probe", when(s.next_probe_at)],
    ["Last error", s.last_error ? h("span", { class: "error-text" }, s.last_error) : "—"],
  ];
  const rows = page.deliveries.map((d) => {
    const last = d.attempts[d.attempts.length - 1];
    return h("tr", { "data-delivery": d.id },
      h("td", {}, h("a", { href: `#/deliveries/${d.id}` }, h("span", { class: "mono" }, d.id))),
      h("td", { class: "hide-narrow" }, d.event_type),
      h("td", {}, badge(d.status)),
      h("td", { class: "num" }, d.attempts.length),
      h("td", { class: "hide-narrow" }, when(d.created_at)),
      h("td", { class: "error-text" }, last && last.error ? last.error : ""),
    );
  });
  return [
    h("p", {}, h("a", { href: "#/" }, "← Endpoints")),
    h("h1", {}, e.url),
    h("div", { class: "actions" },
      paused
        ? h("button", { type: "button", id: "resume", onclick: () => act("Resume", async () => {
            await api("POST", `${path}/resume`); refresh(); return "Resumed."; }) }, "Resume")
        : h("button", { type: "button", id: "pause", onclick: () => act("Pause", async () => {
            await api("POST", `${path}/pause`); refresh(); return "Paused."; }) }, "Pause"),
      h("button", { type: "button", id: "send-test", onclick: () => act("Send test", async () => {
        const r = await api("POST", `${path}/test`, {});
        refresh();
        return r.success
          ? `Test sent: status ${r.status_code} in ${r.duration_ms} ms.`
          : `Test failed: ${r.error || `status ${r.status_code}`}.`;
      }) }, "Send test"),
      h("button", { type: "button", id: "rotate", onclick: () => act("Rotate secret", async () => {
        const r = await api("POST", `${path}/rotate-secret`);
        const what = r.secret ? "New signing secret" : "New public key";
        newSecret = { endpoint: id, what, value: r.secret || r.public_key };
        secretSlot.replaceChildren(secretPanel());
        document.getElementById("secret-done").focus();
        return `${what} created; the previous one keeps signing during the overlap.`;
      }) }, "Rotate secret"),
    ),
    secretSlot,
    h("form", { class: "actions", id: "recover-form", onsubmit: (ev) => {
      ev.preventDefault();
      act("Recover", async () => {
        const body = { since: new Date(since.value).toISOString() };
        if (until.value) body.until = new Date(until.value).toISOString();
        const r = await api("POST", `${path}/recover`, body);
        refresh();
        return `Recover: ${r.requeued} deliveries queued again.`;
      });
    } },
      h("label", { for: "recover-since" }, "Recover failed since", since),
      h("label", { for: "recover-until" }, "until (optional)", until),
      h("button", { type: "submit" }, "Recover")),
    h("h2", {}, "Stats"),
    h("dl", { class: "settings card", id: "stats" }, stats.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("h2", {}, "Deliveries"),
    h("div", { class: "actions" }, h("label", { for: "status-filter" }, "Status", select)),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "deliveries" },
          h("thead", {}, h("tr", {}, h("th", {}, "Delivery"), h("th", { class: "hide-narrow" }, "Type"),
            h("th", {}, "Status"), h("th", {}, "Attempts"),
            h("th", { class: "hide-narrow" }, "Created"), h("th", {}, "Last error"))),
          h("tbody", {}, rows)))
      : h("p", {}, "No deliveries with this status."),
    h("div", { class: "pager" },
      opts.cursor ? h("button", { type: "button", id: "newest",
        onclick: () => { view.opts = { status: filter }; refresh(); } }, "← Newest") : null,
      page.next_cursor ? h("button", { type: "button", id: "older",
        onclick: () => { view.opts = { status: filter, cursor: page.next_cursor }; refresh(); } }, "Older →") : null),
    h("h2", {}, "Settings"),
    h("dl", { class: "settings card" }, settings.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
  ];
}

function secretPanel() {
  const panel = h("div", { class: "secret", id: "new-secret", role: "alert" },
    h("strong", {}, `${newSecret.what} — shown this once, copy it now:`),
    h("code", {}, newSecret.value),
    h("button", { type: "button", id: "secret-done",
      onclick: () => { newSecret = null; panel.remove(); say("Secret hidden."); } },
      "I have copied it"));
  return panel;
}

async function deliveryView(id) {
  const d = await api("GET", `/v1/deliveries/${encodeURIComponent(id)}`);
  const rows = d.attempts.map((a) => h("tr", {},
    h("td", { class: "num" }, a.n),
    h("td", {}, when(a.at)),
    h("td", {}, badge(a.result === "success" ? "success" : "failed"), " ", a.result),
    h("td", { class: "num" }, a.status_code ?? "—"),
    h("td", { class: "num" }, `${a.duration_ms} ms`),
    h("td", { class: "error-text" }, a.error || ""),
    h("td", {}, a.response_body ? h("pre", {}, a.response_body) : ""),
  ));
  return [
    h("p", {}, h("a", { href: `#/endpoints/${d.endpoint_id}` }, "← Endpoint")),
    h("h1", {}, "Delivery ", h("span", { class: "mono" }, d.id)),
    h("dl", { class: "settings card" },
      h("dt", {}, "Status"), h("dd", { id: "delivery-status" }, badge(d.status)),
      h("dt", {}, "Event"), h("dd", {}, `${d.event_type} — ${d.event_id}`),
      h("dt", {}, "Tenant"), h("dd", {}, d.tenant),
      h("dt", {}, "Created"), h("dd", {}, when(d.created_at)),
      h("dt", {}, "Next attempt"), h("dd", {}, when(d.next_attempt_at)),
      h("dt", {}, "Expires"), h("dd", {}, when(d.expires_at))),
    h("div", { class: "actions" },
      h("button", { type: "button", id: "retry", class: "primary", onclick: () => act("Retry", async () => {
        const r = await api("POST", `/v1/deliveries/${encodeURIComponent(id)}/retry`);
        refresh();
        return `Retry queued (${r.status}); the result shows here when it is in.`;
      }) }, "Retry")),
    h("h2", {}, "Attempts"),
    rows.length
      ? h("div", { class: "table-wrap" }, h("table", { id: "attempts" },
          h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "At"), h("th", {}, "Result"),
            h("th", {}, "Status"), h("th", {}, "Duration"), h("th", {}, "Error"),
            h("th", {}, "Response"))),
          h("tbody", {}, rows)))
      : h("p", {}, "No attempt yet."),
  ];
}

function feedLine(kind, line) {
  if (kind === "attempt") {
    return h("li", {}, when(line.at), " ", badge(line.result === "success" ? "success" : "failed"), " ",
      h("a", { href: `#/deliveries/${line.delivery_id}` }, `attempt ${line.n}`), " to ",
      h("a", { href: `#/endpoints/${line.endpoint_id}` }, line.endpoint_id), " ",
      line.result, line.status_code ? ` ${line.status_code}` : "", ` ${line.duration_ms} ms`,
      line.error ? h("span", { class: "error-text" }, ` — ${line.error}`) : "");
  }
  if (kind === "endpoint") {
    return h("li", {}, "endpoint ", h("a", { href: `#/endpoints/${line.endpoint_id}` }, line.endpoint_id),
      " is now ", badge(line.state), line.reason ? ` (${line.reason})` : "");
  }
  return h("li", { class: "error-text" }, `lost ${line.lost} lines (the feed fell behind)`);
}

function feedView() {
  return [
    h("h1", {}, "Live feed"),
    h("p", { class: "muted" }, stream ? "Attempts and endpoint changes as they happen." : "Not connected."),
    h("ul", { class: "feed card", id: "feed" }, feed.map(([k, l]) => feedLine(k, l))),
  ];
}

// --- the live stream ---------------------------------------------------------------------

function onLine(kind, line) {
  feed.unshift([kind, line]);
  if (feed.length > FEED_MAX) feed.length = FEED_MAX;
  if (view.name === "feed") {
    const list = document.getElementById("feed");
    if (list) list.prepend(feedLine(kind, line));
    return;
  }
  const touches =
    view.name === "endpoints" ||
    (view.name === "endpoint" && line.endpoint_id === view.id) ||
    (view.name === "delivery" && line.delivery_id === view.id);
  if (touches) {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 250);
  }
}

async function startStream() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  while (stream === controller) {
    try {
      const r = await fetch("/v1/stream", {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        signal: controller.signal,
        credentials: "omit",
        cache: "no-store",
      });
      if (r.status === 401 || r.status === 403) { logout("The token was refused by the live feed."); return; }
      if (!r.ok || !r.body) throw new Error(`stream: ${r.status}`);
      document.body.dataset.stream = "open";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let kind = "message";
          let data = "";
          for (const l of block.split("\n")) {
            if (l.startsWith("event:")) kind = l.slice(6).trim();
            else if (l.startsWith("data:")) data += l.slice(5).trim();
          }
          if (data) onLine(kind, JSON.parse(data));
        }
      }
    } catch (e) {
      if (controller.signal.aborted) return;
    }
    document.body.dataset.stream = "retrying";
    // hookd restarted or the connection dropped: try again shortly.
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// --- routing -----------------------------------------------------------------------------

async function refresh() {
  if (!view.refresh) return;
  // Refreshes overlap (a filter changed twice, a live line, another view chosen) and their
  // answers from hookd come back in any order: only the newest one is shown, or an older
  // answer would replace a newer view.
  const mine = ++shown;
  // A live refresh rebuilds the view: the control that had the focus gets it back.
  const focused = document.activeElement && document.activeElement.id;
  try {
    const nodes = await view.refresh();
    if (mine !== shown) return;
    main.replaceChildren(...nodes);
    const again = focused && document.getElementById(focused);
    if (again && again !== document.activeElement) again.focus({ preventScroll: true });
  } catch (e) {
    if (mine !== shown) return;
    if (!(e instanceof ApiError && (e.status === 401 || e.status === 403))) {
      say(`Cannot load this view: ${e.message}`, true);
    }
  }
}

function route() {
  if (!token()) { showLogin(); return; }
  nav.hidden = false;
  const hash = location.hash.replace(/^#\/?/, "");
  const [kind, id] = hash.split("/");
  if (!(kind === "endpoints" && newSecret && newSecret.endpoint === id)) newSecret = null;
  if (kind === "endpoints" && id) {
    view = { name: "endpoint", id, opts: {} };
    view.refresh = () => endpointView(id, view.opts);
  } else if (kind === "deliveries" && id) {
    view = { name: "delivery", id };
    view.refresh = () => deliveryView(id);
  } else if (kind === "feed") {
    view = { name: "feed", id: null };
    view.refresh = async () => feedView();
  } else {
    view = { name: "endpoints", id: null };
    view.refresh = endpointsView;
  }
  refresh().then(() => {
    const heading = main.querySelector("h1");
    if (heading) { heading.tabIndex = -1; heading.focus({ preventScroll: true }); }
  });
}

document.getElementById("logout").addEventListener("click", () => logout());
window.addEventListener("hashchange", route);
if (token()) startStream();
route();
