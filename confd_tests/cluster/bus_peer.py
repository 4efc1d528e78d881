"""One ``confd.cluster.bus.Bus`` in a process of its own, driven by test_bus.py.

py-amqp cooperates with gevent only on monkey-patched sockets, and the test process is not
patched, so each instance of the tests runs here: ``python -m confd_tests.cluster.bus_peer
URL CLUSTER INSTANCE`` patches, starts the Bus, prints ``PORT <n>`` and serves JSON lines on
127.0.0.1:<n>: one request line, one answer line (``{"ok": ...}`` or ``{"error": <exception
type>, "message": ..., "elapsed": <s>}``).  Operations:

* ``status``: connected, connected_at, error, patterns, requests, timeouts;
* ``request`` (route, body, timeout) / ``gather`` (body, expect, timeout): the Bus's own, with
  the seconds they took;
* ``spawn_request`` (route, body, timeout) -> a ticket; ``result`` (ticket) waits for it;
* ``bind`` (patterns) / ``unbind`` (patterns);
* ``events``: what ``Incoming`` handed on so far (every field of each ``Published``);
* ``handled``: the request bodies this instance's handler received.

Its handler answers ``{"instance", "owned": [], "echo": <the request>}``, after sleeping
``body["sleep_for"][<this instance>]`` seconds when the request says so.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Dict, List  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from confd.cluster.bus import Bus  # noqa: E402
from confd.cluster.events import Incoming  # noqa: E402


def main() -> None:
    url, cluster, instance = sys.argv[1:4]
    handled: List[Dict[str, Any]] = []
    events: List[Dict[str, Any]] = []
    tickets: Dict[int, gevent.Greenlet] = {}

    def handle(body: Dict[str, Any]) -> Dict[str, Any]:
        handled.append(body)
        sleep = (body.get("sleep_for") or {}).get(instance, 0)
        if sleep:
            gevent.sleep(float(sleep))
        return {"instance": instance, "owned": [], "echo": body}

    def offer(pub: Any) -> None:
        events.append(
            {
                "name": pub.name,
                "conference_id": pub.conference_id,
                "call_id": pub.call_id,
                "routing_key": pub.routing_key,
                "account_hint": pub.account_hint,
                "owner_pending": pub.owner_pending,
                "at": pub.at,
                "body": pub.body().decode("utf-8"),
            }
        )

    bus: Bus = None  # type: ignore[assignment]
    incoming = Incoming(instance, offer, since=lambda: bus.connected_at)
    bus = Bus(url, cluster=cluster, instance=instance, handle=handle, on_event=incoming)
    bus.start()

    def timed(fn, *args):
        t0 = time.monotonic()
        try:
            value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported to the test as it is
            return {
                "error": type(exc).__name__,
                "message": str(exc),
                "elapsed": time.monotonic() - t0,
            }
        return {"ok": value, "elapsed": time.monotonic() - t0}

    def run(op: Dict[str, Any]) -> Dict[str, Any]:
        name = op["op"]
        if name == "status":
            return {
                "ok": {
                    "connected": bus.connected,
                    "connected_at": bus.connected_at,
                    "error": bus.error,
                    "patterns": bus.patterns,
                    "requests": bus.requests,
                    "timeouts": bus.timeouts,
                }
            }
        if name == "request":
            return timed(bus.request, op["route"], op["body"], op["timeout"])
        if name == "gather":
            return timed(bus.gather, op["body"], set(op["expect"]), op["timeout"])
        if name == "spawn_request":
            ticket = len(tickets) + 1
            tickets[ticket] = gevent.spawn(
                timed, bus.request, op["route"], op["body"], op["timeout"]
            )
            return {"ok": ticket}
        if name == "result":
            return tickets[op["ticket"]].get()
        if name == "bind":
            return timed(bus.bind, op["patterns"])
        if name == "unbind":
            return timed(bus.unbind, op["patterns"])
        if name == "events":
            return {"ok": list(events)}
        if name == "handled":
            return {"ok": list(handled)}
        return {"error": "KeyError", "message": "unknown op %r" % name}

    def serve(sock: Any, _address: Any) -> None:
        f = sock.makefile("rwb")
        for line in f:
            f.write(json.dumps(run(json.loads(line))).encode() + b"\n")
            f.flush()

    server = StreamServer(("127.0.0.1", 0), serve)
    server.start()
    print("PORT %d" % server.server_port, flush=True)
    # Until the test closes stdin (or dies): then stop.
    gevent.get_hub().threadpool.spawn(sys.stdin.read).get()
    bus.stop(timeout=2)


if __name__ == "__main__":
    main()
