"""Accounts, api keys and tokens, on every backend."""

from __future__ import annotations

import hmac
import re

import pytest

from confd.store import InvalidCredentials, NotFound, Store
from confd.store.accounts import TOKEN_CACHE_SECONDS, secret_hash

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def all_cells(store: Store, table: str) -> list[str]:
    cursor = store.db.execute_sql(f"SELECT * FROM {table}")
    return [str(cell) for row in cursor.fetchall() for cell in row]


def test_create_account_returns_ids_and_key(store):
    account, key = store.accounts.create_account("acme", admin=True)
    assert HEX32.match(account["id"])
    assert HEX64.match(key)
    assert account["name"] == "acme"
    assert account["admin"] is True
    assert account["created"].endswith("Z")
    assert store.accounts.get_account(account["id"]) == account


def test_create_account_defaults_to_not_admin(store):
    account, _ = store.accounts.create_account("plain")
    assert account["admin"] is False


def test_create_account_rejects_empty_name(store):
    with pytest.raises(ValueError):
        store.accounts.create_account("  ")


def test_list_accounts_has_no_keys(store, clock):
    a, key_a = store.accounts.create_account("a")
    clock.advance(1)
    b, key_b = store.accounts.create_account("b", admin=True)
    listed = store.accounts.list_accounts()
    assert [x["id"] for x in listed] == [a["id"], b["id"]]
    assert set(listed[0]) == {"id", "name", "admin", "created"}
    assert key_a not in str(listed) and key_b not in str(listed)


def test_keys_and_tokens_are_stored_hashed(store):
    account, key = store.accounts.create_account("acme")
    token = store.accounts.issue_token(account["id"], ttl=60)
    cells = all_cells(store, "accounts") + all_cells(store, "tokens")
    assert not any(key in c for c in cells)
    assert not any(token in c for c in cells)
    assert secret_hash(key) in cells
    assert secret_hash(token) in cells


def test_authenticate(store):
    account, key = store.accounts.create_account("acme")
    assert store.accounts.authenticate(key)["id"] == account["id"]
    with pytest.raises(InvalidCredentials):
        store.accounts.authenticate("0" * 64)
    with pytest.raises(InvalidCredentials):
        store.accounts.authenticate("")


def test_authenticate_uses_constant_time_comparison(store, mocker):
    _, key = store.accounts.create_account("acme")
    spy = mocker.spy(hmac, "compare_digest")
    store.accounts.authenticate(key)
    spy.assert_called_once_with(secret_hash(key), secret_hash(key))
    spy.reset_mock()
    with pytest.raises(InvalidCredentials):
        store.accounts.authenticate("f" * 64)
    assert spy.call_count == 1  # a miss is compared too


def test_token_check_uses_constant_time_comparison(store, account_id, mocker):
    token = store.accounts.issue_token(account_id, ttl=60)
    spy = mocker.spy(hmac, "compare_digest")
    store.accounts.check_token(token)
    spy.assert_called_once_with(secret_hash(token), secret_hash(token))


def test_rotate_key(store):
    account, old = store.accounts.create_account("acme")
    token = store.accounts.issue_token(account["id"], ttl=60)
    new = store.accounts.rotate_key(account["id"])
    assert HEX64.match(new) and new != old
    assert store.accounts.authenticate(new)["id"] == account["id"]
    with pytest.raises(InvalidCredentials):
        store.accounts.authenticate(old)
    with pytest.raises(InvalidCredentials):  # tokens minted with the old key are revoked
        store.accounts.check_token(token)


def test_rotate_key_unknown_account(store):
    with pytest.raises(NotFound) as err:
        store.accounts.rotate_key("a" * 32)
    assert err.value.cause == "a" * 32


def test_get_account_unknown(store):
    with pytest.raises(NotFound):
        store.accounts.get_account("b" * 32)


def test_token_lifecycle_with_fake_clock(store, clock, account_id):
    token = store.accounts.issue_token(account_id, ttl=100)
    assert HEX64.match(token)
    assert store.accounts.check_token(token)["id"] == account_id
    clock.advance(99)
    assert store.accounts.check_token(token)["id"] == account_id
    clock.advance(1)
    with pytest.raises(InvalidCredentials):
        store.accounts.check_token(token)
    assert all_cells(store, "tokens") == []  # the expired token was purged on sight


def test_expired_tokens_purged_when_issuing(store, clock, account_id):
    store.accounts.issue_token(account_id, ttl=10)
    store.accounts.issue_token(account_id, ttl=10)
    clock.advance(11)
    fresh = store.accounts.issue_token(account_id, ttl=10)
    rows = store.db.execute_sql("SELECT token_hash FROM tokens").fetchall()
    assert [r[0] for r in rows] == [secret_hash(fresh)]


def test_check_token_rejects_missing_and_unknown(store, account_id):
    for bad in (None, "", "nope", "0" * 64):
        with pytest.raises(InvalidCredentials):
            store.accounts.check_token(bad)


def test_issue_token_unknown_account(store):
    with pytest.raises(NotFound):
        store.accounts.issue_token("c" * 32, ttl=60)


def test_revoke_token(store, account_id):
    token = store.accounts.issue_token(account_id, ttl=60)
    store.accounts.revoke_token(token)
    with pytest.raises(InvalidCredentials):
        store.accounts.check_token(token)


def test_accounts_and_tokens_survive_reopening(database_url, clock):
    first = Store.from_url(database_url, clock=clock)
    account, key = first.accounts.create_account("acme", admin=True)
    token = first.accounts.issue_token(account["id"], ttl=60)
    first.close()

    second = Store.from_url(database_url, clock=clock)
    try:
        assert second.accounts.authenticate(key)["id"] == account["id"]
        assert second.accounts.check_token(token) == account
        assert second.accounts.list_accounts() == [account]
    finally:
        second.close()


def test_token_expiry_is_reported(store, clock):
    account, _ = store.accounts.create_account("acme")
    token = store.accounts.issue_token(account["id"], ttl=60)
    assert store.accounts.token_expiry(token) == clock() + 60
    assert store.accounts.token_expiry("f" * 64) is None


def test_token_cache_never_outlives_expiry_or_revocation(store, clock, database_url):
    account, _ = store.accounts.create_account("acme")
    short = store.accounts.issue_token(account["id"], ttl=2)
    assert store.accounts.check_token(short)["id"] == account["id"]  # now cached
    clock.advance(2.5)
    with pytest.raises(InvalidCredentials):  # expired, cached or not
        store.accounts.check_token(short)

    token = store.accounts.issue_token(account["id"], ttl=3600)
    assert store.accounts.check_token(token)["id"] == account["id"]
    store.accounts.revoke_token(token)  # in this process: at once
    with pytest.raises(InvalidCredentials):
        store.accounts.check_token(token)

    token = store.accounts.issue_token(account["id"], ttl=3600)
    assert store.accounts.check_token(token)["id"] == account["id"]
    other = Store.from_url(database_url, clock=clock)  # another process, e.g. the CLI
    try:
        other.accounts.rotate_key(account["id"])
    finally:
        other.close()
    clock.advance(TOKEN_CACHE_SECONDS + 0.1)  # elsewhere: within the cache's few seconds
    with pytest.raises(InvalidCredentials):
        store.accounts.check_token(token)
