"""The package's public surface: ``__all__`` and the module's public names agree."""

from __future__ import annotations

import asynqpg_trio


def test_all_matches_public_names() -> None:
    public = {
        name
        for name in dir(asynqpg_trio)
        if not name.startswith("_")
        and name != "annotations"  # from __future__ import annotations
        and not isinstance(getattr(asynqpg_trio, name), type(asynqpg_trio))
    }
    assert set(asynqpg_trio.__all__) == public


def test_public_objects_are_documented() -> None:
    for name in asynqpg_trio.__all__:
        obj = getattr(asynqpg_trio, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_no_private_module_leaks() -> None:
    for name in asynqpg_trio.__all__:
        obj = getattr(asynqpg_trio, name)
        module = getattr(obj, "__module__", "asynqpg_trio")
        assert module.startswith("asynqpg_trio") or module == "builtins" or name.isupper()


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
        "completer.run",
        "run_worker",
        "run_fetcher",
    ):
        assert actor in tree, actor
    # Nesting is the shutdown order: services hold the completer, which holds the work.
    assert tree.index("task group: services") < tree.index("task group: completing")
    assert tree.index("task group: completing") < tree.index("task group: work")
