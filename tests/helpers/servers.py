"""Real servers the scale-out tests start for themselves: PgBouncer in transaction pooling
mode, and a primary with a streaming standby (two PostgreSQL clusters made by ``initdb`` and
``pg_basebackup``), each on free loopback ports, in temporary directories, stopped at the end.

The binaries come from the distribution's packages.  PgBouncer is installed here
(``apt-get install -y pgbouncer``) when it is missing and we may (root, with apt-get);
otherwise the test is skipped with the reason.  Neither server runs as root (both refuse):
as root they run as the ``postgres`` OS user through ``runuser``.  The machine's own cluster
is never reconfigured.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import conninfo

if TYPE_CHECKING:
    from collections.abc import Iterator

PG_BIN = Path(os.environ.get("ASYNQPG_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER_PATHS = (Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer"))


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_as(user: str = "postgres") -> list[str]:
    """The prefix that runs a server as a non-root ``user`` when we are root."""
    if not _as_root():
        return []
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start a server as a non-root user")
    try:
        pwd.getpwnam(user)
    except KeyError:
        pytest.skip(f"running as root and no {user!r} OS user to run the server as")
    return ["runuser", "-u", user, "--"]


def _owned_tmpdir(prefix: str, user: str = "postgres") -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if _as_root():
        shutil.chown(path, user, pwd.getpwnam(user).pw_gid)
    os.chmod(path, 0o700)
    return path


def _socket_owner(host: str) -> str:
    """Who may reach the server: the owner of its Unix socket's directory (the embedded
    server's keeps it private), else ``postgres``."""
    if host.startswith("/") and os.path.isdir(host):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    return "postgres"


def _wait_accepting(dsn: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# --- PgBouncer ------------------------------------------------------------------------------


def pgbouncer_binary() -> Path:
    """PgBouncer's binary, installed from the distribution's packages if missing and we may;
    else the test is skipped with the reason."""
    for path in PGBOUNCER_PATHS:
        if path.exists():
            return path
    if not _as_root() or shutil.which("apt-get") is None:
        pytest.skip(
            "pgbouncer is not installed and cannot be installed here (needs root and apt-get):"
            " install it (Debian/Ubuntu: sudo apt-get install pgbouncer)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "pgbouncer"], env=env, capture_output=True, check=False
    )
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "pgbouncer"],
            env=env,
            capture_output=True,
            check=False,
        )
    for path in PGBOUNCER_PATHS:
        if path.exists():
            return path
    pytest.skip(f"apt-get install pgbouncer failed: {done.stderr.decode(errors='replace')[-500:]}")


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: ``dsn_for(direct)`` turns a direct DSN into one through it."""

    port: int
    pool_size: int

    def dsn_for(self, direct: str) -> str:
        """The same database and user, through PgBouncer."""
        return conninfo.make_conninfo(direct, host="127.0.0.1", port=str(self.port))


@contextlib.contextmanager
def pgbouncer(server_dsn: str, *, pool_size: int = 10) -> Iterator[Bouncer]:
    """Run PgBouncer (``pool_mode = transaction``) in front of ``server_dsn``'s server, with at
    most ``pool_size`` server connections per database; stop it on exit."""
    binary = pgbouncer_binary()
    target = conninfo.conninfo_to_dict(server_dsn)
    host = str(target.get("host") or "127.0.0.1")
    server_port = str(target.get("port") or "5432")
    user = str(target.get("user") or "postgres")
    password = target.get("password")
    port = free_port()
    user_os = _socket_owner(host)
    workdir = _owned_tmpdir("asynqpg-pgbouncer-", user_os)
    login = f" password={password}" if password else ""
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={server_port} user={user}{login}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_db_connections = {pool_size}
reserve_pool_size = 0
max_client_conn = 1000
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""
    )
    if _as_root():
        for child in workdir.iterdir():
            shutil.chown(child, user_os, pwd.getpwnam(user_os).pw_gid)
    with open(workdir / "stdout.log", "wb") as out:
        proc = subprocess.Popen(
            [*_run_as(user_os), str(binary), str(workdir / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        bouncer = Bouncer(port=port, pool_size=pool_size)
        try:
            _wait_accepting(bouncer.dsn_for(server_dsn), 20.0)
        except psycopg.OperationalError as ex:
            log = (workdir / "pgbouncer.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pgbouncer did not start: {ex}\n{log}") from ex
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


# --- a primary and a streaming standby -----------------------------------------------------


@dataclass
class Cluster:
    """One PostgreSQL cluster of ours: its data directory and port."""

    datadir: Path
    port: int
    running: bool = False

    @property
    def dsn(self) -> str:
        """A DSN to its ``postgres`` database."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """A DSN to ``dbname`` on this cluster alone."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def ctl(self, *args: str) -> None:
        """Run ``pg_ctl`` on it."""
        subprocess.run(
            [*_run_as(), str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Start it; returns once it accepts connections."""
        log = self.datadir.parent / f"{self.datadir.name}.log"
        self.ctl("-w", "-l", str(log), "-o", f"-p {self.port} -k '' -h 127.0.0.1", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop it (``fast``: every backend terminated, clients see their connection drop)."""
        self.ctl("-w", "-m", mode, "stop")
        self.running = False

    def promote(self) -> None:
        """Promote a standby; returns once it accepts writes."""
        self.ctl("-w", "promote")


@dataclass
class Replicated:
    """A primary and its streaming standby, and the multi-host DSN that finds the writable
    one (``target_session_attrs=read-write``)."""

    primary: Cluster
    standby: Cluster

    def dsn_for(self, dbname: str) -> str:
        """The multi-host DSN to ``dbname``: both clusters, only a read-write one accepted."""
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port} "
            f"user=postgres dbname={dbname} target_session_attrs=read-write connect_timeout=2"
        )


