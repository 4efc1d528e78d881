// The confd operator console (console.md): sign-in, the live conference list, one conference
// patched in place from websocket events, confirmed actions, connection state.
// Plain ES modules, nothing to build; it talks only to the public REST API and /v2/websocket.

import { Api, ApiError, Session } from "./api.js";
import { ConferenceView } from "./conference.js";
import { LiveConnection } from "./live.js";
import { ListView } from "./list.js";
import { REASON_NODE_LOST, REASON_RESYNC, STALE_AFTER_MS } from "./model.js";
import { Announcer, ConfirmDialog, el, setText } from "./ui.js";

// The connection states shown (console.md), plus the first connection of a session.
const STATE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  stale: "Stale",
};
const HEALTH_EVERY_MS = 15000;
const HEALTH_DEBOUNCE_MS = 300;
const ACCOUNT_ID = /^[0-9a-f]{32}$/;
const CONFERENCE_ROUTE = /^#\/conference\/([A-Za-z0-9_@:-]{1,128})$/;
const MSG_EXPIRED = "Your session has expired or was revoked. Sign in again.";

class App {
  constructor() {
    const $ = (id) => document.getElementById(id);
    this.signinSection = $("signin");
    this.signinForm = $("signin-form");
    this.keyInput = $("api-key");
    this.signinButton = $("signin-button");
    this.signinError = $("signin-error");
    this.workspace = $("workspace");
    this.viewContainer = $("view");
    this.accountBar = $("account");
    this.accountName = $("account-name");
    this.accountForm = $("account-form");
    this.accountInput = $("account-id");
    this.accountError = $("account-error");
    this.signOutButton = $("sign-out");
    this.connection = $("connection");
    this.nodes = $("nodes");
    this.announcer = new Announcer($("announcements"));
    this.dialog = new ConfirmDialog($("confirm"));
    this.session = null;
    this.api = null;
    this.live = null;
    this.view = null;
    this.state = null;
    this.everLive = false;
    this.subscribed = false;
    this.syncs = 0;
    this.staleTimer = null;
    this.healthTimer = null;
    this.healthDebounce = null;
    this.nodesShown = "";
  }

  start() {
    this.signinForm.addEventListener("submit", (ev) => this.signIn(ev));
    this.accountForm.addEventListener("submit", (ev) => this.pickAccount(ev));
    this.signOutButton.addEventListener("click", () => this.signOut(null));
    window.addEventListener("hashchange", () => this.route(true));
    const session = Session.load();
    if (session) this.signedIn(session);
    else this.showSignIn(null);
  }

  // --- sign-in -------------------------------------------------------------------------

  showSignIn(message) {
    this.workspace.hidden = true;
    this.accountBar.hidden = true;
    this.connection.hidden = true;
    this.nodes.replaceChildren();
    this.nodesShown = "";
    this.signinSection.hidden = false;
    this.keyInput.value = "";
    setText(this.signinError, message || "");
    document.title = "Sign in — confd console";
    this.keyInput.focus();
  }

  async signIn(ev) {
    ev.preventDefault();
    const key = this.keyInput.value.trim();
    if (!key) {
      setText(this.signinError, "Enter an API key.");
      this.keyInput.focus();
      return;
    }
    this.signinButton.setAttribute("aria-busy", "true");
    setText(this.signinError, "");
    try {
      const session = await Api.signIn(key);
      session.save();
      this.signedIn(session);
    } catch (err) {
      let text = "Sign-in failed: confd did not answer.";
      if (err instanceof ApiError && err.status === 401) text = "That API key was refused.";
      else if (err instanceof ApiError && err.status !== 0) text = `Sign-in failed: ${err.explain()}.`;
      setText(this.signinError, text);
      this.keyInput.select();
    } finally {
      this.signinButton.removeAttribute("aria-busy");
    }
  }

  signedIn(session) {
    this.session = session;
    this.api = new Api(session, () => this.expired());
    this.signinSection.hidden = true;
    setText(this.signinError, "");
    this.workspace.hidden = false;
    this.accountBar.hidden = false;
    this.connection.hidden = false;
    this.renderAccount();
    this.everLive = false;
    this.connect();
    this.route(false);
    this.checkHealth();
    this.healthTimer = setInterval(() => this.checkHealth(), HEALTH_EVERY_MS);
  }

  // A 401 anywhere, or the websocket closed for an expired or revoked token.
  expired() {
    if (this.session) this.signOut(MSG_EXPIRED);
  }

  signOut(message) {
    if (this.live) this.live.stop();
    this.live = null;
    if (this.view) this.view.destroy();
    this.view = null;
    this.viewContainer.replaceChildren();
    this.announcer.reset();
    if (this.dialog.open) this.dialog.finish(false);
    clearInterval(this.healthTimer);
    clearTimeout(this.staleTimer);
    this.staleTimer = null;
    this.state = null;
    this.session = null;
    this.api = null;
    Session.clear();
    this.showSignIn(message);
  }

