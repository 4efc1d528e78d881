// Small DOM helpers shared by the views: element building, the polite announcer, the
// confirmation dialog, and the per-control pending state.

import { summarizeChanges } from "./model.js";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child);
  }
  return node;
}

// A button whose accessible name is `verb who` while only `verb` is shown (the name starts
// with the visible word: WCAG's label in name), e.g. "Mute Bob".
export function actionButton(verb, who, attrs = {}) {
  const button = el("button", { type: "button", ...attrs });
  button.append(
    el("span", { class: "ico", "aria-hidden": "true" }),
    el("span", { class: "verb", text: verb }),
    el("span", { class: "sr-only who", text: ` ${who}` }),
  );
  return button;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

export function setAttr(node, name, value) {
  if (value === null) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

// A control that awaits FreeSWITCH's confirmation: aria-busy and aria-disabled, focus kept
// (never the `disabled` attribute, which would drop keyboard focus).
export function markPending(button, pending) {
  setAttr(button, "aria-busy", pending ? "true" : null);
  button.classList.toggle("pending", pending);
}

export function syncDisabled(button, disabled) {
  setAttr(button, "aria-disabled", disabled ? "true" : null);
}

export function isDisabled(button) {
  return button.getAttribute("aria-disabled") === "true";
}

// The inline error next to a control (role=alert: announced when it appears). `key` names the
// control, so that a new try of one control clears its own error, not another's.
export function showError(container, text, key = "") {
  clearError(container, key);
  container.append(el("p", { class: "error", role: "alert", text, dataset: { for: key } }));
}

export function clearError(container, key = "") {
  for (const node of container.querySelectorAll(":scope > .error")) {
    if (node.dataset.for === key) node.remove();
  }
}

// Joins and leaves go to one polite live region, a batch a second, so a screen reader is not
// flooded when twenty people dial in at the top of the hour.
export class Announcer {
  constructor(region, everyMs = 1000) {
    this.region = region;
    this.everyMs = everyMs;
    this.joined = [];
    this.left = [];
    this.other = [];
    this.timer = null;
  }

  joinedName(name) {
    this.joined.push(name);
    this.schedule();
  }

  leftName(name) {
    this.left.push(name);
    this.schedule();
  }

  say(text) {
    this.other.push(text);
    this.schedule();
  }

  schedule() {
    if (this.timer === null) this.timer = setTimeout(() => this.flush(), this.everyMs);
  }

  flush() {
    this.timer = null;
    const parts = [...this.other];
    if (this.joined.length || this.left.length) parts.push(summarizeChanges(this.joined, this.left));
    this.joined = [];
    this.left = [];
    this.other = [];
    if (parts.length) this.region.textContent = parts.join(" ");
  }

  reset() {
    clearTimeout(this.timer);
    this.timer = null;
    this.joined = [];
    this.left = [];
    this.other = [];
  }
}

// The kick confirmation: a modal <dialog role="alertdialog"> with "Kick" and "Cancel".
// Resolves true (Kick) or false (Cancel, Escape). Focus starts on Cancel, the safe choice.
export class ConfirmDialog {
  constructor(dialog) {
    this.dialog = dialog;
    this.title = dialog.querySelector("[data-title]");
    this.body = dialog.querySelector("[data-body]");
    this.ok = dialog.querySelector("[data-ok]");
    this.cancel = dialog.querySelector("[data-cancel]");
    this.resolve = null;
    this.ok.addEventListener("click", () => this.finish(true));
    this.cancel.addEventListener("click", () => this.finish(false));
    dialog.addEventListener("cancel", (ev) => {
      ev.preventDefault();
      this.finish(false);
    });
  }

  ask(title, body) {
    if (this.resolve) this.finish(false);
    this.title.textContent = title;
    this.body.textContent = body;
    this.dialog.showModal();
    this.cancel.focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  get open() {
    return this.dialog.open;
  }

  finish(answer) {
    const resolve = this.resolve;
    this.resolve = null;
    if (this.dialog.open) this.dialog.close();
    if (resolve) resolve(answer);
  }
}
