"""The pure core: the task state table, retry and outcome decisions, batching, rescue plans.

Nothing here does I/O, reads a clock or draws randomness of its own (time and jitter come in as
arguments); import-linter keeps trio, anyio, psycopg, opentelemetry, rich, time and random out.
"""
