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

import importlib
import sys
from pathlib import Path

from gen_architecture import run_cli  # the marker-splicing command line, shared


def render() -> str:
    """Return the Mermaid source of the state diagram."""
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    state = importlib.import_module("asynqpg_trio._core._state")
    diagram: str = state.mermaid_diagram()
    return diagram


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    return run_cli({"state-diagram": render}, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