def require_postgres_binaries() -> None:
    """Skip the test, saying why, when initdb or pg_basebackup is missing."""
    for tool in ("initdb", "pg_ctl", "pg_basebackup"):
        if not (PG_BIN / tool).exists():
            pytest.skip(
                f"{PG_BIN / tool} is missing: install PostgreSQL's server binaries (Debian:"
                " postgresql-15) or point ASYNQPG_PG_BIN at them"
            )


@contextlib.contextmanager
def replicated_pair(*, synchronous: bool = True) -> Iterator[Replicated]:
    """A primary and a streaming standby made from it by ``pg_basebackup``, each on a free
    loopback port; with ``synchronous``, the primary's commits wait for the standby
    (``synchronous_standby_names = '*'``, ``synchronous_commit = on``).  Both are stopped and
    deleted on exit."""
    require_postgres_binaries()
    root = _owned_tmpdir("asynqpg-failover-")
    primary = Cluster(root / "primary", free_port())
    standby = Cluster(root / "standby", free_port())
    try:
        subprocess.run(
            [
                *_run_as(),
                str(PG_BIN / "initdb"),
                "-D",
                str(primary.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        sync = "'*'" if synchronous else "''"
        with open(primary.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                "wal_level = replica\nmax_wal_senders = 4\nfsync = off\n"
                "shared_buffers = 32MB\nmax_connections = 100\n"
                f"synchronous_standby_names = {sync}\n"
            )
        with open(primary.datadir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        primary.start()
        subprocess.run(
            [
                *_run_as(),
                str(PG_BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(standby.datadir),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        # The standby's configuration is a copy of the primary's: once promoted it has no
        # standby of its own, and with the primary's synchronous_standby_names every commit
        # would wait for one forever.
        with open(standby.datadir / "postgresql.conf", "a") as conf:
            conf.write("synchronous_standby_names = ''\n")
        standby.start()
        _wait_accepting(standby.dsn)
        if synchronous:  # the first commit waits until the standby is attached as sync
            deadline = time.monotonic() + 30
            with psycopg.connect(primary.dsn, autocommit=True) as conn:
                while not conn.execute(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
                ).fetchone()[0]:  # type: ignore[index]
                    assert time.monotonic() < deadline, "the standby never became synchronous"
                    time.sleep(0.1)
        yield Replicated(primary, standby)
    finally:
        for cluster in (standby, primary):
            if cluster.running:
                with contextlib.suppress(subprocess.SubprocessError):
                    cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
