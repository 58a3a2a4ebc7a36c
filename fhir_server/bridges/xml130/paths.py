"""Element paths of the mapping tables: ``a.b[0].c`` and ``identifier[=SYSTEM]``.

``[n]`` is a list position (the list grows to reach it); ``[=X]`` is the list item whose
``url`` (extensions), ``system`` (identifiers, codings) or first coding's system (concepts) is
X, appended when absent. ``write`` sets a value, merging a dict into an existing item.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["Setter", "Step", "list_at", "locate", "parse", "read", "setter", "write"]

Step = tuple[str, int | str | None]
#: ``write`` for one path, compiled: ``setter(path)(resource, value)``.
Setter = Callable[[dict[str, Any], Any], None]
_URL_LISTS = frozenset({"extension", "modifierExtension"})
_SYSTEM_LISTS = frozenset({"identifier", "coding"})


@cache
def parse(path: str) -> tuple[Step, ...]:
    """The steps of a path (cached: paths are few and read for every record)."""
    steps: list[Step] = []
    for part in _split(path):
        name, _, selector = part.partition("[")
        if not selector:
            steps.append((name, None))
        elif selector.startswith("="):
            steps.append((name, selector[1:-1]))
        else:
            steps.append((name, int(selector[:-1])))
    return tuple(steps)


def _split(path: str) -> list[str]:
    """Split on dots outside brackets (a system inside ``[=...]`` has dots)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(path):
        depth += char == "["
        depth -= char == "]"
        if char == "." and depth == 0:
            parts.append(path[start:index])
            start = index + 1
    parts.append(path[start:])
    return [p for p in parts if p]


def _matches(item: Any, key: str) -> bool:
    if not isinstance(item, dict):
        return False
    coding = (item.get("coding") or [{}])[0]
    return key in (item.get("url"), item.get("system"), coding.get("system"))


def _new_item(name: str, key: str) -> dict[str, Any]:
    if name in _URL_LISTS:
        return {"url": key}
    if name in _SYSTEM_LISTS:
        return {"system": key}
    return {"coding": [{"system": key}]}


def _child(node: dict[str, Any], step: Step, create: bool) -> Any:
    name, selector = step
    if selector is None:
        found = node.get(name)
        if found is None and create and name not in node:
            found = node[name] = {}
        return found
    items = node.get(name)
    if items is None:
        if not create:
            return None
        items = node[name] = []
    if isinstance(selector, int):
        while create and len(items) <= selector:
            items.append({})
        return items[selector] if selector < len(items) else None
    found = next((item for item in items if _matches(item, selector)), None)
    if found is None and create:
        found = _new_item(name, selector)
        items.append(found)
    return found


def locate(resource: dict[str, Any], path: str, create: bool = False) -> Any:
    """The element at ``path`` (created on the way when ``create``), or None."""
    node: Any = resource
    for step in parse(path):
        if not isinstance(node, dict):
            return None
        node = _child(node, step, create)
    return node


def read(resource: dict[str, Any], path: str) -> Any:
    """The value at ``path``, or None."""
    return locate(resource, path)


@cache
def _parent_and_last(path: str) -> tuple[tuple[Step, ...], Step]:
    steps = parse(path)
    return steps[:-1], steps[-1]


def write(resource: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value``; a dict is merged into an item found by a selector."""
    steps, last = _parent_and_last(path)
    parent = resource
    for step in steps:
        parent = _child(parent, step, True)
    name, selector = last
    if selector is None:
        parent[name] = value
        return
    item = _child(parent, last, True)
    if isinstance(value, dict) and isinstance(item, dict):
        item.update(value)
    else:
        parent[name][parent[name].index(item)] = value


@cache
def setter(path: str) -> Setter:
    """``write`` of one path as a function, its steps parsed once: a top-level element is set
    directly, any other path as ``write`` sets it."""
    steps, (name, selector) = _parent_and_last(path)
    if not steps and selector is None:
        def put_top(resource: dict[str, Any], value: Any) -> None:
            resource[name] = value
        return put_top

    def put(resource: dict[str, Any], value: Any) -> None:
        write(resource, path, value)
    return put


def locate_steps(resource: dict[str, Any], steps: tuple[Step, ...]) -> Any:
    """The element at ``steps``, created on the way."""
    node: Any = resource
    for step in steps:
        node = _child(node, step, True)
    return node


def list_at(resource: dict[str, Any], path: str) -> list[Any]:
    """The list at ``path``, created empty when absent (an item of a list to append to)."""
    found = locate(resource, path)
    if found is None:
        parent, _, name = path.rpartition(".")
        holder = locate(resource, parent, create=True) if parent else resource
        found = holder[name] = []
    return found if isinstance(found, list) else []
