"""The one "may this token act for account X" (HTTP account paths and websocket subscriptions
both ask ``AccountService.scope``), and the batched re-check of long-lived tokens."""

from __future__ import annotations

import pytest

from confd.store import Store
from confd.store.accounts import TOKEN_QUERY_CHUNK
from confd.store.errors import Forbidden, InvalidCredentials, NotFound


@pytest.fixture
def accounts(store: Store):
    a, _ = store.accounts.create_account("a")
    b, _ = store.accounts.create_account("b")
    root, _ = store.accounts.create_account("root", admin=True)
    tokens = {x["id"]: store.accounts.issue_token(x["id"], 100) for x in (a, b, root)}
    return a, b, root, tokens


def test_own_account_other_account_admin(store, accounts):
    a, b, root, tokens = accounts
    assert store.accounts.scope(tokens[a["id"]], a["id"]) == (a, a)
    with pytest.raises(Forbidden):
        store.accounts.scope(tokens[a["id"]], b["id"])
    with pytest.raises(Forbidden):  # a non-admin cannot probe which accounts exist
        store.accounts.scope(tokens[a["id"]], "f" * 32)
    assert store.accounts.scope(tokens[root["id"]], b["id"]) == (root, b)
    with pytest.raises(NotFound):
        store.accounts.scope(tokens[root["id"]], "f" * 32)
    with pytest.raises(NotFound):  # not even an account id: no query
        store.accounts.scope(tokens[root["id"]], "\ud800")


@pytest.mark.parametrize("token", [None, "", 5, "bogus", "\ud800", "0" * 64, "A" * 64, "a" * 65])
def test_the_token_is_checked_first(store, accounts, token):
    a, _, _, _ = accounts
    with pytest.raises(InvalidCredentials):
        store.accounts.scope(token, a["id"])
    with pytest.raises(InvalidCredentials):
        store.accounts.scope(token, "f" * 32)


def test_valid_tokens_sees_revocations_made_elsewhere_at_once(store, accounts, database_url, clock):
    a, b, root, tokens = accounts
    for t in tokens.values():
        store.accounts.check_token(t)  # cached as valid here
    other = Store.from_url(database_url, clock=clock)  # another process: the accounts CLI
    try:
        other.accounts.rotate_key(a["id"])
    finally:
        other.close()
    asked = set(tokens.values()) | {"bogus", "\ud800"}
    assert store.accounts.valid_tokens(asked) == {tokens[b["id"]], tokens[root["id"]]}
    clock.advance(100)  # expired
    assert store.accounts.valid_tokens(asked) == set()
    assert store.accounts.valid_tokens([]) == set()


def test_valid_tokens_past_one_query_chunk(store, accounts):
    a, _, _, _ = accounts
    many = [store.accounts.issue_token(a["id"], 100) for _ in range(TOKEN_QUERY_CHUNK + 3)]
    assert store.accounts.valid_tokens(many) == set(many)
