// One conference: a REST snapshot, then websocket events patch rows in place, keyed by
// participant id. Rows are placed once, in (join_time, participant_id) order, and never move
// afterwards: talking, mutes and counts change cells, not positions.

import { ApiError, clockSkew } from "./api.js";
import {
  CONFIRMED_BY,
  EV,
  GREGORIAN_OFFSET,
  REASON_NODE_LOST,
  TALK_HOLD_MS,
  compareJoin,
  conferenceName,
  conferenceNumbers,
  displayName,
  formatElapsed,
  insertionIndex,
  participantFields,
  unixFromGregorian,
} from "./model.js";
import { ALL, Pending } from "./pending.js";
import {
  actionButton,
  clearError,
  el,
  isDisabled,
  markPending,
  setAttr,
  setText,
  showError,
  syncDisabled,
} from "./ui.js";

const COLUMNS = ["Role", "Name", "Number", "Joined", "Talking", "Muted", "Deaf", "Actions"];
const TICK_MS = 1000;
// Rows are grouped in <tbody> chunks of this many, each rendered only while on screen (CSS
// content-visibility): the browser then tracks 1,000 participants as ~30 groups, not 1,000
// rows (per-row tracking took a third of every frame at 200 events/s).
const CHUNK_ROWS = 32;
const FRAME_FALLBACK_MS = 250; // rAF does not run in a hidden tab: events still get applied

// Conference controls: [data-act, visible name, action word, is it a toggle].
const BULK = [
  ["mute-all", "Mute all", "mute"],
  ["unmute-all", "Unmute all", "unmute"],
  ["deaf-all", "Deaf all", "deaf"],
  ["undeaf-all", "Undeaf all", "undeaf"],
];

