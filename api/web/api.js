// The HTTP API as the page sees it: every call carries the auditor's bearer token, and every
// failure becomes an ApiError whose message says what happened and what to do.

const TOKEN_KEY = "blackbox.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const WHAT_WENT_WRONG = {
  400: "Bad search",
  401: "Token rejected",
  403: "Access denied",
  404: "Not found",
  422: "Invalid input",
  503: "Service unavailable",
};

async function request(path, params = {}, accept = "application/json") {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.append(name, value);
  }
  let response;
  try {
    response = await fetch(url, {
      headers: { Authorization: `Bearer ${token.get() ?? ""}`, Accept: accept },
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "Cannot reach the Blackbox server. Check the connection and retry.");
  }
  if (response.ok) return response;
  let body = {};
  try {
    body = await response.json();
  } catch {
    // Not one of our JSON errors (a proxy's page, say): the status line is all there is.
  }
  const what = WHAT_WENT_WRONG[response.status] ?? `Error ${response.status}`;
  let message = `${what}: ${body.message ?? response.statusText}`;
  if (response.status === 401) message += ". Paste a valid token to continue.";
  if (response.status === 503 && body.error !== "evidence_corrupt" && !/retry/i.test(message)) {
    message += ". Retry in a few seconds.";
  }
  throw new ApiError(response.status, body.error ?? "http_error", message);
}

const session = (id) => `/api/v1/sessions/${encodeURIComponent(id)}`;

export const api = {
  sessions: async (params) => (await request("/api/v1/sessions", params)).json(),
  session: async (id) => (await request(session(id))).json(),
  events: async (id, afterIndex) => (await request(`${session(id)}/events`, { after_index: afterIndex })).json(),
  verify: async (id) => (await request(`${session(id)}/verify`)).json(),
  asciicast: async (id) => (await request(`${session(id)}/asciicast`, {}, "application/x-asciicast")).text(),
};

export async function uiConfig() {
  const response = await fetch("/ui/config.json");
  if (!response.ok) throw new ApiError(response.status, "config", "The UI configuration could not be loaded.");
  return response.json();
}

// The token's claims, for showing who is signed in; the server is what checks the signature.
export function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return {};
  }
}
