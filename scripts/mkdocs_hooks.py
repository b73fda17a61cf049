"""MkDocs hooks of the documentation site (``hooks:`` in ``mkdocs.yml``).

The diagrams the README carries between markers are generated here too, at build time, from
the same renderers (``gen_state_diagram.render`` draws the task state table,
``gen_architecture.BLOCKS`` the layers and the supervision tree): a page says
``<!-- generated: NAME -->`` on a line of its own and gets the current diagram, so the site's
copy can never be stale.  An unknown NAME fails the build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gen_architecture
import gen_state_diagram

#: Marker name -> renderer of the Mermaid source.
GENERATED = {"state-diagram": gen_state_diagram.render, **gen_architecture.BLOCKS}
_MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace each ``<!-- generated: NAME -->`` line with the diagram NAME."""

    def diagram(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATED:
            raise ValueError(
                f"{page.file.src_uri}: no generated block {name!r} (known: {sorted(GENERATED)})"
            )
        return f"```mermaid\n{GENERATED[name]().rstrip()}\n```"

    return _MARKER.sub(diagram, markdown)
