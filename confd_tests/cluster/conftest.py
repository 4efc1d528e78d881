"""The cluster tests that need the real services -- PostgreSQL (CONFD_TEST_DATABASE_URL) and
RabbitMQ (CONFD_TEST_AMQP_URL) -- are collected only when both are named, like the AMQP tests
(confd_tests/events/conftest.py): not collected-and-skipped otherwise.  ``.ci/run`` names both
and fails loudly when either service is missing."""

import os

NEEDS_SERVICES = [
    "test_bus.py",
    "test_claims.py",
    "test_cli_cluster.py",
    "test_cluster.py",
    "test_harness.py",
    "test_names.py",
    "test_scoping.py",
]

_HAVE_SERVICES = bool(
    os.environ.get("CONFD_TEST_DATABASE_URL") and os.environ.get("CONFD_TEST_AMQP_URL")
)
collect_ignore = [] if _HAVE_SERVICES else NEEDS_SERVICES