function cap(word) {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

export class ConferenceView {
  constructor(app, id) {
    this.app = app;
    this.id = id;
    this.rows = new Map(); // participant id -> row
    this.order = []; // rows in display order (not counting rows left, still shown)
    this.ghosts = []; // rows that left while the pointer was over the table
    this.awaiting = new Map(); // participant id -> latest event, while its details are fetched
    this.pending = new Map(); // control key -> Pending
    this.queue = [];
    this.buffer = null; // events held while a snapshot is taken
    this.frame = null;
    this.fallback = null;
    this.synced = false;
    this.skew = 0;
    this.info = { name: "", numbers: [], running: false, locked: false, startedAt: null };
    this.pointerInside = false;
    this.chunks = []; // {tbody, rows: Set, shown}
    this.admins = 0; // moderators among the rows (kept as rows come and go)
    this.build();
    this.tick = setInterval(() => this.updateTimers(), TICK_MS);
  }

  // --- DOM ---------------------------------------------------------------------------------

  build() {
    this.title = el("h2", { id: "view-title", tabindex: "-1", text: "Conference" });
    this.numbersEl = el("span", { class: "numbers" });
    this.countsEl = el("span", { class: "counts" });
    this.durationEl = el("span", { class: "duration" });
    this.lockedEl = el("span", { class: "locked-state" });
    this.statusEl = el("p", { class: "view-status" });
    this.lockBtn = el("button", {
      type: "button",
      class: "toggle",
      "aria-pressed": "false",
      dataset: { act: "lock" },
    });
    this.lockBtn.append(
      el("span", { class: "ico", "aria-hidden": "true" }),
      el("span", { class: "verb", text: "Lock" }),
    );
    this.bulk = {};
    const controls = el("div", { class: "controls", role: "group", "aria-label": "Conference" });
    controls.append(this.lockBtn);
    for (const [act, label] of BULK) {
      this.bulk[act] = el("button", { type: "button", dataset: { act }, text: label });
      controls.append(this.bulk[act]);
    }
    this.kickAllBtn = el("button", {
      type: "button",
      class: "danger",
      dataset: { act: "kick-all" },
      text: "Kick all",
    });
    controls.append(this.kickAllBtn);
    this.controlErrors = el("div", { class: "control-errors" });
    controls.addEventListener("click", (ev) => this.controlClick(ev));

    // Table roles are explicit: the rows are laid out with CSS grid (console.css), and the
    // semantics must not depend on that.
    const headRow = el("tr", { role: "row" });
    for (const name of COLUMNS) {
      headRow.append(el("th", { scope: "col", role: "columnheader", text: name }));
    }
    this.table = el(
      "table",
      {
        class: "participants",
        role: "table",
        tabindex: "-1",
        "aria-labelledby": "participants-caption",
      },
      el("caption", { id: "participants-caption", text: "Participants" }),
      el("thead", { role: "rowgroup" }, headRow),
    );
    this.table.addEventListener("click", (ev) => this.rowClick(ev));
    this.table.addEventListener("pointerenter", () => {
      this.pointerInside = true;
    });
    this.table.addEventListener("pointerleave", () => {
      this.pointerInside = false;
      this.flushGhosts();
    });

    this.root = el(
      "section",
      { class: "conference", "aria-labelledby": "view-title" },
      el("p", { class: "back" }, el("a", { href: "#/", text: "All conferences" })),
      this.title,
      el(
        "p",
        { class: "meta" },
        this.numbersEl,
        el("span", { class: "sep", "aria-hidden": "true", text: " · " }),
        this.countsEl,
        el("span", { class: "sep", "aria-hidden": "true", text: " · " }),
        this.durationEl,
        el("span", { class: "sep", "aria-hidden": "true", text: " · " }),
        this.lockedEl,
      ),
      controls,
      this.controlErrors,
      this.statusEl,
      el("div", { class: "table-wrap" }, this.table),
    );
    setText(this.statusEl, "Loading…");
    this.renderInfo();
    this.syncControls();
  }

  mount(container) {
    container.replaceChildren(this.root);
  }

  destroy() {
    clearInterval(this.tick);
    cancelAnimationFrame(this.frame);
    clearTimeout(this.fallback);
    for (const p of this.pending.values()) p.settle(false, null);
    for (const row of this.rows.values()) clearTimeout(row.hold);
  }

  // --- snapshot --------------------------------------------------------------------------

  // Subscribed (again): take a snapshot; events arriving meanwhile wait and are applied after
  // it, in order (each carries the participant's full state, so replaying them is safe).
  async sync() {
    this.buffer = [];
    this.synced = false;
    this.syncControls();
    let answer;
    try {
      answer = await this.app.api.conference(this.id);
    } catch (err) {
      this.buffer = null;
      if (err instanceof ApiError && err.status === 404) {
        setText(this.title, "Conference not found");
        setText(this.statusEl, "No conference with this id is visible to this account.");
        return true;
      }
      throw err;
    }
    this.skew = clockSkew(answer.timestamp);
    this.applySnapshot(answer.conf, answer.timestamp);
    const held = this.buffer || [];
    this.buffer = null;
    for (const ev of held) this.apply(ev);
    this.synced = true;
    this.liveChanged();
    return true;
  }

  applySnapshot(conf, timestamp) {
    const live = conf._read_only || {};
    const serverNow = Date.parse(timestamp) || Date.now() + this.skew;
    this.info.name = conferenceName(conf);
    this.info.numbers = conferenceNumbers(conf);
    this.info.locked = live.is_locked === true;
    this.info.running = Boolean(live.focus);
    this.info.startedAt = this.info.running ? serverNow - (live.duration || 0) * 1000 : null;
    const first = this.order.length === 0 && this.rows.size === 0;
    const incoming = (live.participants || []).map(participantFields).sort(compareJoin);
    const present = new Set(incoming.map((p) => p.participant_id));
    for (const pid of [...this.rows.keys()]) {
      if (!present.has(pid)) this.remove(pid, null, true);
    }
    if (first) {
      // The first snapshot builds every row off-document, then inserts them at once.
      const fragment = document.createDocumentFragment();
      let chunk = null;
      for (const p of incoming) {
        const row = this.makeRow(p);
        this.rows.set(p.participant_id, row);
        this.order.push(row);
        if (chunk === null || chunk.rows.size >= CHUNK_ROWS) {
          chunk = this.newChunk();
          fragment.append(chunk.tbody);
        }
        chunk.rows.add(row);
        row.chunk = chunk;
        chunk.tbody.append(row.tr);
        if (row.p.is_moderator) this.admins++;
      }
      this.table.append(fragment);
    } else {
      for (const p of incoming) {
        const row = this.rows.get(p.participant_id);
        if (row) this.update(row, p, null);
        else this.insert(p, true);
      }
    }
    for (const pid of present) this.awaiting.delete(pid);
    this.renderInfo();
  }

  // --- events ----------------------------------------------------------------------------

  onEvent(ev) {
    if (ev.conference_id !== this.id) return;
    if (this.buffer) {
      this.buffer.push(ev);
      return;
    }
    this.queue.push(ev);
    if (this.frame === null) {
      // Patch once per frame, however many events came in between.
      this.frame = requestAnimationFrame(() => this.applyQueued());
      this.fallback = setTimeout(() => this.applyQueued(), FRAME_FALLBACK_MS);
    }
  }

  applyQueued() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.fallback);
    this.frame = null;
    const events = this.queue;
    this.queue = [];
    for (const ev of events) this.apply(ev);
  }

  apply(ev) {
    const pid = ev.participant_id;
    switch (ev.event) {
      case EV.CONF_CREATE:
        this.info.running = true;
        this.info.locked = ev.is_locked === true;
        if (this.info.startedAt === null) this.info.startedAt = Date.now() + this.skew;
        setText(this.statusEl, "");
        this.renderInfo();
        break;
      case EV.CONF_DESTROY:
        for (const id of [...this.rows.keys()]) this.remove(id, ev.reason, false);
        this.awaiting.clear();
        this.info.running = false;
        this.info.startedAt = null;
        this.app.announcer.say(`${this.info.name} ended.`);
        this.renderInfo();
        if (ev.reason === REASON_NODE_LOST) this.app.checkHealth();
        break;
      case EV.LOCK:
      case EV.UNLOCK:
        this.info.locked = ev.event === EV.LOCK;
        this.renderInfo();
        break;
      case EV.KICK:
        break; // its del-member follows
      case EV.ADD:
        this.added(ev);
        break;
      case EV.DEL:
        this.remove(pid, ev.reason, false);
        break;
      default:
        if (typeof pid === "number") {
          const row = this.rows.get(pid);
          if (row) this.update(row, participantFields(ev), ev.event);
          else if (this.awaiting.has(pid)) this.awaiting.set(pid, ev);
        }
    }
    for (const p of [...this.pending.values()]) p.seen(ev);
  }

  added(ev) {
    const pid = ev.participant_id;
    const row = this.rows.get(pid);
    const fields = participantFields(ev);
    if (row) {
      this.update(row, fields, ev.event);
      return;
    }
    if (fields.join_time !== undefined && fields.is_moderator !== undefined) {
      this.insert(fields, true);
      return;
    }
    // Without join_time and is_moderator in the event (events.md says they are there), the
    // row cannot be placed or given its role yet: ask for the participant once.
    if (this.awaiting.has(pid)) {
      this.awaiting.set(pid, ev);
      return;
    }
    this.awaiting.set(pid, ev);
    this.app.api.participant(this.id, pid).then(
      (p) => this.fetched(pid, p),
      () => this.fetched(pid, null),
    );
  }

  fetched(pid, p) {
    const latest = this.awaiting.get(pid);
    if (latest === undefined) return; // left meanwhile, or a snapshot brought it
    this.awaiting.delete(pid);
    const fields = participantFields(latest);
    if (p) {
      fields.join_time = p.join_time;
      fields.is_moderator = p.is_moderator === true;
    } else {
      // Not answered (it left, or confd is away): shown from now, as a member.
      fields.join_time = (Date.now() + this.skew) / 1000 + GREGORIAN_OFFSET;
      fields.is_moderator = false;
    }
    if (this.rows.has(pid)) this.update(this.rows.get(pid), fields, null);
    else this.insert(fields, true);
  }

  // --- rows ------------------------------------------------------------------------------

  makeRow(p) {
    const name = displayName(p);
    const row = {
      p: { ...p },
      tr: el("tr", { role: "row", dataset: { pid: String(p.participant_id) } }),
      hold: null,
      talkShown: false,
    };
    const cell = (cls, label, ...children) =>
      el("td", { role: "cell", class: cls, dataset: label ? { label } : {} }, ...children);
    row.roleCell = cell("c-role", "Role");
    row.nameCell = el("th", { scope: "row", role: "rowheader", class: "c-name", text: name });
    row.numberCell = cell("c-number", "Number");
    row.joinedCell = cell("c-joined", "Joined");
    row.talk = el(
      "span",
      { class: "talk" },
      el("span", { class: "ico", "aria-hidden": "true" }),
      el("span", { class: "talk-text" }),
    );
    row.talkText = row.talk.lastChild;
    const talkCell = cell("c-talk", null, row.talk);
    row.mute = actionButton("Mute", name, { class: "toggle mute", dataset: { act: "mute" } });
    row.deaf = actionButton("Deaf", name, { class: "toggle deaf", dataset: { act: "deaf" } });
    row.kick = actionButton("Kick", name, { class: "danger kick", dataset: { act: "kick" } });
    row.errors = el("div", { class: "row-errors" });
    row.tr.append(
      row.roleCell,
      row.nameCell,
      row.numberCell,
      row.joinedCell,
      talkCell,
      cell("c-mute", null, row.mute),
      cell("c-deaf", null, row.deaf),
      cell("c-actions", null, row.kick),
      // Failures of this row's controls, under the row (the whole width: readable).
      cell("c-errors", null, row.errors),
    );
    setText(row.roleCell, p.is_moderator ? "Moderator" : "Member");
    setText(row.numberCell, p.caller_id_number || "—");
    row.joinedAt = unixFromGregorian(p.join_time) * 1000 - this.skew;
    setText(row.joinedCell, formatElapsed((Date.now() - row.joinedAt) / 1000));
    this.renderFlags(row, p);
    this.showTalking(row, p.talking);
    this.syncRowButtons(row);
    return row;
  }

  insert(p, announce) {
    const row = this.makeRow(p);
    const at = insertionIndex(this.order, row, (a, b) => compareJoin(a.p, b.p));
    const before = this.order[at];
    let chunk;
    if (before) {
      chunk = before.chunk;
      chunk.tbody.insertBefore(row.tr, before.tr);
    } else {
      chunk = this.chunks[this.chunks.length - 1];
      if (!chunk || chunk.rows.size >= CHUNK_ROWS) {
        chunk = this.newChunk();
        this.table.append(chunk.tbody);
      }
      chunk.tbody.append(row.tr);
    }
    chunk.rows.add(row);
    row.chunk = chunk;
    this.order.splice(at, 0, row);
    this.rows.set(p.participant_id, row);
    if (row.p.is_moderator) this.admins++;
    if (announce) this.app.announcer.joinedName(displayName(p));
    this.renderInfo();
  }

  update(row, p, event) {
    const before = row.p;
    row.p = { ...before, ...p };
    if (p.is_moderator !== undefined && p.is_moderator !== before.is_moderator) {
      setText(row.roleCell, p.is_moderator ? "Moderator" : "Member");
      this.admins += p.is_moderator ? 1 : -1;
      this.renderInfo();
    }
    if (p.caller_id_name !== before.caller_id_name || p.caller_id_number !== before.caller_id_number) {
      const name = displayName(row.p);
      setText(row.nameCell, name);
      setText(row.numberCell, row.p.caller_id_number || "—");
      for (const b of [row.mute, row.deaf, row.kick]) setText(b.querySelector(".who"), ` ${name}`);
    }
    this.renderFlags(row, row.p);
    if (row.p.talking) {
      this.showTalking(row, true);
    } else if (row.talkShown) {
      if (!row.p.speak) {
        // Muted: FreeSWITCH clears talking and sends no stop-talking; cleared at once.
        this.showTalking(row, false);
      } else if (event === EV.STOP_TALKING) {
        // Held a moment: a talker pausing for breath does not flicker.
        if (row.hold === null) {
          row.hold = setTimeout(() => this.showTalking(row, false), TALK_HOLD_MS);
        }
      } else if (row.hold === null) {
        this.showTalking(row, false);
      }
    }
  }

  renderFlags(row, p) {
    setAttr(row.mute, "aria-pressed", p.speak ? "false" : "true");
    setAttr(row.deaf, "aria-pressed", p.hear ? "false" : "true");
  }

  showTalking(row, on) {
    clearTimeout(row.hold);
    row.hold = null;
    row.talkShown = on;
    row.talk.classList.toggle("on", on);
    setText(row.talkText, on ? "Talking" : "Not talking");
  }

  remove(pid, reason, quiet) {
    const row = this.rows.get(pid);
    if (!row) {
      this.awaiting.delete(pid);
      return;
    }
    this.rows.delete(pid);
    const at = this.order.indexOf(row);
    if (at >= 0) this.order.splice(at, 1);
    if (row.p.is_moderator) this.admins--;
    clearTimeout(row.hold);
    row.chunk.rows.delete(row);
    const hadFocus = row.tr.contains(document.activeElement);
    if (this.pointerInside) {
      // The operator's pointer is over the table: rows below it must not slide up under it.
      // The row stays, emptied and hidden from assistive technology, until the pointer leaves.
      row.tr.classList.add("gone");
      row.tr.setAttribute("aria-hidden", "true");
      row.tr.inert = true;
      this.ghosts.push(row);
    } else {
      this.detach(row);
    }
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (hadFocus || (row.kicked && lost)) this.focusAfterRemoval(at);
    if (!quiet) this.app.announcer.leftName(displayName(row.p));
    if (reason === REASON_NODE_LOST) this.app.checkHealth();
    this.renderInfo();
  }

  // console.md: after a kick, focus goes to the next row's Kick (or the table when none is
  // left), so a keyboard user keeps their place.
  focusAfterRemoval(at) {
    const next = this.order[at] || this.order[at - 1];
    if (next) next.kick.focus();
    else this.table.focus();
  }

  flushGhosts() {
    for (const row of this.ghosts) this.detach(row);
    this.ghosts = [];
  }

  newChunk() {
    const chunk = {
      tbody: el("tbody", { role: "rowgroup", class: "chunk shown" }),
      rows: new Set(),
    };
    // Whether the browser renders it (it is on screen): only those rows' timers tick.
    chunk.shown = true;
    chunk.tbody.addEventListener("contentvisibilityautostatechange", (ev) => {
      chunk.shown = !ev.skipped;
      chunk.tbody.classList.toggle("shown", chunk.shown);
      if (chunk.shown) this.tickRows(chunk.rows, Date.now());
    });
    this.chunks.push(chunk);
    return chunk;
  }

  // A row's element leaves the page; its chunk too once empty.
  detach(row) {
    row.tr.remove();
    const chunk = row.chunk;
    if (chunk.tbody.firstChild === null) {
      chunk.tbody.remove();
      this.chunks.splice(this.chunks.indexOf(chunk), 1);
    }
  }

  // --- timers ----------------------------------------------------------------------------

  tickRows(rows, now) {
    for (const row of rows) setText(row.joinedCell, formatElapsed((now - row.joinedAt) / 1000));
  }

  // Only rows on screen tick: with 1,000 participants, 1,000 text writes a second would be
  // most of the page's work.
  updateTimers() {
    const now = Date.now();
    for (const chunk of this.chunks) if (chunk.shown) this.tickRows(chunk.rows, now);
    if (this.info.startedAt !== null) {
      setText(
        this.durationEl,
        `running ${formatElapsed((now + this.skew - this.info.startedAt) / 1000)}`,
      );
    }
  }

  renderInfo() {
    if (this.info.name) {
      setText(this.title, this.info.name);
      document.title = `${this.info.name} — confd console`;
    }
    setText(
      this.numbersEl,
      this.info.numbers.length ? `Numbers: ${this.info.numbers.join(", ")}` : "No numbers",
    );
    const admins = this.admins;
    const members = this.order.length - admins;
    setText(
      this.countsEl,
      `${members} ${members === 1 ? "member" : "members"}, ${admins} ${admins === 1 ? "admin" : "admins"}`,
    );
    if (!this.info.running) {
      setText(this.durationEl, "not running");
    } else if (this.info.startedAt !== null) {
      setText(
        this.durationEl,
        `running ${formatElapsed((Date.now() + this.skew - this.info.startedAt) / 1000)}`,
      );
    }
    setText(this.lockedEl, this.info.locked ? "Locked" : "Unlocked");
    setAttr(this.lockBtn, "aria-pressed", this.info.locked ? "true" : "false");
    if (this.synced || this.buffer !== null) {
      setText(
        this.statusEl,
        this.info.running ? "" : "This conference is not running: nobody is in it.",
      );
    }
    this.syncControls();
  }

  // --- controls --------------------------------------------------------------------------

  canAct() {
    return this.app.isLive() && this.synced;
  }

  syncControls() {
    const ok = this.canAct() && this.info.running;
    syncDisabled(this.lockBtn, !ok || this.pending.has("conf:lock"));
    for (const [act] of BULK) syncDisabled(this.bulk[act], !ok || this.pending.has(`conf:${act}`));
    syncDisabled(this.kickAllBtn, !ok || this.pending.has("conf:kick-all"));
  }

  // Connection state changed: every control follows (aria-disabled keeps keyboard focus).
  liveChanged() {
    this.syncControls();
    for (const row of this.rows.values()) this.syncRowButtons(row);
  }

  syncRowButtons(row) {
    const ok = this.canAct();
    const pid = row.p.participant_id;
    syncDisabled(row.mute, !ok || this.pending.has(`${pid}:mute`));
    syncDisabled(row.deaf, !ok || this.pending.has(`${pid}:deaf`));
    syncDisabled(row.kick, !ok || this.pending.has(`${pid}:kick`));
  }

  rowClick(ev) {
    const button = ev.target.closest("button[data-act]");
    if (!button || isDisabled(button)) return;
    const tr = button.closest("tr");
    const row = tr && this.rows.get(Number(tr.dataset.pid));
    if (!row) return;
    const control = button.dataset.act;
    if (control === "mute") this.act(row, control, row.p.speak ? "mute" : "unmute");
    else if (control === "deaf") this.act(row, control, row.p.hear ? "deaf" : "undeaf");
    else if (control === "kick") this.confirmKick(row);
  }

  async confirmKick(row) {
    const name = displayName(row.p);
    const number = row.p.caller_id_number ? ` (${row.p.caller_id_number})` : "";
    const yes = await this.app.dialog.ask(
      `Kick ${name}?`,
      `${name}${number} will be disconnected from ${this.info.name || "this conference"}.`,
    );
    if (!yes) {
      row.kick.focus();
      return;
    }
    if (!this.rows.has(row.p.participant_id)) {
      this.focusAfterRemoval(0);
      return;
    }
    row.kick.focus();
    row.kicked = true;
    this.act(row, "kick", "kick");
  }

  act(row, control, action) {
    const pid = row.p.participant_id;
    const key = `${pid}:${control}`;
    const button = row[control];
    const what = `${cap(action)} ${displayName(row.p)}`;
    const confirmedBy = CONFIRMED_BY[action];
    const pending = new Pending(what, [pid], (ev) =>
      ev.participant_id === pid && (ev.event === confirmedBy || ev.event === EV.DEL)
        ? pid
        : ev.event === EV.CONF_DESTROY
          ? ALL
          : null,
    );
    clearError(row.errors, control);
    this.pending.set(key, pending);
    markPending(button, true);
    this.syncRowButtons(row);
    pending.start((ok, message) => {
      this.pending.delete(key);
      markPending(button, false);
      if (this.rows.get(pid) === row) {
        this.syncRowButtons(row);
        if (!ok && message) {
          row.kicked = false;
          showError(row.errors, message, control);
        }
      }
    });
    this.app.api.participantAction(this.id, pid, action).then(
      () => pending.replied(),
      (err) => this.actionFailed(pending, err),
    );
  }

  actionFailed(pending, err) {
    if (err instanceof ApiError && err.code === "focus_unavailable") this.app.checkHealth();
    pending.failed(err);
  }

  controlClick(ev) {
    const button = ev.target.closest("button[data-act]");
    if (!button || isDisabled(button)) return;
    const act = button.dataset.act;
    if (act === "lock") {
      const action = this.info.locked ? "unlock" : "lock";
      const expected = CONFIRMED_BY[action];
      this.bulkAct(button, "lock", action, ["conf"], (e) => (e.event === expected ? "conf" : null));
      return;
    }
    if (act === "kick-all") {
      this.confirmKickAll(button);
      return;
    }
    const spec = BULK.find(([a]) => a === act);
    if (!spec) return;
    const action = spec[2];
    // api.md: the collection's mute/unmute/deaf/undeaf act on everyone but the moderators.
    const targets = this.order.filter((r) => !r.p.is_moderator).map((r) => r.p.participant_id);
    const confirmedBy = CONFIRMED_BY[action];
    this.bulkAct(button, act, action, targets, (e) =>
      e.event === EV.CONF_DESTROY
        ? ALL
        : e.event === confirmedBy || e.event === EV.DEL
          ? e.participant_id
          : null,
    );
  }

  async confirmKickAll(button) {
    const names = this.order.map((r) => displayName(r.p));
    const shown = names.slice(0, 5).join(", ");
    const more = names.length > 5 ? ` and ${names.length - 5} more` : "";
    const yes = await this.app.dialog.ask(
      "Kick everyone?",
      `All ${names.length} participants (${shown}${more}) will be disconnected from ` +
        `${this.info.name || "this conference"}.`,
    );
    button.focus();
    if (!yes) return;
    const targets = this.order.map((r) => r.p.participant_id);
    this.bulkAct(button, "kick-all", "kick", targets, (e) =>
      e.event === EV.CONF_DESTROY ? ALL : e.event === EV.DEL ? e.participant_id : null,
      () => {
        if (document.activeElement === button && this.order.length === 0) this.table.focus();
      },
    );
  }

  bulkAct(button, act, action, targets, match, onDone = null) {
    const key = `conf:${act}`;
    const what = act === "lock" ? cap(action) : button.textContent;
    const pending = new Pending(what, targets, match);
    clearError(this.controlErrors, act);
    this.pending.set(key, pending);
    markPending(button, true);
    this.syncControls();
    pending.start((ok, message) => {
      this.pending.delete(key);
      markPending(button, false);
      this.syncControls();
      if (!ok && message) showError(this.controlErrors, message, act);
      if (ok && onDone) onDone();
    });
    const request =
      act === "lock"
        ? this.app.api.conferenceAction(this.id, action)
        : this.app.api.everyoneAction(this.id, action);
    request.then(
      () => pending.replied(),
      (err) => this.actionFailed(pending, err),
    );
  }
}
