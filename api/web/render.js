// Building the page from API data. Everything goes through h(), which sets text, never HTML,
// so nothing a recorded session contains can inject markup or script.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false || child === "") continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

// "2024-05-01T12:03:00.000250Z" → "2024-05-01 12:03:00.000 UTC"
export function utc(iso) {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 23)} UTC` : "—";
}

export function badge(text, tone = "") {
  return h("span", { class: `badge ${tone}` }, text);
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

// Terminal bytes made readable in one line: escape sequences dropped, line ends as ↵ and
// other control characters in caret notation (^C, ^D), which is how an auditor reads keys.
// Cursor moves become a space, so text drawn at two places on the screen does not run together.
const CURSOR_MOVES = /\x1b\[[0-9;]*[HfdGC]/g;
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_][^\x1b]*\x1b\\|\x1b[ -/]*[0-~]/g;

export function terminalText(data) {
  return data
    .replace(CURSOR_MOVES, " ")
    .replace(ESCAPES, "")
    .replace(/\r\n|\r|\n/g, "↵ ")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => (c === "\x7f" ? "^?" : `^${String.fromCharCode(c.charCodeAt(0) + 64)}`));
}

function terminal(data) {
  const text = terminalText(data).trim();
  return text ? h("span", { class: "term" }, clip(text)) : h("span", { class: "muted" }, "(terminal control only)");
}

function clip(text, max = 400) {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function pairs(entries) {
  return entries.filter(([, value]) => value !== null && value !== undefined && value !== "")
    .map(([name, value]) => h("span", { class: "kv" }, h("span", { class: "k" }, name), " ",
      value instanceof Node ? value : String(value)));
}

function code(text) {
  return h("code", { class: "block" }, clip(text, 2000));
}

function table(columns, rows, limit = 5) {
  return h("table", { class: "mini" },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.slice(0, limit).map((row) => h("tr", {}, row.map((v) => h("td", {}, v ?? "NULL"))))));
}

const ms = (us) => (us === null || us === undefined ? null : `${(us / 1000).toFixed(1)} ms`);

// One function per body type of the event schema: a headline and optional detail.
const BODIES = {
  SessionStart: (b) => ["Session started", pairs([["purpose", b.purpose], ["client", b.client],
    ["from", b.source_address], ["terminal", b.terminal && `${b.terminal.cols}×${b.terminal.rows}`],
    ["TERM", b.term]])],
  TerminalOutput: (b) => ["Output", terminal(b.data)],
  TerminalInput: (b) => ["Input", terminal(b.data)],
  TerminalResize: (b) => [`Terminal resized to ${b.cols}×${b.rows}`],
  Query: (b) => ["Query", pairs([["database", b.database]]), code(b.statement),
    b.parameters?.length ? pairs([["parameters", b.parameters.map((p) => p ?? "NULL").join(", ")]]) : null],
  QueryResult: (b) => [b.error ? "Query failed" : `Result: ${plural(b.row_count, "row")}`,
    pairs([["error", b.error], ["duration", ms(b.duration_us)], ["truncated", b.truncated ? "yes" : null]]),
    b.columns?.length ? table(b.columns, b.rows) : null,
    b.rows?.length > 5 ? h("span", { class: "muted" }, `… ${b.rows.length - 5} more rows recorded`) : null],
  KubernetesApiCall: (b) => [`Kubernetes ${b.verb} ${[b.resource, b.subresource].filter(Boolean).join("/")}` +
    `${b.name ? ` ${b.name}` : ""} → ${b.status_code}`, pairs([["namespace", b.namespace]]),
    b.request_body ? code(b.request_body) : null],
  HttpExchange: (b) => [`HTTP ${b.method} ${b.url} → ${b.status_code}`, pairs([["duration", ms(b.duration_us)]]),
    b.request_body ? code(b.request_body) : null],
  Command: (b) => ["Command", code(b.argv.join(" ")), pairs([["cwd", b.cwd], ["exit code", b.exit_code]])],
  ApprovalRequested: (b) => [`Approval requested (${b.request_id})`,
    pairs([["reason", b.reason], ["approvers", b.approvers?.join(", ")]])],
  ApprovalDecided: (b) => [`Approval ${b.approved ? "granted" : "refused"} by ${b.decided_by} (${b.request_id})`,
    pairs([["comment", b.comment]])],
  PolicyDecision: (b) => [`Policy ${b.policy}: ${b.decision}`, pairs([["rule", b.rule], ["reason", b.reason]])],
  SessionEnd: (b) => ["Session ended", pairs([["reason", b.reason], ["exit code", b.exit_code]])],
  IdleTimeout: (b) => [`Idle for ${b.idle_seconds} s after seq ${b.last_seq}`],
};

function describe(event) {
  if (event.kind === "GAP" && event.gap) {
    return [`Gap: gateway events ${event.gap.first_seq}–${event.gap.last_seq} never arrived`];
  }
  if (event.kind === "SEAL" && event.seal) {
    return [`Sealed (${event.seal.reason}) after ${plural(event.seal.record_count, "record")}`,
      pairs([["head", h("code", { class: "hash" }, event.seal.head_hash)]])];
  }
  const render = BODIES[event.body_type];
  if (render) return render(event.body);
  return [event.body_type ?? event.kind, code(JSON.stringify(event.body, null, 1) ?? "")];
}

const KIND_TONE = { EVENT: "", GAP: "warn", LATE: "warn", FORK: "bad", SEAL: "good" };

export function eventItem(event, startUs) {
  const [headline, ...detail] = describe(event);
  const offset = event.event_time_us !== null && startUs !== null
    ? `+${((event.event_time_us - startUs) / 1e6).toFixed(3)} s` : "";
  const findings = event.findings.map((f) => badge(`masked ${f.entity_type} in ${f.field}`, "warn"));
  const risk = event.risk && event.risk.score > 0
    ? h("div", { class: "risk" }, badge(`risk ${event.risk.score}`, event.risk.score >= 70 ? "bad" : "warn"), " ",
      event.risk.reasons.map((r) => r.message).join("; "))
    : null;
  const classes = `event kind-${event.kind.toLowerCase()}${event.body_type ? ` body-${event.body_type}` : ""}`;
  return h("li", { class: classes, "data-index": event.index },
    h("div", { class: "when" },
      h("span", { class: "index" }, `#${event.index}`),
      event.event_time ? h("time", { datetime: event.event_time, title: utc(event.event_time) }, offset) : null),
    h("div", { class: "what" },
      h("div", { class: "headline" }, event.kind !== "EVENT" ? badge(event.kind, KIND_TONE[event.kind]) : null,
        " ", h("strong", {}, headline), " ", findings),
      detail.flat().filter(Boolean).length ? h("div", { class: "detail" }, detail) : null,
      risk));
}
