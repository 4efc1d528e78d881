"""Typed errors raised by the storage layer.

The HTTP layer maps them to Kazoo-style envelopes (api.md):

========================  ====  ======================
error                     code  message
========================  ====  ======================
``NotFound``              404   ``bad_identifier``
``Conflict``              409   ``datastore_conflict``
``ValidationFailed``      400   ``validation error``
``InvalidCredentials``    401   ``invalid_credentials``
``Forbidden``             403   ``forbidden``
``DatabaseUnavailable``   503   (database down / locked)
========================  ====  ======================
"""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class NotFound(StoreError):
    """An account or conference id that does not exist (or was deleted)."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"not found: {cause}")
        self.cause = cause


class Conflict(StoreError):
    """The document changed since the revision the caller based its write on."""

    def __init__(self, message: str = "datastore conflict") -> None:
        super().__init__(message)


class ValidationFailed(StoreError):
    """The request body breaks the schema or a datastore rule.

    ``data`` is the Kazoo error body, e.g.
    ``{"name": {"maxLength": {"message": ..., "target": 128, "value": ...}}}``.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(f"validation failed: {sorted(data)}")
        self.data = data


class InvalidCredentials(StoreError):
    """Unknown api key, or a token that is missing, unknown or expired."""

    def __init__(self) -> None:
        super().__init__("invalid credentials")


class Forbidden(StoreError):
    """A valid token that may not act for the account it names (another, non-admin one)."""

    def __init__(self, account_id: str) -> None:
        super().__init__("this token is not valid for that account")
        self.account_id = account_id


class DatabaseUnavailable(StoreError):
    """The database cannot be reached (or stayed locked): the API answers 503."""


class SchemaTooNew(StoreError):
    """The database was written by a newer confd than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than this confd knows ({known}); "
            "upgrade confd"
        )
        self.found = found
        self.known = known
