"""The package layout: layered subpackages, small modules, entry points that still resolve.

import-linter (``lint-imports``, in the lint session) checks who may import whom; these tests
check what it cannot: that no private module sits flat at the top level again, and that modules
stay small.  The size exceptions below are debt, listed so that it shows: each one may not grow,
and the test fails once it is fixed so that the entry is removed.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "asynqpg_trio"

#: What may sit at the top of the package: the public surface and the layered subpackages.
TOP_FILES = {"__init__.py", "sync.py", "py.typed"}
SUBPACKAGES = {"_core", "_pg", "_telemetry", "_maintenance", "_consumer", "_api", "_cli", "web"}

MAX_LINES = 450
#: Modules over MAX_LINES today, with their size when the limit was set (they may not grow).
OVERSIZED = {
    "_api/_client.py": 454,
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_flat_private_modules() -> None:
    top = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    files = {name for name in top if not (PACKAGE / name).is_dir()}
    dirs = top - files
    assert files == TOP_FILES, "private modules belong in a subpackage, not at the top level"
    assert dirs == SUBPACKAGES
    for name in dirs:
        assert (PACKAGE / name / "__init__.py").is_file(), f"{name} is not a package"


def test_modules_stay_small() -> None:
    sizes = {
        p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in _modules()
    }
    too_big = {name: n for name, n in sizes.items() if n > OVERSIZED.get(name, MAX_LINES)}
    assert not too_big, f"split these modules (limit {MAX_LINES} lines): {too_big}"
    fixed = [name for name in OVERSIZED if sizes.get(name, 0) <= MAX_LINES]
    assert not fixed, f"no longer oversized, remove from OVERSIZED: {fixed}"


def test_console_script_resolves() -> None:
    (script,) = [
        ep for ep in metadata.entry_points(group="console_scripts") if ep.name == "asynqpg-trio"
    ]
    assert script.value == "asynqpg_trio._cli:main"
    assert callable(script.load())


@pytest.mark.parametrize("module", ["asynqpg_trio._cli", "asynqpg_trio._cli._web"])
def test_runnable_with_python_m(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "usage:" in proc.stdout
