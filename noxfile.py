"""Developer sessions.  ``nox -l`` lists them.

Sessions run in the current environment (``venv_backend="none"``): create one virtualenv with
``pip install -e '.[dev]'`` and every session uses it, as ``.ci/run`` does.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "proptests"]

PACKAGE = "asynqpg_trio"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against real PostgreSQL ($ASYNQPG_TEST_DSN, else an embedded one)."""
    session.run("python", "-m", "pytest", "tests", *session.posargs)


@nox.session
def proptests(session: nox.Session) -> None:
    """Run the Hypothesis property suite (profile from $HYPOTHESIS_PROFILE: dev, ci, nightly)."""
    env = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    session.run("python", "-m", "pytest", "proptests", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter layering contracts."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests and property tests."""
    session.run("mypy", "--strict", PACKAGE, "tests", "proptests")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo (embedded PostgreSQL unless $ASYNQPG_DSN is set)."""
    session.run("asynqpg-trio", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks side by side with pgqueuer and procrastinate (installs them)."""
    session.run("python", "-m", "pip", "install", "-q", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)
