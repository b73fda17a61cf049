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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "asynqpg_trio"
#: Where the supervision tree is built: a module path and the function's name.
TREE_FUNCTION = (ROOT / PACKAGE / "_consumer" / "_tree.py", "serve_tree")
#: Calls that open a task group.
TASK_GROUP_OPENERS = {"create_task_group", "open_nursery"}
#: Methods of a task group that start a child.
STARTERS = {"start_soon", "start"}
#: The wrapper that restarts an actor after transient errors, and the detached work's handle.
SUPERVISE = "supervise"
DETACHED = "Detached"


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
    """A task group (or the detached work) in the tree function, and what it runs."""

    label: str
    children: list[_Group | str] = field(default_factory=list)


def _func_name(node: ast.expr) -> str:
    """The name of the function a child runs: ``f`` for ``f``, ``obj.f``, ``partial(f, ...)``
    or ``lambda: f(...)``."""
    if isinstance(node, ast.Lambda):
        node = node.body
    if isinstance(node, ast.Call):
        if _name(node.func) == "partial" and node.args:
            return _func_name(node.args[0])
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute | ast.Name):
        return f"{_name(node.value)}.{node.attr}"
    return _name(node) or ast.unparse(node)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _child_label(args: list[ast.expr]) -> str:
    """What ``start_soon(*args)`` (or a direct ``supervise(*args)``) runs, as a label."""
    if _func_name(args[0]) == SUPERVISE:
        names = [a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        inner = _func_name(args[-1])
        return f"{names[0] if names else inner}: {inner} (supervised)"
    return _func_name(args[0])


class _TreeReader:
    """Reads the tree function's source: the task groups it opens, nested as in the code,
    the children each starts, and the detached work (followed into its own function)."""

    def __init__(self, module: ast.Module) -> None:
        self.functions = {
            node.name: node
            for node in ast.walk(module)
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        }

    def read(self, function: str) -> _Group:
        node = self.functions.get(function)
        if node is None:
            raise ValueError(f"no function {function!r}")
        root = _Group(function)
        self._walk(node.body, {}, {}, root, "")
        return root

    def _walk(
        self,
        body: list[ast.stmt],
        groups: dict[str, _Group],
        detached: dict[str, _Group],
        current: _Group,
        each: str,
    ) -> None:
        for stmt in body:
            if isinstance(stmt, ast.AsyncWith | ast.With):
                inner = current
                for item in stmt.items:
                    inner = self._enter(item, groups, detached, inner)
                self._walk(stmt.body, groups, detached, inner, each)
            elif isinstance(stmt, ast.For | ast.AsyncFor):
                count = stmt.iter
                if isinstance(count, ast.Call) and _name(count.func) == "range" and count.args:
                    count = count.args[-1]
                self._walk(stmt.body, groups, detached, current, f", {ast.unparse(count)} of them")
            elif isinstance(stmt, ast.Try):
                for block in (stmt.body, stmt.orelse, stmt.finalbody):
                    self._walk(block, groups, detached, current, each)
            elif isinstance(stmt, ast.If):
                self._walk(stmt.body, groups, detached, current, each)
                self._walk(stmt.orelse, groups, detached, current, each)
            else:
                self._calls(stmt, groups, detached, current, each)

    def _enter(
        self,
        item: ast.withitem,
        groups: dict[str, _Group],
        detached: dict[str, _Group],
        parent: _Group,
    ) -> _Group:
        call, target = item.context_expr, item.optional_vars
        if not isinstance(call, ast.Call) or not isinstance(target, ast.Name):
            return parent
        opener = _name(call.func)
        if opener in TASK_GROUP_OPENERS:
            group = groups[target.id] = _Group(f"task group: {target.id}")
        elif opener == DETACHED:  # a handle: the work it starts is shown where it starts
            detached[target.id] = parent
            return parent
        else:
            return parent
        parent.children.append(group)
        return group

    def _calls(
        self,
        stmt: ast.stmt,
        groups: dict[str, _Group],
        detached: dict[str, _Group],
        current: _Group,
        each: str,
    ) -> None:
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            owner = (
                func.value.id
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else None
            )
            if owner in groups and _name(func) in STARTERS:
                groups[owner].children.append(_child_label(node.args) + each)
            elif owner in detached and _name(func) == "start":
                name = _func_name(node.args[0])
                work = self.read(name)
                current.children.append(_Group(f"detached: {name}", work.children))
            elif _name(func) == SUPERVISE:
                label = _child_label([func, *node.args])
                current.children.append(f"{label[: -len(')')]}, in the group's body)")


def render_tree(path: Path = TREE_FUNCTION[0], function: str = TREE_FUNCTION[1]) -> str:
    """The supervision tree diagram, from the tree function's source."""
    root = _TreeReader(ast.parse(path.read_text(encoding="utf-8"))).read(function)
    lines = ["flowchart TD", f'    root(["{function}"])']
    counter = 0

    def emit(group: _Group, node_id: str) -> None:
        nonlocal counter
        for child in group.children:
            counter += 1
            child_id = f"n{counter}"
            if isinstance(child, _Group):
                lines.append(f'    {child_id}(["{child.label}"])')
                lines.append(f"    {node_id} --> {child_id}")
                emit(child, child_id)
            else:
                lines.append(f'    {child_id}["{child}"]')
                lines.append(f"    {node_id} --> {child_id}")

    emit(root, "root")
    return "\n".join(lines) + "\n"


BLOCKS: dict[str, Callable[[], str]] = {"layers": render_layers, "tree": render_tree}


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


def run_cli(blocks: dict[str, Callable[[], str]], argv: list[str] | None, description: str) -> int:
    """The command line of a diagram script: print the ``blocks`` (marker name -> renderer),
    or splice them into a Markdown file between their markers, or ``--check`` that file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("path", nargs="?", type=Path, help="Markdown file to update")
    parser.add_argument("--check", action="store_true", help="fail if PATH is out of date")
    args = parser.parse_args(argv)
    diagrams = {name: render() for name, render in blocks.items()}
    if args.path is None:
        sys.stdout.write("\n".join(diagrams.values()))
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
            sys.stderr.write(f"{path}: {', '.join(diagrams)} out of date\n")
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    return run_cli(BLOCKS, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
