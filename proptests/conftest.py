"""Hypothesis profiles for the property tests of the pure core.

Choose one with the ``HYPOTHESIS_PROFILE`` environment variable: ``dev`` (the default,
quick), ``ci`` (more examples, no deadline) or ``nightly`` (many examples).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=100)
settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
