"""Tests of several confd instances on PostgreSQL and RabbitMQ (cluster.md).

``proxy``: ``FaultProxy``, the TCP forwarder whose cuts and pauses stand for broker and
database faults.  ``harness``: ``Cluster``, a whole multi-instance set-up (fake FreeSWITCH
nodes, a PostgreSQL schema, confd instances as child processes) for the tests and the
benchmark.
"""
