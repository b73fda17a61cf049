"""The package's public surface: ``__all__`` and the module's public names agree."""

from __future__ import annotations

from types import ModuleType

import pytest

import asynqpg_trio
import asynqpg_trio.testing

PUBLIC_MODULES = pytest.mark.parametrize(
    "module", [asynqpg_trio, asynqpg_trio.testing], ids=lambda m: m.__name__
)


@PUBLIC_MODULES
def test_all_matches_public_names(module: ModuleType) -> None:
    public = {
        name
        for name in dir(module)
        if not name.startswith("_")
        and name != "annotations"  # from __future__ import annotations
        and not isinstance(getattr(module, name), ModuleType)
    }
    assert set(module.__all__) == public


@PUBLIC_MODULES
def test_public_objects_are_documented(module: ModuleType) -> None:
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"
        for attr, member in vars(obj).items() if isinstance(obj, type) else ():
            if callable(member) and not attr.startswith("_"):
                assert member.__doc__, f"{name}.{attr} has no docstring"


@PUBLIC_MODULES
def test_no_private_module_leaks(module: ModuleType) -> None:
    for name in module.__all__:
        obj = getattr(module, name)
        where = getattr(obj, "__module__", "asynqpg_trio")
        assert where.startswith("asynqpg_trio") or where == "builtins" or name.isupper()


def test_readme_state_diagram_is_current() -> None:
    """The README's diagram is generated from the state table; regenerate it when stale."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "scripts/gen_state_diagram.py", "--check", "README.md"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_architecture_diagrams_are_current() -> None:
    """The README's tree and layer diagrams are drawn from the tree function's source and the
    import-linter contracts; regenerate them when stale."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "scripts/gen_architecture.py", "--check", "README.md"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_architecture_tree_names_every_actor() -> None:
    """Every actor the consumer runs appears in the drawn tree (the drawing reads the code)."""
    import runpy
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = runpy.run_path(str(root / "scripts" / "gen_architecture.py"))
    tree: str = script["render_tree"]()
    for actor in (
        "serve_listener",
        "run_lease_keeper",
        "run_sampler",
        "run_watchdog",
        "run_maintenance",
        "scheduler.run",
        "completer.run",
        "run_worker",
        "run_fetcher",
    ):
        assert actor in tree, actor
    # Nesting is the shutdown order: services hold the completer, which holds the work.
    assert tree.index("task group: services") < tree.index("task group: completing")
    assert tree.index("task group: completing") < tree.index("task group: work")
