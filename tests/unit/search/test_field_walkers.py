"""The walkers of paths of plain fields select what the general steps select.

Most search parameters are paths of fields (``Observation.subject``); they are walked
without a call per step (``expressions._fields_walker``). Each expression of the R4 registry
(and each component's, in its context) is compiled both ways and run over the R4 examples,
the synthetic visits and shapes that trip the steps (arrays, nulls, primitives where an
object is expected); the results must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_server.search import expressions
from fhir_server.search.registry import SearchParameterRegistry, split_union
from fhir_server.synthetic import generate

Walkers = list[tuple[str, str | None, expressions.Walker, expressions.Walker]]


def _walkers() -> Walkers:
    registry = SearchParameterRegistry.load(None)
    found: Walkers = []
    for definition in registry._by_url.values():
        for expression, context in _expressions(definition):
            for branch in split_union(expression):
                names = expressions._field_names(branch, context)
                steps = expressions._steps(branch, context)
                if names is None or steps is None:
                    continue
                found.append((branch, context, expressions._fields_walker(names),
                              expressions._steps_walker(steps)))
    return found


def _expressions(definition: Any) -> Iterator[tuple[str, str | None]]:
    if definition.expression:
        yield definition.expression, None
        context = definition.expression.split(" | ")[0]
        for component in definition.components:
            yield component.expression, context


def _visits(tmp: Path) -> list[dict[str, Any]]:
    generate(40, 7, tmp)
    found = []
    for path in sorted(tmp.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            found += [entry["resource"] for entry in orjson.loads(line)["entry"]]
    return found


def _shapes(resource: dict[str, Any], rng: random.Random) -> Iterator[Any]:
    """The resource, and copies with a member made an array, a null or a string."""
    yield resource
    for key in list(resource)[:8]:
        for other in ([resource[key]], None, "text", [None, resource[key]], {"x": 1}):
            yield {**resource, key: other}
    yield rng.choice([None, [], "Patient", 3])


def test_field_walkers_select_what_the_steps_select(tmp_path: Path) -> None:
    walkers = _walkers()
    assert len(walkers) > 1000  # nearly all of R4's parameters are paths of fields
    rng = random.Random(5)
    resources = _visits(tmp_path)
    try:
        from tests.conformance.r4_examples import examples, examples_package

        resources += [orjson.loads(data) for _, data in
                      examples(examples_package(), lambda n, name: n % 7 == 0)]
    except pytest.skip.Exception:
        pass  # without the examples, the visits and their variants
    compared = 0
    for resource in resources:
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        for branch, context, fields, steps in walkers:
            if context is None and not branch.lstrip("(").startswith(f"{kind}."):
                continue
            nodes = [resource] if context is None else expressions._steps_walker(
                expressions._steps(context, None) or [])(resource)
            for node in nodes:
                for shape in _shapes(node, rng) if isinstance(node, dict) else [node]:
                    assert fields(shape) == steps(shape), (branch, context, shape)
                    compared += 1
    assert compared > 10000


def test_a_resource_without_a_parameters_root_keys_gets_nothing_from_it(tmp_path: Path) -> None:
    # Indexing skips a parameter whose root keys the resource lacks (``root_fields``; a cast
    # branch such as ``(Observation.value as CodeableConcept)`` has the one key it reads).
    registry = SearchParameterRegistry.load(None)
    plans = [(definition.expression, expressions.root_fields(definition.expression),
              expressions.compile_expression(definition.expression))
             for definition in registry._by_url.values() if definition.expression]
    assert frozenset({"valueCodeableConcept"}) in {roots for _, roots, _ in plans}
    skipped = 0
    for resource in _visits(tmp_path):
        for expression, roots, walker in plans:
            if roots is not None and roots.isdisjoint(resource):
                assert walker(resource) == [], (expression, resource)
                skipped += 1
    assert skipped > 1000