  renderAccount() {
    const s = this.session;
    const viewing = s.viewAccountId === s.accountId ? "" : ` — viewing account ${s.viewAccountId}`;
    setText(this.accountName, `${s.accountName || s.accountId}${s.admin ? " (admin)" : ""}${viewing}`);
    this.accountForm.hidden = !s.admin;
    this.accountInput.value = s.viewAccountId;
    setText(this.accountError, "");
  }

  // An admin account may look at any account (there is no account listing in the API: the id
  // is typed).
  async pickAccount(ev) {
    ev.preventDefault();
    const id = this.accountInput.value.trim().toLowerCase();
    if (!ACCOUNT_ID.test(id)) {
      setText(this.accountError, "An account id is 32 hexadecimal characters.");
      return;
    }
    try {
      await this.api.request("GET", `accounts/${id}/conferences?page_size=1`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      const text =
        err instanceof ApiError && err.status === 404 ? `No account ${id}.` : err.explain();
      setText(this.accountError, text);
      return;
    }
    this.session.viewAccountId = id;
    this.session.save();
    this.renderAccount();
    if (this.live) this.live.stop();
    this.connect();
    if (location.hash !== "#/") location.hash = "#/";
    else this.route(true);
  }

  // --- connection ----------------------------------------------------------------------

  connect() {
    this.subscribed = false;
    this.setState(this.everLive ? "reconnecting" : "connecting");
    this.live = new LiveConnection(this.session, {
      onSubscribed: () => {
        this.subscribed = true;
        this.syncView();
      },
      onEvent: (data) => this.event(data),
      onLost: () => {
        this.subscribed = false;
        if (this.state !== "stale") this.setState(this.everLive ? "reconnecting" : "connecting");
      },
      onUnauthorized: () => this.expired(),
    });
    this.live.start();
  }

  event(data) {
    if (data.reason === REASON_NODE_LOST || data.reason === REASON_RESYNC) this.checkHealth();
    if (this.view) this.view.onEvent(data);
  }

  // Subscribed (again): the view takes a fresh snapshot; only then is the page live.
  async syncView() {
    const view = this.view;
    const run = ++this.syncs;
    if (!view || !this.subscribed) return;
    try {
      await view.sync();
      if (run === this.syncs && view === this.view && this.subscribed) this.setState("live");
    } catch (err) {
      if (view !== this.view || !this.session) return;
      if (err instanceof ApiError && err.status === 401) return; // expired() took over
      // confd answered the websocket but not the snapshot: start again, with backoff.
      if (this.live) this.live.drop();
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    setText(this.connection, STATE_TEXT[state]);
    this.connection.dataset.state = state;
    if (state === "live") {
      this.everLive = true;
      clearTimeout(this.staleTimer);
      this.staleTimer = null;
    } else if (state !== "stale" && this.staleTimer === null) {
      this.staleTimer = setTimeout(() => {
        this.staleTimer = null;
        if (this.state !== "live" && this.session) this.setState("stale");
      }, STALE_AFTER_MS);
    }
    if (this.view) this.view.liveChanged();
  }

  isLive() {
    return this.state === "live";
  }

  // --- nodes ---------------------------------------------------------------------------

  checkHealth() {
    clearTimeout(this.healthDebounce);
    this.healthDebounce = setTimeout(async () => {
      const nodes = await Api.health();
      if (!this.session || nodes === null) return;
      const down = nodes.filter((n) => !n.connected);
      const key = down.map((n) => `${n.name}:${n.error}`).join("|");
      if (key === this.nodesShown) return;
      this.nodesShown = key;
      // A node going down is announced (role=alert); one coming back just disappears.
      this.nodes.replaceChildren(
        ...down.map((n) =>
          el("p", {
            class: "node-down",
            role: "alert",
            text:
              `FreeSWITCH node ${n.name} is down` +
              (n.error ? `: ${n.error}` : "") +
              ". Its conferences are not shown until it is back.",
          }),
        ),
      );
    }, HEALTH_DEBOUNCE_MS);
  }

  // --- views ---------------------------------------------------------------------------

  route(moveFocus) {
    if (!this.session) return;
    if (this.dialog.open) this.dialog.finish(false);
    const m = CONFERENCE_ROUTE.exec(location.hash);
    if (this.view) this.view.destroy();
    this.announcer.reset();
    this.view = m ? new ConferenceView(this, m[1]) : new ListView(this);
    this.view.mount(this.viewContainer);
    if (moveFocus) {
      const title = document.getElementById("view-title");
      if (title) title.focus();
    }
    if (this.subscribed) this.syncView();
  }
}

new App().start();
