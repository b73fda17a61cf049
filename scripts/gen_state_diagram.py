"""Print the task state diagram, or refresh it inside a Markdown file.

The diagram is rendered from the transition table in ``asynqpg_trio/_core/_state.py``, so it
cannot drift from the code.

Usage::

    python scripts/gen_state_diagram.py             # print the Mermaid source
    python scripts/gen_state_diagram.py README.md   # rewrite the marked block in place

The file must already contain the markers ``<!-- state-diagram:start -->`` and
``<!-- state-diagram:end -->``; the text between them is replaced by a fenced
``mermaid`` block. No file is ever created. Exit status 1 if the markers are missing,
and with ``--check``, if the file is out of date (nothing is written then).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

START = "<!-- state-diagram:start -->"
END = "<!-- state-diagram:end -->"


def render() -> str:
    """Return the Mermaid source of the state diagram."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    state = importlib.import_module("asynqpg_trio._core._state")
    diagram: str = state.mermaid_diagram()
    return diagram


def splice(text: str, diagram: str) -> str:
    """Return ``text`` with the block between the markers replaced by ``diagram``.

    Raises:
        ValueError: The markers are missing or out of order.
    """
    start = text.find(START)
    end = text.find(END, start + len(START))
    if start < 0 or end < 0:
        raise ValueError(f"markers {START!r} ... {END!r} not found")
    block = f"{START}\n```mermaid\n{diagram}```\n"
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, help="Markdown file to update")
    parser.add_argument("--check", action="store_true", help="fail if PATH is out of date")
    args = parser.parse_args(argv)
    diagram = render()
    if args.path is None:
        sys.stdout.write(diagram)
        return 0
    path: Path = args.path
    try:
        old = path.read_text(encoding="utf-8")
        new = splice(old, diagram)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 1
    if args.check:
        if new != old:
            sys.stderr.write(f"{path}: state diagram is out of date\n")
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
