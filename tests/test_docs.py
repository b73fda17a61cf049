"""The documentation site (``docs/``, built by ``nox -s docs``) cannot rot: its code is run.

The rule for a fenced block in ``docs/**/*.md``, by its language:

* ``python``: either only snippet includes (``--8<-- "examples/x.py"``, or a section of it,
  ``"FILE:NAME"`` between ``# --8<-- [start:NAME]`` / ``[end:NAME]`` lines) of a file that a
  test runs (its path, or its module's dotted name, appears in a test module), or executed
  here, in a fresh namespace, with ``$ASYNQPG_DSN`` naming a migrated database of its own.
* ``console``: a shell session.  Every ``$ asynqpg-trio ...`` command is parsed by the real
  command-line parser (a renamed command or option fails); those of the tutorial are also run,
  in order, against a fresh database, and the output the page shows is checked against what
  they print (see `test_tutorial`).  Other commands (``pip``, ``createdb``, ``export``) are
  shown, not run: they set up what the test environment already has.
* ``text``: output (the tutorial's ``title="worker output"`` blocks are checked against the
  worker's output).
* ``ini``, ``dockerfile``, ``nginx``, ``yaml``, ``toml``: configuration files for programs the
  tests do not run (systemd, PgBouncer, Docker, nginx, Kubernetes), and ``sql`` statements
  for an operator to run (autovacuum settings); exempt.  The
  ``asynqpg-trio`` command lines of systemd units (``ExecStart=``) and Dockerfiles (``CMD``)
  are parsed like a console block's.
* any other language, or none: an error.

Mermaid diagrams are not written in the pages: ``<!-- generated: NAME -->`` lines are replaced
at build time by ``scripts/mkdocs_hooks.py``, from the code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXEMPT = {"text", "ini", "dockerfile", "nginx", "yaml", "toml", "sql"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<options>[^\n`]*)$")
_SNIPPET = re.compile(r'^--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"$')


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: Path
    line: int
    lang: str
    options: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, start = len(match["indent"]), i
        body: list[str] = []
        i += 1
        while not lines[i].strip().startswith("```"):
            body.append(lines[i][indent:])
            i += 1
        i += 1
        yield Block(page, start + 1, match["lang"], match["options"].strip(), "\n".join(body))


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def snippets(block: Block) -> list[tuple[str, str | None]] | None:
    """The includes a block consists of, or None if it has code of its own."""
    lines = [line for line in block.text.splitlines() if line.strip()]
    found = [_SNIPPET.match(line.strip()) for line in lines]
    if not lines or not all(found):
        return None
    return [(m["path"], m["section"]) for m in found if m is not None]


def commands(text: str) -> list[str]:
    """The ``$ ``-prompted commands of a console block, continuation lines joined."""
    out: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.startswith("$ "):
            continue
        command = line[2:]
        while command.endswith("\\"):
            command = command[:-1] + next(lines).strip()
        out.append(command)
    return out


def cli_argv(command: str) -> list[str] | None:
    """The arguments after ``asynqpg-trio`` in a command line, or None if it runs another
    program (``NAME=value`` prefixes and comments dropped)."""
    words = shlex.split(command, comments=True)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    if not words or Path(words[0]).name != "asynqpg-trio":
        return None
    return words[1:]


# -- every block follows the rule --------------------------------------------------------


def test_every_block_has_a_known_language() -> None:
    wrong = [
        f"{b.where}: ```{b.lang}"
        for b in all_blocks()
        if b.lang not in {"python", "console"} | EXEMPT
    ]
    assert not wrong, f"blocks outside the rule of {__name__}'s docstring: {wrong}"


def test_included_files_exist_and_are_run_by_a_test() -> None:
    tests_text = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    included = 0
    for block in all_blocks():
        for path, section in snippets(block) or []:
            included += 1
            source = ROOT / path
            assert source.is_file(), f"{block.where}: {path} does not exist"
            assert path.startswith(("examples/", "tests/")), f"{block.where}: include {path}?"
            if path.startswith("examples/"):
                module = path.removesuffix(".py").replace("/", ".")
                assert path in tests_text or module in tests_text, f"{block.where}: {path} untested"
            if section is not None:
                text = source.read_text(encoding="utf-8")
                for mark in ("start", "end"):
                    assert f"# --8<-- [{mark}:{section}]" in text, f"{block.where}: {section}"
    assert included >= 10


def _python_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang == "python" and snippets(b) is None]


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: b.where)
def test_python_block_runs(
    block: Block, dsn: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ASYNQPG_DSN", dsn)
    monkeypatch.chdir(tmp_path)
    code = compile(block.text, block.where, "exec")
    exec(code, {"__name__": "__docs__"})


def _console_commands() -> list[tuple[str, str]]:
    found = []
    for block in all_blocks():
        if block.lang == "console" or block.lang in EXEMPT - {"text"}:
            lines = (
                commands(block.text)
                if block.lang == "console"
                else [
                    " ".join(shlex.quote(w) for w in json.loads(m))
                    for m in re.findall(r"^CMD (\[.*\])$", block.text, re.M)
                ]
                + re.findall(r"^ExecStart=(.*)$", block.text, re.M)
            )
            found += [(block.where, line) for line in lines if cli_argv(line) is not None]
    return found


@pytest.mark.parametrize(("where", "command"), _console_commands())
def test_documented_command_parses(where: str, command: str) -> None:
    from asynqpg_trio._cli._main import build_parser

    argv = cli_argv(command)
    assert argv is not None
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {exc}")
    assert callable(args.func)


def test_console_commands_are_found() -> None:
    """The two checks above see what they should (the unit file and the Dockerfile too)."""
    where = {w.split(":")[0] for w, _ in _console_commands()}
    assert {"docs/tutorial.md", "docs/how-to/workers.md", "docs/reference/cli.md"} <= where
    assert len(_python_blocks()) >= 3


# -- the reference covers the public API -------------------------------------------------


def _directives() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for page in (DOCS / "reference").glob("*.md"):
        for name in re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M):
            found[name] = page
    return found


def test_reference_documents_every_public_name() -> None:
    import asynqpg_trio

    directives = _directives()
    missing = [n for n in asynqpg_trio.__all__ if f"asynqpg_trio.{n}" not in directives]
    assert not missing, f"add a ::: directive to a docs/reference page for {missing}"
    # The public submodules are documented whole: every name in their __all__.
    for module in ("asynqpg_trio.sync", "asynqpg_trio.testing", "asynqpg_trio.web"):
        assert module in directives, f"no reference page documents {module}"
    unknown = [
        d
        for d in directives
        if d.count(".") == 1
        and d.split(".")[1] not in asynqpg_trio.__all__
        and d.split(".")[1] not in {"sync", "testing", "web"}
    ]
    assert not unknown, f"reference directives for names that are not public: {unknown}"


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", config, re.M))
    listed = {p.relative_to(DOCS).as_posix() for p in pages()}
    assert listed - nav == set(), "pages missing from mkdocs.yml's nav"
    assert nav - listed == set(), "nav entries without a page"


def test_generated_diagram_markers_name_known_diagrams() -> None:
    import importlib

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        mkdocs_hooks: Any = importlib.import_module("mkdocs_hooks")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    names = [
        m
        for p in pages()
        for m in re.findall(r"^<!-- generated: ([a-z-]+) -->$", p.read_text(), re.M)
    ]
    assert set(names) == set(mkdocs_hooks.GENERATED)
    for name in names:
        assert mkdocs_hooks.GENERATED[name]().strip()


# -- the tutorial, run as a reader runs it -----------------------------------------------


def _expected_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and line.strip() != "..."]


def _matches(expected: str, actual: str) -> bool:
    """``...`` in a documented line stands for anything; runs of spaces are one."""
    parts = [re.escape(" ".join(p.split())) for p in expected.split("...")]
    return re.fullmatch(".*".join(parts), " ".join(actual.split())) is not None


def _assert_shown(expected: list[str], actual: list[str], what: str) -> None:
    """Each documented line matches a line of the output, in order."""
    rest = iter(actual)
    for line in expected:
        if not any(_matches(line, got) for got in rest):
            pytest.fail(f"{what}: the docs show {line!r}; the output was:\n" + "\n".join(actual))


class _Background:
    """A long-running command (the worker, the dashboard), its output collected."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Any, what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            assert self.proc.poll() is None, f"exited early: {self.lines}"
            time.sleep(0.05)
        pytest.fail(f"no {what} within {timeout} s: {self.lines}")

    def stop(self) -> int:
        """Ctrl-C, and wait for the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.close()

    def close(self) -> int:
        """Wait for the process (killed if it does not end), and close its pipe."""
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database without the schema (the tutorial migrates it)."""
    name = f"asynqpg_tut_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


