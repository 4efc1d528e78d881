// The live conferences of the account: one REST listing, then websocket events keep it right.
// Conference-level events carry the counts; a join or leave asks confd for that one
// conference again (coalesced), since only it knows who is a moderator. Rows are placed once,
// by name, and patched in place.

import { ApiError, clockSkew } from "./api.js";
import { EV, REASON_RESYNC, conferenceName, conferenceNumbers, formatElapsed } from "./model.js";
import { el, setText } from "./ui.js";

const COLUMNS = ["Conference", "Numbers", "Members", "Admins", "Duration", "Locked"];
const REFRESH_DELAY_MS = 300; // joins and leaves within this ask once
const TICK_MS = 1000;

function isLive(conf) {
  const ro = conf._read_only || {};
  const members = conf.members ?? ro.members ?? 0;
  const admins = conf.admins ?? ro.admins ?? 0;
  return members + admins > 0 || Boolean(ro.focus);
}

function counts(conf) {
  const ro = conf._read_only || {};
  return {
    members: conf.members ?? ro.members ?? 0,
    admins: conf.admins ?? ro.admins ?? 0,
    duration: conf.duration ?? ro.duration ?? 0,
    is_locked: conf.is_locked ?? ro.is_locked ?? false,
  };
}

function byName(a, b) {
  return a.name.localeCompare(b.name) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export class ListView {
  constructor(app) {
    this.app = app;
    this.rows = new Map(); // conference id -> row
    this.order = [];
    this.docs = new Map(); // every conference document of the account, by id
    this.hidden = new Set(); // ids confd says this account cannot see
    this.refreshing = new Map(); // id -> {timer, running, again}
    this.buffer = null;
    this.skew = 0;
    this.build();
    this.tick = setInterval(() => this.updateTimers(), TICK_MS);
  }

  build() {
    this.tbody = el("tbody");
    const head = el("tr");
    for (const name of COLUMNS) head.append(el("th", { scope: "col", text: name }));
    this.statusEl = el("p", { class: "view-status", text: "Loading…" });
    this.table = el(
      "table",
      { class: "conferences", "aria-labelledby": "view-title" },
      el("thead", {}, head),
      this.tbody,
    );
    this.root = el(
      "section",
      { class: "list", "aria-labelledby": "view-title" },
      el("h2", { id: "view-title", tabindex: "-1", text: "Live conferences" }),
      this.statusEl,
      el("div", { class: "table-wrap" }, this.table),
    );
  }

  mount(container) {
    container.replaceChildren(this.root);
    document.title = "Live conferences — confd console";
  }

  destroy() {
    clearInterval(this.tick);
    for (const r of this.refreshing.values()) clearTimeout(r.timer);
  }

  liveChanged() {}

  async sync() {
    this.buffer = [];
    const { rows, timestamp } = await this.app.api.conferences();
    this.skew = clockSkew(timestamp);
    const serverNow = Date.parse(timestamp) || Date.now() + this.skew;
    this.docs.clear();
    const live = new Set();
    for (const conf of rows) {
      this.docs.set(conf.id, conf);
      if (isLive(conf)) {
        live.add(conf.id);
        this.upsert(conf, serverNow);
      }
    }
    for (const id of [...this.rows.keys()]) if (!live.has(id)) this.remove(id, false);
    const held = this.buffer;
    this.buffer = null;
    for (const ev of held) this.apply(ev);
    this.renderEmpty();
    return true;
  }

  onEvent(ev) {
    if (this.buffer) this.buffer.push(ev);
    else this.apply(ev);
  }

  apply(ev) {
    const id = ev.conference_id;
    if (typeof id !== "string" || this.hidden.has(id)) return;
    const row = this.rows.get(id);
    switch (ev.event) {
      case EV.CONF_CREATE:
        if (row && ev.reason !== REASON_RESYNC) this.patch(row, ev);
        else this.refresh(id);
        break;
      case EV.CONF_DESTROY:
        this.remove(id, true);
        break;
      case EV.LOCK:
      case EV.UNLOCK:
      case EV.KICK:
        if (row) this.patch(row, ev);
        else this.refresh(id);
        break;
      case EV.ADD:
      case EV.DEL:
        if (row && typeof ev.is_moderator === "boolean" && !ev.reason) {
          // Shown at once; the refresh below confirms it.
          const key = ev.is_moderator ? "admins" : "members";
          const delta = ev.event === EV.ADD ? 1 : -1;
          this.patch(row, { [key]: Math.max(0, row.counts[key] + delta) });
        }
        this.refresh(id);
        break;
      default:
        break;
    }
    this.renderEmpty();
  }

  // Ask confd for one conference, at most once at a time per conference.
  refresh(id) {
    let r = this.refreshing.get(id);
    if (!r) {
      r = { timer: null, running: false, again: false };
      this.refreshing.set(id, r);
    }
    if (r.running) {
      r.again = true;
      return;
    }
    if (r.timer === null) r.timer = setTimeout(() => this.fetchOne(id, r), REFRESH_DELAY_MS);
  }

  async fetchOne(id, r) {
    r.timer = null;
    r.running = true;
    try {
      const { conf, timestamp } = await this.app.api.conference(id);
      this.skew = clockSkew(timestamp);
      this.docs.set(id, conf);
      if (isLive(conf)) this.upsert(conf, Date.parse(timestamp) || Date.now() + this.skew);
      else this.remove(id, false);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 404 || err.status === 403)) {
        this.hidden.add(id); // another account's conference (an admin's wide subscription)
        this.remove(id, false);
      }
    } finally {
      r.running = false;
      this.renderEmpty();
      if (r.again) {
        r.again = false;
        this.refresh(id);
      } else {
        this.refreshing.delete(id);
      }
    }
  }

  upsert(conf, serverNow) {
    const c = counts(conf);
    const startedAt = serverNow - c.duration * 1000 - this.skew;
    const row = this.rows.get(conf.id);
    if (row) {
      row.name = conferenceName(conf);
      setText(row.link, row.name);
      setText(row.numbersCell, conferenceNumbers(conf).join(", ") || "—");
      row.startedAt = startedAt;
      this.patch(row, c);
      return;
    }
    this.insert(conf, c, startedAt);
  }

  insert(conf, c, startedAt) {
    const name = conferenceName(conf);
    const row = { id: conf.id, name, counts: { ...c }, startedAt, tr: el("tr") };
    row.link = el("a", { href: `#/conference/${conf.id}`, text: name });
    row.numbersCell = el("td", { dataset: { label: "Numbers" } });
    row.membersCell = el("td", { class: "num", dataset: { label: "Members" } });
    row.adminsCell = el("td", { class: "num", dataset: { label: "Admins" } });
    row.durationCell = el("td", { class: "num", dataset: { label: "Duration" } });
    row.lockedCell = el("td", { dataset: { label: "Locked" } });
    row.tr.append(
      el("th", { scope: "row" }, row.link),
      row.numbersCell,
      row.membersCell,
      row.adminsCell,
      row.durationCell,
      row.lockedCell,
    );
    setText(row.numbersCell, conferenceNumbers(conf).join(", ") || "—");
    this.render(row);
    let at = 0;
    while (at < this.order.length && byName(this.order[at], row) <= 0) at++;
    const before = this.order[at];
    if (before) this.tbody.insertBefore(row.tr, before.tr);
    else this.tbody.append(row.tr);
    this.order.splice(at, 0, row);
    this.rows.set(conf.id, row);
  }

  patch(row, values) {
    for (const key of ["members", "admins", "is_locked"]) {
      if (values[key] !== undefined) row.counts[key] = values[key];
    }
    this.render(row);
  }

  render(row) {
    setText(row.membersCell, String(row.counts.members));
    setText(row.adminsCell, String(row.counts.admins));
    setText(row.lockedCell, row.counts.is_locked ? "Locked" : "Unlocked");
    setText(row.durationCell, formatElapsed((Date.now() - row.startedAt) / 1000));
  }

  remove(id, announce) {
    const row = this.rows.get(id);
    if (!row) return;
    this.rows.delete(id);
    this.order.splice(this.order.indexOf(row), 1);
    row.tr.remove();
    if (announce) this.app.announcer.say(`${row.name} ended.`);
  }

  updateTimers() {
    const now = Date.now();
    for (const row of this.order) {
      setText(row.durationCell, formatElapsed((now - row.startedAt) / 1000));
    }
  }

  renderEmpty() {
    if (this.buffer) return;
    setText(this.statusEl, this.order.length ? "" : "No live conferences right now.");
    this.table.hidden = this.order.length === 0;
  }
}
