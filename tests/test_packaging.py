"""What ships: the migration files byte for byte (checksums) and the SQL files in the wheel."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

from asynqpg_trio._pg._migrate import MIGRATIONS

ROOT = Path(__file__).resolve().parent.parent

#: sha256 of each shipped migration file.  A database records the checksum of every migration it
#: applied and refuses to start (SchemaError) if the shipped text differs, so these files are
#: never edited, reformatted or re-encoded: moving them is fine, changing a byte is not.
PINNED = {
    "0001_initial.sql": "b2c527ee2a0605320536bd0809237ed4e34592e201844056b72c46aeef0d573a",
    "0002_queues.sql": "64fcad7c7393f793bcc3927d582bb5893539b46d6d86affd59dfdbf3c946ef00",
    "0003_schedules.sql": "8e2199083f3e80f4dce2c052ca0e9adb43653b2ba244e0c9752d484034ada5dc",
    "0004_unique.sql": "bcab9c6f93bcafb15a96ce23bd0573405334fa107e7854e83c5a5e7d68c9eb3f",
    "0005_results.sql": "439628a572e0390a23471507b9b7be28c57cf7b7f84ee7d6ead9af8b9caa7f7e",
    "0006_consumers.sql": "36e43eca2611572b6063d9d320398552a88d5939860f9e2b70e098e560155006",
    "0007_list_indexes.sql": "ef8ca2f3fd3b5fb2aaa3395afcd866f43c5dae23dbba03288b74dd8ab99dec82",
    "0008_autovacuum.sql": "de83a357a87fe8c3d9761616ba4229174bb40dc79cf2b88ea1bfc99b5608d433",
}

SQL_FILES = {
    "asynqpg_trio/_pg/sql/client.sql",
    "asynqpg_trio/_pg/sql/maintenance.sql",
    "asynqpg_trio/_pg/sql/schedules.sql",
    "asynqpg_trio/_pg/sql/schema.sql",
    "asynqpg_trio/_pg/sql/tasks.sql",
    "asynqpg_trio/_pg/sql/queues.sql",
    "asynqpg_trio/_pg/migrations/0001_initial.sql",
    "asynqpg_trio/_pg/migrations/0002_queues.sql",
    "asynqpg_trio/_pg/migrations/0003_schedules.sql",
    "asynqpg_trio/_pg/migrations/0004_unique.sql",
    "asynqpg_trio/_pg/migrations/0005_results.sql",
    "asynqpg_trio/_pg/migrations/0006_consumers.sql",
    "asynqpg_trio/_pg/sql/consumers.sql",
    "asynqpg_trio/_pg/migrations/0007_list_indexes.sql",
    "asynqpg_trio/_pg/migrations/0008_autovacuum.sql",
}


def test_migration_files_are_pinned() -> None:
    folder = resources.files("asynqpg_trio._pg").joinpath("migrations")
    shipped = {
        entry.name: hashlib.sha256(entry.read_bytes()).hexdigest()
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    }
    assert shipped == PINNED


def test_recorded_checksums_are_the_file_hashes() -> None:
    for migration in MIGRATIONS:
        name = f"{migration.version:04d}_{migration.name}.sql"
        assert migration.checksum == PINNED[name]


@pytest.mark.slow
def test_wheel_contains_the_sql_files(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"),
            *("--quiet", "--wheel-dir", str(tmp_path), str(ROOT)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("asynqpg_trio-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert names >= SQL_FILES
        pinned = archive.read("asynqpg_trio/_pg/migrations/0001_initial.sql")
    assert hashlib.sha256(pinned).hexdigest() == PINNED["0001_initial.sql"]
    assert not {n for n in names if n.startswith(("asynqpg_trio/_sql/", "asynqpg_trio/_mig"))}
