// The page: sign-in, session search and the session view, routed on the URL path
// ("/" and "/sessions/{id}"; the server answers both with this page).

import { api, ApiError, claims, token, uiConfig } from "./api.js";
import { mountPlayer } from "./player.js";
import { badge, eventItem, h, plural, utc } from "./render.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["login-view", "list-view", "session-view"];
const FILTERS = ["principal", "identity_kind", "target", "target_kind", "since", "until"];
const PAGE_SIZE = 25;

let config = { player: false, identity_kinds: [], target_kinds: [] };
let generation = 0; // bumped by every navigation, so answers for a page left behind are dropped
let player = null;
let castUrl = null;

// -- frame: views, messages, sign-in ---------------------------------------------------------

function show(view, title) {
  for (const id of VIEWS) $(id).hidden = id !== view;
  document.title = title ? `${title} — Blackbox` : "Blackbox";
  // Screen readers follow the focus: land on the new view's heading, as a page load would.
  $(view).querySelector("h1").focus({ preventScroll: true });
}

function alertUser(message) {
  $("alert").textContent = message ?? "";
  $("alert").hidden = !message;
}

function busy(message) {
  $("loading").textContent = message ?? "";
}

// A token that is rejected (401) or lacks the role (403) is of no further use: ask for another.
const tokenUseless = (error) => error instanceof ApiError && (error.status === 401 || error.status === 403);

function fail(error) {
  if (tokenUseless(error)) {
    token.clear();
    showLogin(error.message);
  } else {
    alertUser(error.message ?? String(error));
  }
}

// An error shown where the failed part would have been, so the rest of the page stays usable.
function inlineError(el, error) {
  if (tokenUseless(error)) return fail(error);
  el.replaceChildren(h("p", { class: "inline-error", role: "alert" }, error.message ?? String(error)));
}

function showLogin(message) {
  updateWhoami();
  show("login-view", "Sign in");
  alertUser(message);
  $("token-input").focus();
}

function updateWhoami() {
  const jwt = token.get();
  $("sign-out").hidden = !jwt;
  $("whoami").hidden = !jwt;
  if (jwt) {
    const c = claims(jwt);
    const role = c.role ?? (Array.isArray(c.roles) ? c.roles.join(", ") : "no role");
    $("whoami").textContent = `${c.sub ?? "unknown"} (${role})`;
  }
}

function navigate(url) {
  window.history.pushState(null, "", url);
  route();
}

async function route() {
  const current = ++generation;
  alertUser(null);
  player?.dispose();
  player = null;
  if (castUrl) URL.revokeObjectURL(castUrl);
  castUrl = null;
  updateWhoami();
  if (!token.get()) return showLogin();
  const match = window.location.pathname.match(/^\/sessions\/(.+)$/);
  try {
    if (match) await showSession(decodeURIComponent(match[1]), current);
    else await showList(current);
  } catch (error) {
    if (current === generation) fail(error);
  } finally {
    if (current === generation) busy(null);
  }
}

// -- search ------------------------------------------------------------------------------------

// The time inputs are UTC wall-clock ("2024-05-01T12:00"); the API reads an offset-less time as UTC.
const toApiTime = (value) => (value ? `${value.length === 16 ? `${value}:00` : value}Z` : "");
const toInputTime = (value) => value.replace(/Z$/, "");

// The search as the URL states it, so that a search can be bookmarked and sent to a colleague;
// `limit` (the page size) is not in the form, only in the URL.
function filtersFromUrl() {
  const params = new URLSearchParams(window.location.search);
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
  return { ...filters, limit: Number(params.get("limit")) || PAGE_SIZE };
}

function searchUrl(form) {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    let value = form.elements[name].value.trim();
    if (name === "since" || name === "until") value = toApiTime(value);
    if (value) params.set(name, value);
  }
  const query = params.toString();
  return query ? `/?${query}` : "/";
}

let pageCursors = []; // the cursor of each page before the current one ("" for the first)
let currentCursor = "";
let nextCursor = null;

async function showList(current) {
  show("list-view", "Sessions");
  const filters = filtersFromUrl();
  const form = $("search-form");
  for (const name of FILTERS) {
    form.elements[name].value = name === "since" || name === "until" ? toInputTime(filters[name]) : filters[name];
  }
  await loadPage(current, filters, "", []);
}

