"""Print the architecture diagrams, or refresh them inside a Markdown file.

Two Mermaid diagrams, both rendered from the code so they cannot drift from it:

* the layers, from the import-linter layer contracts in ``pyproject.toml`` (which
  ``lint-imports`` enforces): the package's subpackages top to bottom, and each subpackage's
  own layers inside it;
* the consumer's supervision tree, from the source of the one function that builds it
  (`TREE_FUNCTION`): every task group it opens, nested as in the code, with the actors each
  starts.

Usage::

    python scripts/gen_architecture.py             # print both diagrams
    python scripts/gen_architecture.py README.md   # rewrite the marked blocks in place
    python scripts/gen_architecture.py --check README.md

The file must already contain the markers ``<!-- layers:start -->`` / ``<!-- layers:end -->``
and ``<!-- tree:start -->`` / ``<!-- tree:end -->``.  Exit status 1 if markers are missing,
and with ``--check``, if the file is out of date (nothing is written then).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "asynqpg_trio"
#: Where the supervision tree is built: a module path and the function's name.
TREE_FUNCTION = (ROOT / PACKAGE / "_consumer" / "_tree.py", "serve_tree")
#: Calls that open a task group.
TASK_GROUP_OPENERS = {"create_task_group", "open_nursery"}
#: Methods of a task group that start a child.
STARTERS = {"start_soon", "start"}


def _layer_names(layer: str) -> list[str]:
    return [name.strip().strip("()") for name in layer.split("|")]


def render_layers(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The layer diagram, from the import-linter layer contracts: one box per layer of the
    package, top to bottom (a layer imports only from the layers below it); a subpackage with
    layers of its own lists them, one line each, top to bottom."""
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layered = {
        c["containers"][0]: c["layers"]
        for c in contracts
        if c.get("type") == "layers" and len(c.get("containers", ())) == 1
    }
    lines = ["flowchart TD"]
    for index, layer in enumerate(layered[PACKAGE]):
        lines.append(f'    subgraph L{index}[" "]')
        for name in _layer_names(layer):
            label = name
            inner = layered.get(f"{PACKAGE}.{name}")
            if inner is not None:
                rows = (", ".join(_layer_names(inner_layer)) for inner_layer in inner)
                label += "<br/>" + "<br/>".join(rows)
            lines.append(f'        {name.strip("_")}["{label}"]')
        lines.append("    end")
        if index:
            lines.append(f"    L{index - 1} --> L{index}")
    return "\n".join(lines) + "\n"


@dataclass
class _Group:
    """A task group in the tree function, and what it starts."""

    name: str
    children: list[_Group | str] = field(default_factory=list)


def _called_name(node: ast.expr) -> str:
    """The name of what a starter call runs: ``f`` in ``start_soon(f, ...)``, the function a
    lambda calls, or the source text."""
    if isinstance(node, ast.Lambda):
        node = node.body
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ast.unparse(node)


def _opens_group(item: ast.withitem) -> str | None:
    call = item.context_expr
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name not in TASK_GROUP_OPENERS or not isinstance(item.optional_vars, ast.Name):
        return None
    return item.optional_vars.id


def _walk(body: list[ast.stmt], groups: dict[str, _Group], current: _Group, loop: str) -> None:
    for stmt in body:
        if isinstance(stmt, ast.AsyncWith | ast.With):
            parent = current
            for item in stmt.items:
                name = _opens_group(item)
                if name is not None:
                    group = _Group(name)
                    groups[name] = group
                    parent.children.append(group)
                    parent = group
            _walk(stmt.body, groups, parent, loop)
            continue
        if isinstance(stmt, ast.For | ast.AsyncFor):
            _walk(stmt.body, groups, current, f" (one per {ast.unparse(stmt.target)})")
            continue
        if isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody):
                _walk(block, groups, current, loop)
            for handler in stmt.handlers:
                _walk(handler.body, groups, current, loop)
            continue
        if isinstance(stmt, ast.If):
            _walk(stmt.body, groups, current, loop)
            _walk(stmt.orelse, groups, current, loop)
            continue
        for node in ast.walk(stmt):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in STARTERS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in groups
                and node.args
            ):
                target = groups[node.func.value.id]
                target.children.append(_called_name(node.args[0]) + loop)


def tree_of(path: Path, function: str) -> _Group:
    """The task groups opened by ``function`` in ``path``, nested as in its source."""
    module = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(module):
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name == function:
            root = _Group(function)
            _walk(node.body, {}, root, "")
            return root
    raise ValueError(f"{path}: no function {function!r}")


def render_tree(path: Path = TREE_FUNCTION[0], function: str = TREE_FUNCTION[1]) -> str:
    """The supervision tree diagram, from the tree function's source."""
    root = tree_of(path, function)
    lines = ["flowchart TD"]
    counter = 0

    def emit(group: _Group, node_id: str) -> None:
        nonlocal counter
        for child in group.children:
            counter += 1
            child_id = f"n{counter}"
            if isinstance(child, _Group):
                lines.append(f'    {child_id}(["task group: {child.name}"])')
                lines.append(f"    {node_id} --> {child_id}")
                emit(child, child_id)
            else:
                lines.append(f'    {child_id}["{child}"]')
                lines.append(f"    {node_id} --> {child_id}")

    lines.append(f'    root(["{function}"])')
    emit(root, "root")
    return "\n".join(lines) + "\n"


BLOCKS = {"layers": render_layers, "tree": render_tree}


def splice(text: str, name: str, diagram: str) -> str:
    """Return ``text`` with the block between ``name``'s markers replaced by ``diagram``.

    Raises:
        ValueError: The markers are missing or out of order.
    """
    start_marker, end_marker = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    start = text.find(start_marker)
    end = text.find(end_marker, start + len(start_marker))
    if start < 0 or end < 0:
        raise ValueError(f"markers {start_marker!r} ... {end_marker!r} not found")
    block = f"{start_marker}\n```mermaid\n{diagram}```\n"
    return text[:start] + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, help="Markdown file to update")
    parser.add_argument("--check", action="store_true", help="fail if PATH is out of date")
    args = parser.parse_args(argv)
    diagrams = {name: render() for name, render in BLOCKS.items()}
    if args.path is None:
        for diagram in diagrams.values():
            sys.stdout.write(diagram + "\n")
        return 0
    path: Path = args.path
    try:
        old = path.read_text(encoding="utf-8")
        new = old
        for name, diagram in diagrams.items():
            new = splice(new, name, diagram)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{path}: {exc}\n")
        return 1
    if args.check:
        if new != old:
            sys.stderr.write(f"{path}: architecture diagrams are out of date\n")
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
