// Pure helpers of the console: no DOM, no network. The browser tests import this module and
// check these functions with plain values.

// api.md: join_time is in Gregorian seconds (Unix + 62167219200, as Kazoo).
export const GREGORIAN_OFFSET = 62167219200;
// console.md: talking stays shown this long after stop-talking (FreeSWITCH's detector flaps).
export const TALK_HOLD_MS = 400;
// console.md: an action not confirmed by its event within this is rolled back.
export const CONFIRM_TIMEOUT_MS = 5000;
// Websocket reconnects: the first retry after ~0.5 s, doubling to 15 s, jittered.
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15000;
// Not live for this long: the state shown is "Stale", not merely "Reconnecting…".
export const STALE_AFTER_MS = 10000;

// Websocket event names (events.md).
export const EV = Object.freeze({
  CONF_CREATE: "conference-create",
  CONF_DESTROY: "conference-destroy",
  LOCK: "lock",
  UNLOCK: "unlock",
  KICK: "kick-member",
  ADD: "add-member",
  DEL: "del-member",
  START_TALKING: "start-talking",
  STOP_TALKING: "stop-talking",
  MUTE: "mute-member",
  UNMUTE: "unmute-member",
  DEAF: "deaf-member",
  UNDEAF: "undeaf-member",
});

// The event that confirms each action (api.md's action words).
export const CONFIRMED_BY = Object.freeze({
  mute: EV.MUTE,
  unmute: EV.UNMUTE,
  deaf: EV.DEAF,
  undeaf: EV.UNDEAF,
  kick: EV.DEL,
  lock: EV.LOCK,
  unlock: EV.UNLOCK,
});

// Why confd published an event of its own accord (events.md lifecycle steps 5-6).
export const REASON_NODE_LOST = "node_lost";
export const REASON_RESYNC = "resync";

export function unixFromGregorian(seconds) {
  return seconds - GREGORIAN_OFFSET;
}

// Participants are shown in (join_time, participant_id) order, once, at insertion.
export function compareJoin(a, b) {
  return a.join_time - b.join_time || a.participant_id - b.participant_id;
}

// Where `item` goes in `sorted` (ascending by `cmp`): after every element not greater.
export function insertionIndex(sorted, item, cmp) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cmp(sorted[mid], item) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// "0:07", "12:03", "1:02:03".
export function formatElapsed(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

// Delay before reconnect attempt `attempt` (0-based): exponential, then "equal jitter" (half
// fixed, half random) so that many consoles cut at once do not come back at once.
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 30));
  return ceiling / 2 + random() * (ceiling / 2);
}

export function displayName(p) {
  return p.caller_id_name || p.caller_id_number || `participant ${p.participant_id}`;
}

export function conferenceName(conf) {
  return conf.name || `conference ${String(conf.id).slice(0, 8)}`;
}

// A conference's dial-in numbers, never its PINs (console.md).
export function conferenceNumbers(conf) {
  const out = [];
  for (const n of conf.conference_numbers || []) out.push(n);
  for (const n of (conf.member && conf.member.numbers) || []) {
    if (!out.includes(n)) out.push(n);
  }
  for (const n of (conf.moderator && conf.moderator.numbers) || []) {
    if (!out.includes(n)) out.push(`${n} (moderator)`);
  }
  return out;
}

// The participant fields the view keeps, from a REST participant or a websocket event.
export function participantFields(src) {
  const p = {
    participant_id: src.participant_id,
    call_id: src.call_id,
    caller_id_name: src.caller_id_name || "",
    caller_id_number: src.caller_id_number || "",
    speak: src.speak !== false,
    hear: src.hear !== false,
    talking: src.talking === true,
  };
  if (typeof src.is_moderator === "boolean") p.is_moderator = src.is_moderator;
  if (typeof src.join_time === "number") p.join_time = src.join_time;
  return p;
}

// What a failed request says to an operator, naming what failed.
export function describeFailure(what, error) {
  return `${what} failed: ${error && error.explain ? error.explain() : String(error)}`;
}

// Joins and leaves, batched for the polite live region: names when few, counts when many.
export function summarizeChanges(joined, left, many = 3) {
  const parts = [];
  if (joined.length + left.length <= many) {
    for (const name of joined) parts.push(`${name} joined.`);
    for (const name of left) parts.push(`${name} left.`);
    return parts.join(" ");
  }
  const people = (n) => `${n} ${n === 1 ? "person" : "people"}`;
  if (joined.length) parts.push(`${people(joined.length)} joined`);
  if (left.length) parts.push(`${people(left.length)} left`);
  return parts.join(", ") + ".";
}

// p-th percentile (0..100) of numbers, nearest-rank.
export function percentile(values, p) {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}
