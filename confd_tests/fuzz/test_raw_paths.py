"""Hostile conference and participant ids in raw request paths (and hostile actions in bodies).

The path bytes are built here, percent-encoding included, and sent as they are: URL-encoded
CR, LF, NUL, tab, space, ``%``, ``/``, invalid UTF-8, non-ASCII digits, signs, leading zeros,
numbers past 2^31 and 2^32, FreeSWITCH selector words, a live conference's id with something
appended. FreeSWITCH reads member ids with ``atoi`` and ends a command at CR/LF/NUL
(captures s6_bad_input.cmds), so the point is that none of this reaches it: after every
request, every line the fake received is one of ``conftest.ALLOWED_COMMANDS``, and an action
is only ever sent for exactly the conference and member the path named in canonical form.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional
from urllib.parse import quote, unquote

from hypothesis import given
from hypothesis import strategies as st

from confd_tests.fuzz.conftest import bad_commands, examples, fuzz_settings, lost_race
from confd_tests.fuzz.raw import send_raw
from confd_tests.fuzz.server import LiveApi

MAX_MEMBER_ID = 2147483647
CANONICAL_MEMBER_ID = re.compile(r"[1-9][0-9]{0,9}")
HEX32 = re.compile(r"[0-9a-f]{32}")
MEMBER_ACTIONS = ("mute", "unmute", "deaf", "undeaf", "kick")
CONFERENCE_ACTIONS = ("lock", "unlock")

# Pieces of hostile ids, as text (encoded below, character by character or not at all).
FRAGMENTS = [
    "\r",
    "\n",
    "\r\n",
    "\x00",
    "\t",
    " ",
    "%",
    "/",
    "+",
    "-",
    "0",
    "00",
    "7",
    "1",
    "-1",
    "+1",
    "007",
    "7abc",
    "8 9",
    "4294967297",
    "4294967295",
    "2147483648",
    "2147483647",
    "99999999999999999999999999999999",
    "1e3",
    "0x1f",
    "all",
    "ALL",
    "All",
    "non_moderator",
    "last",
    "caller_id_number=6102",
    "json_list",
    "list",
    "\n\napi system echo pwned\n\n",
    "noevents",
    "exit",
    "\u0661",
    "\u0967",
    "\uff17",
    "\u2077",
    "\U0001d7d5",
    "é",
    "..",
    ";",
    "?",
    "#",
    "&",
    "=",
    "~",
    ":",
    "@",
    "*",
    "'",
    '"',
    "<",
    ">",
    "\\",
    "\x7f",
    "\x1b",
]
SAFE_RAW = set("0123456789abcdefABCDEFxyz_-.~!$'()*,;=:@+")  # sent unencoded when chosen


def encode(text: str, how: str) -> str:
    """Percent-encode ``text`` for a path segment: ``all`` (every byte), ``needed`` (only what
    is not allowed raw); ``broken`` appends a stray ``%`` or an invalid UTF-8 byte."""
    if how == "all":
        return "".join(f"%{b:02X}" for b in text.encode("utf-8"))
    out = "".join(c if c in SAFE_RAW else quote(c, safe="") for c in text)
    if how == "broken":
        out += "%FF" if len(out) % 2 else "%"
    return out


def hostile_text(core: Optional[str] = None) -> st.SearchStrategy[str]:
    pieces = st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4)
    if core is None:
        return pieces.map("".join)
    return st.tuples(pieces, st.integers(0, 2)).map(
        lambda t: [core + "".join(t[0]), "".join(t[0]) + core, core.join(t[0][:2])][t[1]]
    )


def segment(text_strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(text_strategy, st.sampled_from(["all", "needed", "broken"])).map(
        lambda t: encode(*t)
    )


def check_reply(status: int, body: Dict[str, Any]) -> None:
    assert status < 500 or lost_race(status, body), (status, body)
    assert isinstance(body, dict) and body.get("status") in ("success", "error"), body
    if status >= 400:
        assert body["error"] == str(status) and isinstance(body["data"], dict), body
    assert isinstance(body.get("request_id"), str) and body["request_id"], body


def new_commands(api: LiveApi, mark: int) -> List[str]:
    lines = api.commands()[mark:]
    assert bad_commands(lines) == [], lines
    return [line for line in lines if not line.endswith(" json_list") and " uuid_dump " not in line]


def canonical_member(text: str) -> Optional[int]:
    if CANONICAL_MEMBER_ID.fullmatch(text) and int(text) <= MAX_MEMBER_ID:
        return int(text)
    return None


def action_body(action: str) -> bytes:
    return json.dumps({"data": {"action": action}}).encode()


ACTIONS = st.one_of(
    st.sampled_from(MEMBER_ACTIONS + CONFERENCE_ACTIONS),
    st.sampled_from(["MUTE", "mute 1", "mute\n", "kick all", "lock\n\napi system echo x", ""]),
    hostile_text(),
)


def live_conference(api: LiveApi, index: int) -> str:
    live = api.snapshot.live_ids or api.snapshot.conference_ids
    return live[index % len(live)]


@given(data=st.data())
def _participant_item(api: LiveApi, data: st.DataObject) -> None:
    conf = live_conference(api, data.draw(st.integers(0, 100), label="conference"))
    members = api.snapshot.members_of.get(conf) or (1,)
    member = str(members[data.draw(st.integers(0, 100), label="member") % len(members)])
    pid_path = data.draw(
        st.one_of(
            segment(hostile_text()),
            segment(hostile_text(member)),
            st.just(encode(member, "all")),  # fully encoded but canonical: must still work
        ),
        label="pid",
    )
    method = data.draw(st.sampled_from(["GET", "PUT"]), label="method")
    action = data.draw(ACTIONS, label="action")
    path = f"/v2/accounts/{api.account_id}/conferences/{conf}/participants/{pid_path}"
    body = action_body(action) if method == "PUT" else None
    mark = len(api.commands())
    status, reply, _ = send_raw(api, method, path, body)
    check_reply(status, reply)
    sent = new_commands(api, mark)
    decoded = unquote(pid_path, errors="replace")
    pid = canonical_member(decoded)
    if "/" in decoded or decoded in ("", ".", ".."):
        assert status in (400, 404, 405), (status, reply)
    elif pid is None:
        assert (status, reply["message"]) == (400, "invalid_participant_id"), (path, reply)
    if pid is None or method == "GET" or action not in MEMBER_ACTIONS:
        assert sent == [], (path, action, sent)
    else:
        assert sent in ([], [f"api conference {conf} {action} {pid}"]), (path, action, sent)
    if status == 202:
        assert sent == [f"api conference {conf} {action} {pid}"], (path, sent)


def test_hostile_participant_ids(live_api: LiveApi) -> None:
    fuzz_settings(examples() * 4)(_participant_item)(live_api)


@given(data=st.data())
def _conference_paths(api: LiveApi, data: st.DataObject) -> None:
    conf = live_conference(api, data.draw(st.integers(0, 100), label="conference"))
    conf_path = data.draw(
        st.one_of(
            segment(hostile_text(conf)),
            segment(hostile_text(conf.upper())),
            segment(hostile_text(conf[:31])),
            segment(hostile_text()),
            st.just(encode(conf, "all")),  # fully encoded but well-formed: must still work
        ),
        label="conference id",
    )
    rest, actions = data.draw(
        st.sampled_from([("", CONFERENCE_ACTIONS), ("/participants", MEMBER_ACTIONS), ("", ())]),
        label="route",
    )
    method = "PUT" if actions else data.draw(st.sampled_from(["GET", "POST", "PATCH", "DELETE"]))
    action = data.draw(ACTIONS, label="action")
    body: Optional[bytes] = action_body(action)
    if method in ("POST", "PATCH"):
        body = json.dumps({"data": {"name": "fuzz"}}).encode()
    elif method in ("GET", "DELETE"):
        body = None
    path = f"/v2/accounts/{api.account_id}/conferences/{conf_path}{rest}"
    mark = len(api.commands())
    status, reply, _ = send_raw(api, method, path, body)
    check_reply(status, reply)
    sent = new_commands(api, mark)
    decoded = unquote(conf_path, errors="replace")
    if not HEX32.fullmatch(decoded):
        assert status in (400, 404, 405), (path, status, reply)
        assert sent == [], (path, sent)
        if "/" not in decoded and "\x00" not in decoded:
            assert (status, reply["message"]) in ((404, "bad_identifier"), (400, "invalid_action"))
        return
    selector = {"kick": " all"}.get(action, " non_moderator") if rest else ""
    expected = f"api conference {decoded} {action}{selector}"
    if not actions or action not in actions:
        assert sent == [], (path, sent)
    else:
        assert sent in ([], [expected]), (path, action, sent)
    if status == 202:
        assert sent == [expected], (path, sent)


def test_hostile_conference_ids(live_api: LiveApi) -> None:
    fuzz_settings(examples() * 4)(_conference_paths)(live_api)


def test_encoded_canonical_ids_reach_freeswitch(live_api: LiveApi) -> None:
    """The counterpart of the fuzzers' refusals: well-formed ids, every byte percent-encoded,
    are decoded and acted on (so the fuzzers' 4xx are not a server refusing everything)."""
    api = live_api
    api.refresh()  # a fuzzed DELETE just before may have removed the live document
    conf = api.snapshot.live_ids[0]
    member = api.snapshot.members_of[conf][-1]
    path = "/v2/accounts/%s/conferences/%s/participants/%s" % (
        api.account_id,
        encode(conf, "all"),
        encode(str(member), "all"),
    )
    mark = len(api.commands())
    status, reply, _ = send_raw(api, "PUT", path, action_body("mute"))
    assert status == 202, reply
    assert reply["data"]["command"] == f"conference {conf} mute {member}"
    assert new_commands(api, mark) == [f"api conference {conf} mute {member}"]


def test_doubled_slashes_answer_an_envelope(live_api: LiveApi) -> None:
    """An empty path segment is an unknown path: a 404 envelope, not Werkzeug's HTML 308
    redirect to the merged path (which a client following redirects would re-send, action
    included, to a Location built from the Host header it sent)."""
    api = live_api
    api.refresh()  # a fuzzed DELETE just before may have removed the live document
    conf = api.snapshot.live_ids[0]
    mark = len(api.commands())
    for method, path, body in [
        ("GET", "/v2//health", None),
        ("GET", f"/v2/accounts/{api.account_id}//conferences", None),
        (
            "PUT",
            f"/v2/accounts/{api.account_id}/conferences/{conf}//participants",
            action_body("kick"),
        ),
    ]:
        status, reply, _ = send_raw(api, method, path, body)
        assert (status, reply["message"]) == (404, "not_found"), (method, path, reply)
    assert new_commands(api, mark) == []
