"""The store refuses what no backend can hold, whoever calls it (HTTP refuses it earlier, but
the demo, the CLI and the next caller go straight to the store): lone surrogates and NUL in any
string or key, numbers beyond a double; and a number pattern's ``$`` is the end of the string.
Every test that touches the database runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import pytest

from confd.store import InvalidCredentials, ValidationFailed
from confd.store.schema import ConferenceSchema, load_packaged_schema, python_pattern
from confd.store.values import (
    REASON_NOT_FINITE,
    REASON_NUL,
    REASON_SURROGATE,
    shown,
    text_problem,
    value_problems,
)

SURROGATES = ["\ud800", "\udfff", "ok\udbff"]
NULS = ["\x00", "a\x00b"]
BAD_TEXT = SURROGATES + NULS


# --- the pure checks --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "plain", "é😀", "\U0010ffff", "\ufffd", "a\nb\tc"])
def test_unicode_text_is_fine(text):
    assert text_problem(text) is None


@pytest.mark.parametrize("text", SURROGATES)
def test_a_lone_surrogate_is_not_text(text):
    assert text_problem(text) == REASON_SURROGATE


@pytest.mark.parametrize("text", NULS)
def test_nul_is_refused(text):
    assert text_problem(text) == REASON_NUL


def test_every_problem_is_found_with_its_path_keys_included():
    value = {
        "ok": [1, 2.5, "fine", {"n": None, "t": True}],
        "k\x00": "v",
        "list": ["a", float("inf"), {"x": "\ud800"}],
        "neg": float("-inf"),
        "nan": float("nan"),
    }
    assert sorted(value_problems(value), key=repr) == sorted(
        [
            (("k\x00",), REASON_NUL),
            (("list", 1), REASON_NOT_FINITE),
            (("list", 2, "x"), REASON_SURROGATE),
            (("neg",), REASON_NOT_FINITE),
            (("nan",), REASON_NOT_FINITE),
        ],
        key=repr,
    )


def test_the_walk_does_not_recurse():
    deep = "\x00"
    for _ in range(50_000):
        deep = [deep]
    [(path, reason)] = list(value_problems(deep))
    assert len(path) == 50_000 and reason == REASON_NUL


def test_shown_text_is_ascii_and_bounded():
    assert shown("a\x00\ud800\n") == "a\\x00\\ud800\\n"
    assert shown("x" * 500, limit=10) == "x" * 10 + "..."


# --- the schema: ECMA-262's "$" -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[0-9]+$", "4000", True),
        ("^[0-9]+$", "4000\n", False),
        ("^[0-9]+$", "4000\r\n", False),
        ("^a$|^b$", "b\n", False),
        ("^a$|^b$", "a", True),
        ("^[$]+$", "$$", True),  # inside a class "$" is a character
        ("^a\\$$", "a$", True),  # escaped: a character
        ("^a\\$$", "a$\n", False),
        ("^a\\\\$", "a\\", True),  # an escaped backslash, then the anchor
        ("^a\\\\$", "a\\\n", False),
        ("[0-9]", "x1y", True),  # unanchored patterns still search
    ],
)
def test_python_pattern_reads_the_dollar_as_ecma_262_does(pattern, text, matches):
    assert bool(python_pattern(pattern).search(text)) is matches


def schema_patterns(schema, path=()):
    if isinstance(schema, dict):
        if "pattern" in schema:
            yield path, schema["pattern"]
        for name, sub in schema.get("properties", {}).items():
            yield from schema_patterns(sub, path + (name,))
        if "items" in schema:
            yield from schema_patterns(schema["items"], path + (0,))


PATTERNS = list(schema_patterns(load_packaged_schema()))


def at(path, value):
    node = value
    for part in reversed(path):
        node = [node] if part == 0 else {part: node}
    return node


@pytest.mark.parametrize(("path", "pattern"), PATTERNS, ids=[str(p) for p, _ in PATTERNS])
def test_every_schema_pattern_refuses_a_trailing_newline(path, pattern):
    schema = ConferenceSchema()
    assert schema.errors(at(path, "4000")) == {}
    key = ".".join(str(p) for p in path)
    errors = schema.errors(at(path, "4000\n"))
    assert errors[key]["pattern"]["target"] == pattern
    assert errors[key]["pattern"]["message"] == f"Failed to match pattern '{pattern}'"


def test_the_schema_has_the_patterns_api_md_lists():
    assert len(PATTERNS) == 5 and {p for _, p in PATTERNS} == {"^[0-9]+$"}


# --- the store, on every backend ----------------------------------------------------------------


def documents_with(bad):
    return [
        ({"name": bad}, "name", "text"),
        ({"owner_id": (bad * 32)[:32]}, "owner_id", "text"),
        ({"flags": ["ok", bad]}, "flags.1", "text"),
        ({"ui_metadata": {"a": [bad]}}, "ui_metadata.a.0", "text"),
        ({"k" + bad: 1}, "k" + bad, "text"),
    ]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_documents_with_text_no_backend_holds_are_refused(store, account_id, bad):
    conf = store.conferences.create(account_id, {"name": "kept"})
    for doc, key, keyword in documents_with(bad):
        for write in (
            lambda d: store.conferences.create(account_id, d),
            lambda d: store.conferences.replace(account_id, conf.id, d),
            lambda d: store.conferences.patch(account_id, conf.id, d),
        ):
            with pytest.raises(ValidationFailed) as info:
                write(doc)
            assert keyword in info.value.data[key], info.value.data
    docs, _ = store.conferences.list(account_id)
    assert [d.data["name"] for d in docs] == ["kept"]


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_numbers_beyond_a_double_are_refused(store, account_id, number):
    with pytest.raises(ValidationFailed) as info:
        store.conferences.create(account_id, {"name": "n", "ui_metadata": {"x": number}})
    assert "number" in info.value.data["ui_metadata.x"]
    with pytest.raises(ValidationFailed):
        store.conferences.create(account_id, {"name": "n", "max_participants": number})
    assert store.conferences.list(account_id)[0] == []


@pytest.mark.parametrize("arg", ["owner_id", "start_key"])
def test_listing_with_nul_in_a_filter_is_a_validation_error(store, account_id, arg):
    store.conferences.create(account_id, {"name": "kept"})
    with pytest.raises(ValidationFailed) as info:
        store.conferences.list(account_id, **{arg: "a\x00b"})
    assert "text" in info.value.data[arg]


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_secrets_that_are_not_text_are_invalid_credentials(store, account_id, bad):
    with pytest.raises(InvalidCredentials):
        store.accounts.authenticate(bad)
    with pytest.raises(InvalidCredentials):
        store.accounts.check_token(bad)
    assert store.accounts.token_expiry(bad) is None
    store.accounts.revoke_token(bad)  # nothing to forget, and no error


@pytest.mark.parametrize("bad", BAD_TEXT, ids=ascii)
def test_account_names_that_are_not_storable_text_are_refused(store, bad):
    with pytest.raises(ValueError, match="account name"):
        store.accounts.create_account("acme" + bad)
    assert store.accounts.list_accounts() == []