#: Setup steps the tutorial shows and the test environment already has done.
_SETUP = (
    "python3 -m venv .venv && . .venv/bin/activate",
    "pip install '/path/to/asynqpg-trio[web]'",
    "createdb tutorial",
    "export ASYNQPG_DSN=postgresql:///tutorial",
)


def _wait_attempted(dsn: str, timeout: float = 60) -> None:
    """Until every task has been claimed at least once and none is running."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE attempted_at IS NULL OR status = 'running')"
                " FROM asynqpg_tasks"
            ).fetchone()
            if row == (0,):
                return
            time.sleep(0.05)
    pytest.fail("the worker did not take the tasks")


def test_tutorial(empty_dsn: str, tmp_path: Path) -> None:
    """docs/tutorial.md, step by step: its commands run in order against a fresh database,
    from a folder holding ``tutorial.py`` (the example), and what it shows is printed."""
    page = DOCS / "tutorial.md"
    (tmp_path / "tutorial.py").write_text((ROOT / "examples/tutorial.py").read_text())
    env = {**os.environ, "ASYNQPG_DSN": empty_dsn, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    env.pop("PYTHONPATH", None)
    cli = [sys.executable, "-m", "asynqpg_trio._cli"]
    worker: _Background | None = None
    dashboard: _Background | None = None
    worker_shown: list[str] = []
    skipped: list[str] = []
    try:
        for block in blocks(page):
            if block.lang == "text" and block.options == 'title="worker output"':
                worker_shown += _expected_lines(block.text)
                if "stopping gracefully (again to stop now)" in block.text:
                    assert worker is not None
                    _wait_running(empty_dsn)
                    assert worker.stop() == 0, worker.lines
                continue
            if block.lang != "console":
                continue
            text = block.text.replace("\\\n", "")
            chunks = re.split(r"^\$ ", text, flags=re.M)[1:]
            for chunk in chunks:
                command, _, shown = chunk.partition("\n")
                argv = cli_argv(command)
                if argv is None:
                    skipped.append(command)
                    continue
                if argv[0] == "worker":
                    worker = _Background([*cli, *argv], tmp_path, env)
                    worker.wait_for(lambda line: "Ctrl-C to stop" in line, "worker start")
                    _assert_shown(_expected_lines(shown), worker.lines, command)
                    continue
                if argv[0] == "dashboard":
                    dashboard = _Background([*cli, *argv, "--port", "0"], tmp_path, env)
                    listening = dashboard.wait_for(lambda s: "listening on" in s, "dashboard")
                    url = listening.split("listening on ", 1)[1].split()[0]
                    documented = _expected_lines(shown)[0]
                    assert _matches(re.sub(r":\d+/", ":.../", documented), listening)
                    _check_dashboard(url, empty_dsn)
                    assert dashboard.stop() == 0, dashboard.lines
                    continue
                if worker is not None:
                    _wait_attempted(empty_dsn)
                proc = subprocess.run(
                    [*cli, *argv],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert proc.returncode == 0, f"{command}: {proc.stderr}"
                _assert_shown(_expected_lines(shown), proc.stdout.splitlines(), command)
    finally:
        for running in (worker, dashboard):
            if running is not None and running.proc.poll() is None:
                running.proc.kill()
            if running is not None:
                running.close()
    assert skipped == list(_SETUP), "a new command in the tutorial: run it here or list it"
    assert worker is not None and dashboard is not None
    assert worker.proc.returncode == 0
    for line in worker_shown:
        assert any(_matches(line, got) for got in worker.lines), (line, worker.lines)


def _wait_running(dsn: str, timeout: float = 60) -> None:
    """Until the slow task of step 5 is running (Ctrl-C is pressed while it runs)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute("SELECT 1 FROM asynqpg_tasks WHERE status = 'running'").fetchone():
                return
            time.sleep(0.05)
    pytest.fail("the slow task never ran")


