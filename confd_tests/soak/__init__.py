"""Load and soak: ``python -m confd_tests.soak --minutes 10``.

Ten fake FreeSWITCH nodes (``FakeFreeSwitch`` around the stateful ``ConferenceModel``, in
processes of their own) host 2,000 participants in 200 conferences whose names are the ids of
conference documents of the soak account; they send start/stop-talking at up to 5,000 events
per second in all, plus a trickle of joins, leaves and mutes.  A real confd (``python -m confd
run``, temp config and SQLite) takes it all in; 50 websocket clients subscribed with
``conference.event.*.*`` count what they get, and a REST load of 200 requests per second reads
lists, conferences and participants and mutes/unmutes.  After N minutes the load pauses, the
tail drains, and confd's view is compared, participant by participant, with every node's own
``json_list``.

Modules: ``run`` (the conductor and the report), ``nodes``, ``clients``, ``restload`` (the child
processes), ``checks`` (pure verdicts: RSS plateau, log scan, drift); the parent/child line
protocol is ``confd_tests.loadtools``, shared with the benchmarks.  Exit status 0 only when
there was no error, no drift and RSS plateaued; the last line of the output is the JSON
summary.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
