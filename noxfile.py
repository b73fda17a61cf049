"""Developer sessions.  ``nox -l`` lists them.

Every session runs with the interpreter that runs nox itself, and with the tools installed
beside it: ``.venv/bin/nox -s tests`` uses ``.venv``'s Python, ruff and mypy without the
virtualenv being activated, and a nox from elsewhere fails at once saying what to install.
Make that virtualenv with ``python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'``, as
the README's test command does.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests", "faults", "proptests"]

PACKAGE = "asynqpg_trio"
#: The interpreter running nox, and the scripts folder of its environment (not resolved: a
#: virtualenv's python is a symlink to the base interpreter).
PYTHON = sys.executable
BIN = Path(sys.executable).parent
#: Debian's Chromium, which the dashboard's browser tests drive (never a downloaded build).
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TESTS = "tests/test_web_browser.py"


def _require_dev_extra(session: nox.Session) -> None:
    """Stop with one line when nox runs outside an environment with the ``dev`` extra."""
    missing = [
        m for m in ("asynqpg_trio", "pytest", "ruff", "mypy", "basedpyright") if not _importable(m)
    ]
    if missing:
        session.error(
            f"{PYTHON} lacks {', '.join(missing)}: run nox from the project's virtualenv "
            "(python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/nox)"
        )


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _tool(name: str) -> str:
    """A console script installed beside the interpreter running nox."""
    return str(BIN / name)


def _ensure_chromium(session: nox.Session) -> None:
    """The browser tests need Debian's Chromium: install it where we may, else stop with one
    line saying what to do."""
    if CHROMIUM.exists():
        return
    can_install = (
        sys.platform == "linux"
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("apt-get") is not None
    )
    if not can_install:
        session.error(
            f"the dashboard's browser tests need Chromium at {CHROMIUM}: install it "
            "(Debian/Ubuntu: sudo apt-get install chromium) or leave them out with "
            f"`nox -s tests -- --deselect {BROWSER_TESTS}`"
        )
    session.log(f"{CHROMIUM} is missing: installing Debian's chromium for the browser tests")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", "-qq", external=True, env=env)
    session.run("apt-get", "install", "-y", "-qq", "chromium", external=True, env=env, silent=True)


def _deselects_browser_tests(posargs: list[str]) -> bool:
    return any(BROWSER_TESTS in arg for arg in posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against real PostgreSQL ($ASYNQPG_TEST_DSN, else an embedded one)."""
    _require_dev_extra(session)
    if not _deselects_browser_tests(session.posargs):
        _ensure_chromium(session)
    # No paths given: pytest's ``testpaths`` (tests/); paths given: only those.  The fault
    # scenarios have a session of their own.
    session.run(PYTHON, "-m", "pytest", "-m", "not faults", *session.posargs, external=True)


@nox.session
def faults(session: nox.Session) -> None:
    """Run the fault-injection scenarios (tests/faults): worker processes killed, servers
    restarted, connections stalled, signals under load.  Real time by design: each scenario
    runs real processes against a real server and waits on them."""
    _require_dev_extra(session)
    session.run(
        PYTHON, "-m", "pytest", "tests/faults", "-m", "faults", *session.posargs, external=True
    )


@nox.session
def proptests(session: nox.Session) -> None:
    """Run the Hypothesis property suite (profile from $HYPOTHESIS_PROFILE: dev, ci, nightly)."""
    _require_dev_extra(session)
    env = {"HYPOTHESIS_PROFILE": os.environ.get("HYPOTHESIS_PROFILE", "ci")}
    session.run(PYTHON, "-m", "pytest", "proptests", *session.posargs, env=env, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, and the import-linter layering contracts."""
    _require_dev_extra(session)
    session.run(PYTHON, "-m", "ruff", "check", ".", external=True)
    session.run(PYTHON, "-m", "ruff", "format", "--check", ".", external=True)
    session.run(_tool("lint-imports"), external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, tests and property tests; 100 % public type completeness
    (pyright --verifytypes)."""
    _require_dev_extra(session)
    session.run(PYTHON, "-m", "mypy", "--strict", PACKAGE, "tests", "proptests", external=True)
    _verify_types(session)


def _verify_types(session: nox.Session) -> None:
    """``basedpyright --verifytypes`` over the package as installed from its wheel.

    --verifytypes sees neither the source tree nor the editable install (hatch's
    ``dev-mode-exact`` is an import hook), so the wheel is built and unpacked into a temporary
    folder put on PYTHONPATH.  The verifier ignores ``--pythonpath``: it asks the ``python``
    first on PATH for its search paths, so this environment's scripts folder goes first; else
    psycopg, trio and OpenTelemetry do not resolve and ``--ignoreexternal`` waves through every
    type taken from them.  That flag leaves those packages' own unknowns to them; any error,
    i.e. a completeness below 100 %, fails the session.
    """
    with tempfile.TemporaryDirectory(prefix="asynqpg-verifytypes-") as tmp:
        wheel_args = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp, "."]
        session.run(PYTHON, "-m", "pip", *wheel_args, external=True, silent=True)
        (wheel,) = Path(tmp).glob("*.whl")
        site = Path(tmp, "site")
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        env = {"PYTHONPATH": str(site), "PATH": os.pathsep.join((str(BIN), os.environ["PATH"]))}
        verify = ["--verifytypes", PACKAGE, "--ignoreexternal"]
        with session.chdir(tmp):  # away from the source tree, which is not what users install
            session.run(_tool("basedpyright"), *verify, env=env, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo (embedded PostgreSQL unless $ASYNQPG_DSN is set)."""
    _require_dev_extra(session)
    session.run(_tool("asynqpg-trio"), "demo", *session.posargs, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks side by side with pgqueuer and procrastinate (installs them)."""
    _require_dev_extra(session)
    session.run(
        PYTHON, "-m", "pip", "install", "-q", "-r", "benchmarks/requirements.txt", external=True
    )
    session.run(PYTHON, "-m", "benchmarks", *session.posargs, external=True)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (a broken link, a missing reference or an
    unreadable docstring fails it) into site/, or into the folder given after ``--``."""
    _require_dev_extra(session)
    if not _importable("mkdocs") or not _importable("mkdocstrings_handlers.python"):
        session.error(f"{PYTHON} lacks mkdocs or mkdocstrings: pip install -e '.[docs]'")
    site = session.posargs[0] if session.posargs else "site"
    env = {"NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build problem
    session.run(PYTHON, "-m", "mkdocs", "build", "--strict", "-d", site, env=env, external=True)
