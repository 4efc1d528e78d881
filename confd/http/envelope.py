"""Kazoo's response envelope (api.md, "Envelope")."""

from __future__ import annotations

import datetime
from typing import Any, Dict, Optional


def timestamp(now: Optional[datetime.datetime] = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def success(
    data: Any,
    *,
    request_id: str,
    node: str,
    version: str,
    auth_token: Optional[str] = None,
    revision: Optional[str] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "status": "success",
        "data": data,
        "request_id": request_id,
        "auth_token": auth_token,
        "node": node,
        "version": version,
        "timestamp": timestamp(),
    }
    if revision is not None:
        body["revision"] = revision
    if extra:
        body.update(extra)
    return body


def error(
    status: int,
    message: str,
    data: Any,
    *,
    request_id: str,
    node: str,
    version: str,
    auth_token: Optional[str] = None,
) -> Dict[str, Any]:
    return {
        "status": "error",
        "error": str(status),
        "message": message,
        "data": data,
        "request_id": request_id,
        "auth_token": auth_token,
        "node": node,
        "version": version,
        "timestamp": timestamp(),
    }
