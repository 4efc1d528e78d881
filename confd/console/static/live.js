// /v2/websocket (events.md): one connection, one subscription to every event of the account,
// reconnected with jittered backoff. It reports three things: "subscribed" (the caller then
// takes a fresh snapshot over REST), each event, and "lost".

import { backoffDelay } from "./model.js";

const WS_URL = (() => {
  const url = new URL("../v2/websocket", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
})();
export const BINDING_ALL = "conference.event.*.*";
// A ping of our own: a connection cut without a FIN (a NAT that forgot it) is noticed.
const PING_EVERY_MS = 20000;
const PING_DEADLINE_MS = 10000;
const CLOSE_POLICY = 1008; // confd: token expired or revoked, or no subscription in time
const TOKEN_WORD = "token";

export class LiveConnection {
  // handlers: onSubscribed(), onEvent(data), onLost(), onUnauthorized(reason)
  constructor(session, handlers) {
    this.session = session;
    this.h = handlers;
    this.ws = null;
    this.attempt = 0;
    this.stopped = true;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.requestSeq = 0;
    this.subscribed = false;
    // The network is back: no need to wait for the backoff.
    this.onOnline = () => {
      if (!this.ws && !this.stopped) {
        clearTimeout(this.retryTimer);
        this.connect();
      }
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.clearPing();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      try {
        ws.close(1000, "console closed");
      } catch {
        /* already closed */
      }
    }
  }

  connect() {
    if (this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(WS_URL);
    } catch {
      this.lost();
      return;
    }
    this.ws = ws;
    this.subscribed = false;
    ws.onopen = () => this.send(this.subscribeMessage());
    ws.onmessage = (msg) => this.message(msg.data);
    ws.onclose = (ev) => this.closed(ev);
    ws.onerror = () => {
      /* onclose follows */
    };
  }

  subscribeMessage() {
    return {
      action: "subscribe",
      auth_token: this.session.token,
      request_id: `sub-${++this.requestSeq}`,
      data: { account_id: this.session.viewAccountId, binding: BINDING_ALL },
    };
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  message(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.action === "event") {
      if (msg.data) this.h.onEvent(msg.data);
      return;
    }
    if (msg.action === "reply") {
      if (typeof msg.request_id === "string" && msg.request_id.startsWith("ping-")) {
        clearTimeout(this.pongTimer);
        return;
      }
      if (msg.status === "success" && !this.subscribed) {
        this.subscribed = true;
        this.attempt = 0;
        this.schedulePing();
        this.h.onSubscribed();
      } else if (msg.status !== "success") {
        const errors = (msg.data && msg.data.errors) || [];
        if (errors.some((e) => /credentials|forbidden/i.test(e))) {
          this.h.onUnauthorized(errors.join("; "));
        } else {
          this.drop();
        }
      }
    }
    // "error" notices precede a close from confd; the close says what to do.
  }

  schedulePing() {
    this.clearPing();
    this.pingTimer = setTimeout(() => {
      this.send({ action: "ping", request_id: `ping-${++this.requestSeq}` });
      this.pongTimer = setTimeout(() => this.drop(), PING_DEADLINE_MS);
      this.schedulePing();
    }, PING_EVERY_MS);
  }

  clearPing() {
    clearTimeout(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  // Give up on this socket (no answer, refused subscription) and reconnect.
  drop() {
    const ws = this.ws;
    if (!ws) return;
    ws.onclose = null;
    try {
      ws.close();
    } catch {
      /* closing anyway */
    }
    this.closed({ code: 1006, reason: "" });
  }

  closed(ev) {
    this.clearPing();
    this.ws = null;
    this.subscribed = false;
    if (this.stopped) return;
    if (ev.code === CLOSE_POLICY && String(ev.reason).includes(TOKEN_WORD)) {
      this.h.onUnauthorized(ev.reason);
      return;
    }
    this.lost();
  }

  lost() {
    this.h.onLost();
    const delay = backoffDelay(this.attempt++);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
