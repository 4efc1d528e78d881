// One action awaiting confirmation (console.md "Confirmed, not optimistic"): it is done when
// confd answered 2xx (FreeSWITCH said +OK) AND every event it waits for has arrived, in either
// order; it fails on an HTTP error, or when CONFIRM_TIMEOUT_MS pass without that.

import { CONFIRM_TIMEOUT_MS, describeFailure } from "./model.js";

// match(event) may return this: every awaited key is confirmed at once (the conference ended).
export const ALL = Symbol("all");

export class Pending {
  // what: names the action for an error ("Mute Bob"); waiting: keys of the events awaited;
  // match(event) -> a key now confirmed, ALL, or null.
  constructor(what, waiting, match, timers = {}) {
    this.what = what;
    this.waiting = new Set(waiting);
    this.match = match;
    this.timeoutMs = timers.timeoutMs ?? CONFIRM_TIMEOUT_MS;
    this.setTimer = timers.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = timers.clearTimer ?? ((t) => clearTimeout(t));
    this.answered = false;
    this.settled = false;
    this.timer = null;
    this.onSettle = null;
  }

  // onSettle(ok, message): called exactly once.
  start(onSettle) {
    this.onSettle = onSettle;
    this.timer = this.setTimer(
      () =>
        this.fail(
          `${this.what} was not confirmed: FreeSWITCH sent no event within ` +
            `${Math.round(this.timeoutMs / 1000)} s`,
        ),
      this.timeoutMs,
    );
    return this;
  }

  seen(event) {
    if (this.settled) return;
    const key = this.match(event);
    if (key === ALL) this.waiting.clear();
    else if (key !== null && key !== undefined) this.waiting.delete(key);
    this.check();
  }

  // confd answered 2xx.
  replied() {
    if (this.settled) return;
    this.answered = true;
    this.check();
  }

  // confd answered an error (or nothing).
  failed(error) {
    this.fail(describeFailure(this.what, error));
  }

  check() {
    if (this.answered && this.waiting.size === 0) this.settle(true, null);
  }

  fail(message) {
    this.settle(false, message);
  }

  settle(ok, message) {
    if (this.settled) return;
    this.settled = true;
    this.clearTimer(this.timer);
    if (this.onSettle) this.onSettle(ok, message);
  }
}
