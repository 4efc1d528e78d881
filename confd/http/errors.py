"""The API's error types.  Views raise them; ``app.py`` renders every one in a single place."""

from __future__ import annotations

from typing import Any, Dict, Optional


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


class InvalidAction(ApiError):
    status, message = 400, "invalid_action"


class InvalidCredentials(ApiError):
    status, message = 401, "invalid_credentials"

    def __init__(self) -> None:
        super().__init__({"message": "invalid credentials"})


class Forbidden(ApiError):
    status, message = 403, "forbidden"


class BadIdentifier(ApiError):
    status, message = 404, "bad_identifier"

    def __init__(self, cause: str) -> None:
        super().__init__({"cause": cause, "message": "bad identifier"})


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


class InternalError(ApiError):
    status, message = 500, "internal_error"
