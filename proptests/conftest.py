"""Hypothesis profiles for the property tests, and the database fixtures of the stateful test.

Choose a profile with the ``HYPOTHESIS_PROFILE`` environment variable: ``dev`` (the default,
quick), ``ci`` (more examples, no deadline) or ``nightly`` (many examples).  The database
fixtures are the test suite's (``tests/conftest.py``): a server from ``$ASYNQPG_TEST_DSN`` or
an embedded one, a migrated template, and ``dsn``, a fresh clone per test.
"""

from __future__ import annotations

import os

from hypothesis import settings

from tests.conftest import dsn, server_dsn, template_db

__all__ = ["dsn", "server_dsn", "template_db"]

settings.register_profile("dev", max_examples=100)
settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