// Shows the page at `cursor`; `before` becomes the cursor stack only once the page is shown.
async function loadPage(current, filters, cursor, before) {
  busy("Loading sessions…");
  const page = await api.sessions({ ...filters, cursor });
  if (current !== generation) return;
  busy(null);
  pageCursors = before;
  currentCursor = cursor;
  nextCursor = page.next_cursor;
  $("results").replaceChildren(page.items.length ? sessionTable(page.items) : h("p", { class: "empty" },
    "No sessions match this search."));
  $("newer").disabled = pageCursors.length === 0;
  $("older").disabled = !nextCursor;
  $("page-info").textContent = page.items.length
    ? `Page ${pageCursors.length + 1} · ${plural(page.items.length, "session")}` : "";
}

async function turnPage(older) {
  const current = generation;
  alertUser(null);
  // One page turn at a time: the cursor stack must change in step with what is shown.
  $("newer").disabled = true;
  $("older").disabled = true;
  const [cursor, before] = older
    ? [nextCursor, [...pageCursors, currentCursor]]
    : [pageCursors.at(-1) ?? "", pageCursors.slice(0, -1)];
  try {
    await loadPage(current, filtersFromUrl(), cursor, before);
  } catch (error) {
    if (current !== generation) return;
    busy(null);
    fail(error);
    $("newer").disabled = pageCursors.length === 0;
    $("older").disabled = !nextCursor;
  }
}

const sessionHref = (id) => `/sessions/${encodeURIComponent(id)}`;

function gapsAndForks(s) {
  if (!s.gap_count && !s.fork_count) return "none";
  return [s.gap_count ? badge(plural(s.gap_count, "gap"), "warn") : null, " ",
    s.fork_count ? badge(plural(s.fork_count, "fork"), "bad") : null];
}

function sealed(s) {
  return s.sealed ? badge("sealed", "good") : badge("open", "warn");
}

function sessionTable(items) {
  const headings = ["Identity", "Target", "Started (UTC)", "Records", "Sealed", "Gaps / forks", "Max risk"];
  return h("table", { class: "sessions" },
    h("caption", { class: "visually-hidden" }, "Sessions, newest first"),
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, items.map((s) => h("tr", { "data-session-id": s.session_id },
      h("th", { scope: "row" },
        h("a", { href: sessionHref(s.session_id), "data-nav": true, title: `Session ${s.session_id}` },
          s.identity.principal, h("span", { class: "visually-hidden" }, ` session ${s.session_id}`)),
        " ", badge(s.identity.kind)),
      h("td", {}, s.target.name, " ", badge(s.target.kind)),
      h("td", {}, h("time", { datetime: s.started_at }, utc(s.started_at).replace(" UTC", ""))),
      h("td", { class: "num" }, s.record_count),
      h("td", {}, sealed(s)),
      h("td", {}, gapsAndForks(s)),
      h("td", { class: "num" }, s.max_risk)))));
}

// -- one session ---------------------------------------------------------------------------

async function showSession(id, current) {
  show("session-view", `Session ${id}`);
  $("session-title").textContent = `Session ${id}`;
  $("summary").replaceChildren();
  $("verdict").replaceChildren("Verifying…");
  $("timeline").replaceChildren();
  $("replay").hidden = true;
  $("cast-download").hidden = true;
  $("more-events").hidden = true;
  busy("Loading the session…");
  const summary = await api.session(id);
  if (current !== generation) return;
  renderSummary(summary);
  // Independent parts: evidence that cannot be read must not hide the verdict, nor the reverse.
  await Promise.all([
    api.verify(id).then(
      (verdict) => current === generation && renderVerdict(verdict),
      (error) => current === generation && inlineError($("verdict"), error)),
    loadEvents(id, current, null, null),
  ]);
}

