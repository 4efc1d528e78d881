"""The websocket protocol's pure parts and its token watch, without sockets: bindings as
events.md's grammar says, standard JSON only, revoked tokens found in one query for all."""

import json

import pytest

from confd import strict_json
from confd.conferences import ownership
from confd.conferences.commands import CommandBuilder
from confd.events import shape
from confd.events.tokenwatch import TokenWatch

CONF = "0123456789abcdef0123456789abcdef"
CALL = "2f73be18-3d58-47dd-b191-6b94b664fe45"
MANAGED = ownership.name_check(CommandBuilder(r"[0-9a-f]{32}").check_name)

# --- bindings: conference.event.{conference_id|*}.{call_id|*} --------------------------------


@pytest.mark.parametrize(
    "text, conf, call",
    [
        ("conference.event.*.*", None, None),
        ("conference.event.*.conference", None, "conference"),  # every conference's own events
        ("conference.event.*.%s" % CALL, None, CALL),  # a call, wherever it is
        ("conference.event.%s.*" % CONF, CONF, None),
        ("conference.event.%s.conference" % CONF, CONF, "conference"),
        ("conference.event.%s.%s" % (CONF, CALL), CONF, CALL),
    ],
)
def test_every_combination_of_the_grammar(text, conf, call):
    b = shape.parse_binding(text, MANAGED)
    assert (b.conference_id, b.call_id) == (conf, call)


@pytest.mark.parametrize(
    "text",
    [
        "conference.event.ABC.*",  # could never match: confd manages [0-9a-f]{32} names only
        "conference.event.ABC.conference",
        "conference.event.%s.*" % CONF.upper(),
        "conference.event.list.*",  # mod_conference's own word
    ],
)
def test_a_conference_id_confd_does_not_manage_is_refused(text):
    with pytest.raises(shape.BindingError, match="not a conference id confd manages"):
        shape.parse_binding(text, MANAGED)


def test_the_name_pattern_is_the_configured_one():
    sales = ownership.name_check(CommandBuilder(r"sales-[0-9]+").check_name)
    assert shape.parse_binding("conference.event.sales-1.*", sales).conference_id == "sales-1"
    with pytest.raises(shape.BindingError):
        shape.parse_binding("conference.event.%s.*" % CONF, sales)
    assert [b.text for b in shape.parse_bindings({"binding": "conference.event.*.*"}, sales)] == [
        "conference.event.*.*"
    ]


# --- standard JSON only ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"request_id": NaN}', "NaN is not JSON"),
        ('{"request_id": Infinity}', "Infinity is not JSON"),
        ('{"request_id": -Infinity}', "-Infinity is not JSON"),
        ('{"request_id": 1e400}', "out of range"),
        ('{"request_id": -1e400}', "out of range"),
        ("[" * 30000, "nested too deeply"),
        ("[" * 33 + "]" * 33, "nested deeper than 32"),
        ('{"a": ', "not valid JSON"),
        ("1" * 5000, "not valid JSON"),  # past Python's integer digit limit
    ],
)
def test_non_standard_json_is_refused(text, message):
    with pytest.raises(strict_json.JsonRefused, match=message):
        strict_json.loads(text)


def test_standard_json_is_taken():
    value = {"a": [1, 2.5, -1e300, None, True, "\u00e9"], "b": {"c": [[[]]]}}
    assert strict_json.loads(json.dumps(value)) == value
    assert strict_json.loads("[" * 32 + "]" * 32) is not None


# --- the token watch ---------------------------------------------------------------------------


class Connection:
    def __init__(self, *tokens):
        self._tokens = set(tokens)
        self.told = []

    def tokens(self):
        return set(self._tokens)

    def revoked(self, tokens):
        self.told.append(set(tokens))


class Checker:
    def __init__(self, valid, on_query=lambda: None):
        self.valid = set(valid)
        self.queries = []
        self.on_query = on_query

    def valid_tokens(self, tokens):
        self.queries.append(set(tokens))
        self.on_query()
        return None if self.valid is None else self.valid & set(tokens)


def test_one_query_for_every_connection_and_each_told_its_own():
    conns = [Connection("t%d" % (i % 7)) for i in range(50)] + [Connection("t1", "t2")]
    checker = Checker({"t%d" % i for i in range(7)} - {"t1"})
    watch = TokenWatch(checker, lambda: conns)
    watch.check()
    assert checker.queries == [{"t%d" % i for i in range(7)}]  # one query, distinct tokens
    assert [c.told for c in conns if c.told] == [[{"t1"}]] * 8
    watch.check()
    assert len(checker.queries) == 2  # the next tick asks again: one query each


def test_no_connection_no_query_and_database_trouble_closes_nothing():
    checker = Checker(set())
    TokenWatch(checker, lambda: [Connection()]).check()
    assert checker.queries == []
    checker.valid = None  # the database cannot say
    c = Connection("t1")
    TokenWatch(checker, lambda: [c]).check()
    assert c.told == []


def test_a_token_subscribed_during_the_query_is_not_taken_for_revoked():
    c = Connection("old")
    checker = Checker({"old"}, on_query=lambda: c._tokens.add("new"))
    TokenWatch(checker, lambda: [c]).check()
    assert c.told == []


def test_one_connection_failing_spares_the_others():
    class Broken(Connection):
        def revoked(self, tokens):
            raise RuntimeError("boom")

    ok = Connection("t")
    TokenWatch(Checker(set()), lambda: [Broken("t"), ok]).check()
    assert ok.told == [{"t"}]