def _check_dashboard(url: str, dsn: str) -> None:
    """Task 2 is completed after two attempts, and the dashboard shows the first one's error."""
    deadline = time.monotonic() + 60
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute("SELECT status FROM asynqpg_tasks WHERE id = 2").fetchone() != (
            "completed",
        ):
            assert time.monotonic() < deadline, "task 2 did not complete"
            time.sleep(0.05)
    with urllib.request.urlopen(f"{url}api/tasks/2", timeout=10) as response:
        task = json.load(response)["data"]
    assert task["status"] == "completed"
    assert task["messages"][0].startswith("ConnectionError: the mail server did not answer")
    with urllib.request.urlopen(f"{url}tasks/2", timeout=10) as response:
        page = response.read().decode()
    assert "ConnectionError: the mail server did not answer" in page


def test_health_worker_example(dsn: str, sync_conn: Any) -> None:
    """examples/health_worker.py (docs/how-to/workers.md): 200 with the statistics while it
    runs, 503 while it shuts down gracefully, and the running task still completes."""
    from asynqpg_trio import Task
    from asynqpg_trio.sync import enqueue

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    worker = _Background(
        [sys.executable, "examples/health_worker.py", dsn, "--port", "0"], ROOT, env
    )
    try:
        line = worker.wait_for(lambda s: s.startswith("health on "), "the health endpoint")
        url = line.removeprefix("health on ")
        code, health = _get(url)
        assert (code, health["status"]) == (200, "ok")
        assert health["statistics"]["completed"] == 0
        task_id = enqueue(sync_conn, Task("work", b"2"))
        deadline = time.monotonic() + 60
        while sync_conn.execute(
            "SELECT status FROM asynqpg_tasks WHERE id = %s", [task_id]
        ).fetchone() != ("running",):
            assert time.monotonic() < deadline, "the task never ran"
            time.sleep(0.05)
        worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        # The shutdown waits for the running task: the probe says so meanwhile (once the
        # signal has arrived).
        deadline = time.monotonic() + 30
        while (answer := _get(url))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert answer == (503, {"status": "stopping"})
        assert worker.close() == 0, worker.lines
    finally:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.close()
    assert worker.lines[-2:] == [f"worked 2 s (task {task_id})", "stopped"]
    status = sync_conn.execute("SELECT status FROM asynqpg_tasks WHERE id = %s", [task_id])
    assert status.fetchone() == ("completed",)


def _get(url: str) -> tuple[int, Any]:
    """The status and JSON body of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)
