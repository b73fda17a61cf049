"""Benchmarks: asynqpg-trio side by side with pgqueuer, procrastinate and raw SQL.

Run with ``python -m benchmarks`` (see ``benchmarks/README.md``); not part of the test suite.
"""
