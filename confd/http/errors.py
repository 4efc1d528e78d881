"""The API's error types, and the one mapping from domain errors to them.

Views raise ``ApiError`` subclasses (or let a store / conference-control error through);
``app.py`` renders every one of them in a single place via ``translate``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from confd.conferences import control
from confd.store import errors as store_errors

# Short codes and texts of api.md's error table.
MSG_DATASTORE_UNAVAILABLE = "datastore_unavailable"
MSG_BAD_IDENTIFIER = "bad identifier"
MSG_INVALID_CREDENTIALS = "invalid credentials"


class ApiError(Exception):
    """An error answer: HTTP status, Kazoo's short message code and a data object."""

    status = 500
    message = "internal_error"

    def __init__(self, data: Optional[Dict[str, Any]] = None, message: Optional[str] = None):
        super().__init__(message or self.message)
        self.data = data if data is not None else {}
        if message is not None:
            self.message = message


class InvalidJson(ApiError):
    status, message = 400, "invalid_json"


class InvalidRequest(ApiError):
    status, message = 400, "invalid_request"


class ValidationError(ApiError):
    status, message = 400, "validation error"


class InvalidParticipantId(ApiError):
    status, message = 400, "invalid_participant_id"

    def __init__(self, cause: str) -> None:
        super().__init__({"cause": cause})


class InvalidAction(ApiError):
    status, message = 400, "invalid_action"


class InvalidCredentials(ApiError):
    status, message = 401, "invalid_credentials"

    def __init__(self) -> None:
        super().__init__({"message": MSG_INVALID_CREDENTIALS})


class Forbidden(ApiError):
    status, message = 403, "forbidden"


class BadIdentifier(ApiError):
    status, message = 404, "bad_identifier"

    def __init__(self, cause: str) -> None:
        super().__init__({"cause": cause, "message": MSG_BAD_IDENTIFIER})


class NotFound(ApiError):
    status, message = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, message = 405, "invalid_method"


class DatastoreConflict(ApiError):
    status, message = 409, "datastore_conflict"


class ConferenceNotRunning(ApiError):
    status, message = 409, "conference_not_running"


class RequestTooLarge(ApiError):
    status, message = 413, "request_too_large"


class FreeswitchError(ApiError):
    status, message = 502, "freeswitch_error"


class FocusUnavailable(ApiError):
    status, message = 503, "focus_unavailable"


class ServiceUnavailable(ApiError):
    status, message = 503, "service_unavailable"


class DatastoreUnavailable(ApiError):
    status, message = 503, MSG_DATASTORE_UNAVAILABLE


class InternalError(ApiError):
    status, message = 500, "internal_error"


def translate(exc: BaseException) -> Optional[ApiError]:
    """The ``ApiError`` a store or conference-control error means, or None for anything else
    (which is then an unexpected error: a 500 envelope)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, store_errors.NotFound):
        return BadIdentifier(exc.cause)
    if isinstance(exc, store_errors.Conflict):
        return DatastoreConflict({"message": "the document changed since that revision"})
    if isinstance(exc, store_errors.ValidationFailed):
        return ValidationError(exc.data)
    if isinstance(exc, store_errors.InvalidCredentials):
        return InvalidCredentials()
    if isinstance(exc, store_errors.DatabaseUnavailable):
        return DatastoreUnavailable({"message": "the database is not reachable"})
    if isinstance(exc, control.FocusUnavailable):
        return FocusUnavailable({"focus": exc.focus})
    if isinstance(exc, control.CommandRejected):
        return FreeswitchError({"reply": exc.reply.strip()})
    return None
