"""One named background greenlet per object: started once, killed without waiting.

The fan-out dispatcher and the token watch each run one loop for the life of the daemon;
this is the start/stop they share, so the greenlet's name (what an operator sees in a
greenlet dump) and the non-blocking stop are defined once.
"""

from __future__ import annotations

from typing import Optional

import gevent


class Background:
    """Base for an object whose ``_run`` loop runs in one greenlet named ``GREENLET_NAME``."""

    GREENLET_NAME = "background"
    _greenlet: Optional[gevent.Greenlet] = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> gevent.Greenlet:
        self._greenlet = gevent.spawn(self._run)
        self._greenlet.name = self.GREENLET_NAME
        return self._greenlet

    def stop(self) -> None:
        # Not blocking: the caller is often shutting down and must not wait on the loop.
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
