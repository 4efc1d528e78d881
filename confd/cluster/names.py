"""Names and keys shared by every instance of a cluster (cluster.md, "One owner per node").

Pure: no I/O.  Two clusters sharing a broker and a database differ by ``cluster.name``, which
prefixes everything here.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Tuple

APPLICATION_PREFIX = "confd:"  # PostgreSQL application_name of an instance's claims session
EVENTS_EXCHANGE = "conference"  # events.md: what AMQP consumers bind to, unchanged in a cluster
ROUTE_ALL = "all"  # requests every instance answers
ROUTE_INSTANCE = "instance."  # + name: requests for one instance


def lock_key(cluster: str, name: str) -> int:
    """The advisory-lock key of node ``name``: the first 8 bytes of SHA-256 of
    ``"<cluster>:<name>"`` as a signed 64-bit integer."""
    digest = hashlib.sha256(("%s:%s" % (cluster, name)).encode("utf-8")).digest()
    return struct.unpack(">q", digest[:8])[0]


def instance_key(cluster: str, instance: str) -> int:
    """The advisory-lock key an instance holds while it is live (one instance per name)."""
    return lock_key(cluster, "instance:" + instance)


def lock_parts(key: int) -> Tuple[int, int]:
    """(classid, objid) under which ``pg_locks`` shows a bigint advisory lock on ``key``."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def application_name(instance: str) -> str:
    return APPLICATION_PREFIX + instance


def instance_of(application: str) -> str:
    """The instance name in an application_name (``""`` when it is not an instance's)."""
    if application.startswith(APPLICATION_PREFIX):
        return application[len(APPLICATION_PREFIX) :]
    return ""


def rpc_exchange(cluster: str) -> str:
    return cluster + ".rpc"


def rpc_queue(cluster: str, instance: str) -> str:
    return "%s.rpc.%s" % (cluster, instance)


def events_queue(cluster: str, instance: str) -> str:
    return "%s.events.%s" % (cluster, instance)


def instance_route(instance: str) -> str:
    return ROUTE_INSTANCE + instance
