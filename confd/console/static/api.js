// The REST API (api.md) as the console uses it, and the session kept in sessionStorage only.

const SESSION_KEY = "confd.console.session";
const TOKEN_HEADER = "X-Auth-Token";
// Where the API is, relative to the page (/console/ -> /v2/): confd serves both, and a
// reverse proxy that mounts confd under a prefix keeps working.
export const API_BASE = new URL("../v2/", document.baseURI);

export class Session {
  constructor(data) {
    this.token = data.token;
    this.accountId = data.accountId; // the token's own account
    this.accountName = data.accountName;
    this.admin = data.admin === true;
    this.viewAccountId = data.viewAccountId || data.accountId; // an admin may pick another
  }

  // The token lives in sessionStorage only: never localStorage, never a cookie (console.md).
  static load() {
    try {
      const raw = window.sessionStorage.getItem(SESSION_KEY);
      return raw ? new Session(JSON.parse(raw)) : null;
    } catch {
      return null;
    }
  }

  save() {
    window.sessionStorage.setItem(
      SESSION_KEY,
      JSON.stringify({
        token: this.token,
        accountId: this.accountId,
        accountName: this.accountName,
        admin: this.admin,
        viewAccountId: this.viewAccountId,
      }),
    );
  }

  static clear() {
    window.sessionStorage.removeItem(SESSION_KEY);
  }
}

export class ApiError extends Error {
  constructor(status, message, data) {
    super(`${status} ${message}`);
    this.status = status; // 0: no answer at all
    this.code = message; // the envelope's short code (api.md)
    this.data = data || {};
  }

  // What an operator is told, in words (api.md's error table).
  explain() {
    const d = this.data;
    switch (this.code) {
      case "freeswitch_error":
        return `FreeSWITCH refused it (${d.reply || "-ERR"})`;
      case "focus_unavailable":
        return `FreeSWITCH is not reachable${d.focus ? ` (node ${d.focus})` : ""}`;
      case "conference_not_running":
        return "the conference is not running";
      case "bad_identifier":
        return "not found (the participant may have left)";
      case "invalid_credentials":
        return "the session has expired";
      case "forbidden":
        return "this account may not do that";
      case "network":
        return "confd did not answer";
      default:
        return `confd answered ${this.status} ${this.code}`;
    }
  }
}

export class Api {
  // onUnauthorized(): a 401 anywhere sends the console back to sign-in (console.md).
  constructor(session, onUnauthorized) {
    this.session = session;
    this.onUnauthorized = onUnauthorized;
  }

  static async signIn(apiKey) {
    const body = await Api.raw("PUT", "api_auth", null, { data: { api_key: apiKey } });
    return new Session({
      token: body.auth_token,
      accountId: body.data.account_id,
      accountName: body.data.account_name,
      admin: body.data.admin,
    });
  }

  static async health() {
    // 503 is an answer too (no node connected): its body lists the nodes all the same.
    try {
      const resp = await fetch(new URL("health", API_BASE), { cache: "no-store" });
      const body = await resp.json();
      return (body && body.data && body.data.nodes) || [];
    } catch {
      return null;
    }
  }

  static async raw(method, path, token, payload) {
    const headers = { Accept: "application/json" };
    if (token) headers[TOKEN_HEADER] = token;
    if (payload !== undefined && payload !== null) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(new URL(path, API_BASE), {
        method,
        headers,
        cache: "no-store",
        body: payload !== undefined && payload !== null ? JSON.stringify(payload) : undefined,
      });
    } catch {
      throw new ApiError(0, "network", {});
    }
    let body = null;
    try {
      body = await resp.json();
    } catch {
      body = null;
    }
    if (!resp.ok) {
      throw new ApiError(resp.status, (body && body.message) || "error", body && body.data);
    }
    return body;
  }

  async request(method, path, payload) {
    try {
      return await Api.raw(method, path, this.session.token, payload);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) this.onUnauthorized();
      throw err;
    }
  }

  accountPath(rest = "") {
    return `accounts/${encodeURIComponent(this.session.viewAccountId)}${rest}`;
  }

  // Every conference of the account (all pages).
  async conferences() {
    const rows = [];
    let start = null;
    let serverTime = null;
    for (let page = 0; page < 1000; page++) {
      const q = `?page_size=1000${start ? `&start_key=${encodeURIComponent(start)}` : ""}`;
      const body = await this.request("GET", this.accountPath(`/conferences${q}`));
      serverTime = serverTime || body.timestamp;
      rows.push(...body.data);
      if (!body.next_start_key) break;
      start = body.next_start_key;
    }
    return { rows, timestamp: serverTime };
  }

  async conference(id) {
    const body = await this.request("GET", this.accountPath(`/conferences/${id}`));
    return { conf: body.data, timestamp: body.timestamp };
  }

  async participant(confId, pid) {
    const body = await this.request(
      "GET",
      this.accountPath(`/conferences/${confId}/participants/${pid}`),
    );
    return body.data;
  }

  participantAction(confId, pid, action) {
    return this.request("PUT", this.accountPath(`/conferences/${confId}/participants/${pid}`), {
      data: { action },
    });
  }

  everyoneAction(confId, action) {
    return this.request("PUT", this.accountPath(`/conferences/${confId}/participants`), {
      data: { action },
    });
  }

  conferenceAction(confId, action) {
    return this.request("PUT", this.accountPath(`/conferences/${confId}`), { data: { action } });
  }
}

// The server's clock minus the browser's, in ms, from an envelope's timestamp (ISO 8601 UTC):
// join times and durations are the server's, timers run on the browser's clock.
export function clockSkew(timestamp) {
  const server = Date.parse(timestamp);
  return Number.isFinite(server) ? server - Date.now() : 0;
}