function renderSummary(s) {
  $("session-title").textContent = `${s.identity.principal} → ${s.target.name}`;
  document.title = `${s.identity.principal} → ${s.target.name} — Blackbox`;
  const rows = [
    ["Session", h("code", {}, s.session_id)],
    ["Identity", [s.identity.principal, " ", badge(s.identity.kind),
      s.identity.issuer ? ` via ${s.identity.issuer}` : "",
      s.identity.groups.length ? ` · groups: ${s.identity.groups.join(", ")}` : ""]],
    ["Target", [s.target.name, " ", badge(s.target.kind), s.target.host ? ` · ${s.target.host}` : "",
      s.target.database ? ` · ${s.target.database}` : ""]],
    ["Gateway", `${s.gateway.product} (${s.gateway.id})`],
    ["Started", utc(s.started_at)],
    ["Last event", utc(s.last_event_at)],
    ["Records", `${s.record_count} (last gateway seq ${s.last_seq})`],
    ["Sealed", [sealed(s), s.sealed ? ` ${s.seal_reason}` : ""]],
    ["Gaps / forks", gapsAndForks(s)],
    ["Max risk", String(s.max_risk)],
    ["Head hash", h("code", { class: "hash" }, s.head_hash)],
  ];
  $("summary").replaceChildren(...rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function renderVerdict(v) {
  if (v.valid) {
    $("verdict").replaceChildren(
      h("p", { class: "verdict good" }, "✓ Intact"),
      h("p", {}, `${plural(v.record_count, "record")} chained from genesis, ${v.sealed ? "sealed" : "not sealed yet"}; ` +
        `${plural(v.gap_count, "gap")}, ${plural(v.fork_count, "fork")}.`),
      h("p", { class: "muted" }, `Checks passed: ${v.checks.join(", ")}.`));
    return;
  }
  const f = v.failure;
  $("verdict").replaceChildren(
    h("p", { class: "verdict bad" }, "✗ Verification failed"),
    h("p", {}, `Check ${f.check}${f.index !== null ? ` at record #${f.index}` : ""}: ${f.detail}`),
    v.checks.length ? h("p", { class: "muted" }, `Passed before it: ${v.checks.join(", ")}.`) : null);
}

const isTerminal = (e) => e.body_type?.startsWith("Terminal") || Boolean(e.body?.terminal);

async function loadEvents(id, current, startUs, afterIndex) {
  const more = $("more-events");
  more.hidden = true;
  let page;
  try {
    page = await api.events(id, afterIndex);
  } catch (error) {
    if (current === generation) inlineError($("timeline"), error);
    return;
  }
  if (current !== generation) return;
  const start = startUs ?? page.events.find((e) => e.event_time_us !== null)?.event_time_us ?? null;
  $("timeline").append(...page.events.map((event) => eventItem(event, start)));
  if (afterIndex === null && page.events.length === 0) {
    $("timeline").replaceChildren(h("li", { class: "empty" }, "No records."));
  }
  if (page.next_after_index !== null) {
    more.hidden = false;
    more.onclick = () => loadEvents(id, current, start, page.next_after_index);
  }
  if (afterIndex === null && page.events.some(isTerminal)) await showReplay(id, current);
}

async function showReplay(id, current) {
  $("replay").hidden = false;
  const el = $("player");
  el.replaceChildren(h("p", { class: "muted" }, "Loading the recording…"));
  let cast;
  try {
    cast = await api.asciicast(id);
  } catch (error) {
    if (current === generation) inlineError(el, error);
    return;
  }
  if (current !== generation) return;
  castUrl = URL.createObjectURL(new Blob([cast], { type: "application/x-asciicast" }));
  const link = $("cast-download");
  link.href = castUrl;
  link.download = `${id.replace(/[^A-Za-z0-9._-]/g, "_")}.cast`;
  link.hidden = false;
  const mounted = await mountPlayer(el, cast, config);
  if (current === generation) player = mounted;
  else mounted?.dispose();
}

// -- wiring --------------------------------------------------------------------------------

function fillKinds(select, kinds) {
  select.append(...kinds.map((kind) => h("option", { value: kind }, kind)));
}

async function start() {
  try {
    config = await uiConfig();
  } catch (error) {
    alertUser(error.message);
  }
  const form = $("search-form");
  fillKinds(form.elements.identity_kind, config.identity_kinds);
  fillKinds(form.elements.target_kind, config.target_kinds);

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim().replace(/^Bearer\s+/i, "");
    if (!value) return;
    token.set(value);
    $("token-input").value = "";
    route();
  });
  $("sign-out").addEventListener("click", () => {
    token.clear();
    navigate("/");
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(searchUrl(form));
  });
  form.addEventListener("reset", () => setTimeout(() => navigate("/")));
  $("newer").addEventListener("click", () => turnPage(false));
  $("older").addEventListener("click", () => turnPage(true));
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", route);
  await route();
}

start();
