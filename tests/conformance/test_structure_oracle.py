"""Differential test: the R4 element-table checker against the R4B ``fhir.resources`` models.

``validate_structure`` used to run the JSON rules, then the ``fhir.resources`` R4B pydantic
models, then the narrative rules. It now runs one walk along the R4 4.0.1 element tables
(``fhir_server.conformance.elements``). Here both judge the same resources: every resource in
``examples/``, ``profiles/`` and ``terminology/``, the visits ``fhir-server generate`` writes, the
resources of ``tests/builders.py``, a minimal resource of every R4 type, and hypothesis-driven
mutations of them. They must agree on valid versus invalid, except for ``KNOWN_DIFFERENCES``:
each is a case where the R4B models accept what R4 forbids, so the new checker is stricter,
never laxer. (Required bindings are left out: the old pipeline checked them separately, and
``test_structure.py`` tests them.)
"""

from __future__ import annotations

import copy
import functools
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fhir_server.conformance import elements, structure, xhtml
from fhir_server.errors import Issue
from fhir_server.synthetic import generate
from tests import builders

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]

#: R4 types the R4B models lack (R4B replaced them with MedicinalProductDefinition and co.):
#: there is no oracle for them; test_elements.py covers them.
R4_ONLY_TYPES = frozenset({
    "EffectEvidenceSynthesis", "MedicinalProduct", "MedicinalProductAuthorization",
    "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect", "RiskEvidenceSynthesis", "SubstanceNucleicAcid",
    "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
    "SubstanceSourceMaterial", "SubstanceSpecification",
})
#: Types R4B (4.3) redesigned: the R4B models judge a different structure (R4B's Evidence has
#: variableDefinition, not exposureBackground; R4B's EvidenceVariable lost jurisdiction, topic,
#: type...). R4 4.0.1 is what the server announces.
REDESIGNED_IN_R4B = frozenset({"Evidence", "EvidenceVariable"})
_INTEGERS = ("integer", "positiveInt", "unsignedInt")
_DATES = ("date", "dateTime", "instant")


# -- the element tables, read independently of the checker -------------------------------------


@functools.cache
def _tables() -> dict[str, list[Any]]:
    table = json.loads((ROOT / "fhir_server/data/r4/r4_elements.json").read_text("utf-8"))
    return {k: v for k, v in table.items() if not k.startswith("_")}


@functools.cache
def members(path: str) -> dict[str, Json]:
    """JSON member -> {name, min, max, type, child, choice} of one structure (base included)."""
    base, own = _tables()[path]
    out = dict(members(base)) if base else {}
    for name, (low, high, types) in own.items():
        stem = name[:-3] if name.endswith("[x]") else None
        for code in types:
            key = stem + code[0].upper() + code[1:] if stem else name
            if code in ("BackboneElement", "Element"):
                child: str | None = f"{path}.{name}"
            elif code.startswith("#"):
                child = code[1:]
            else:
                child = code if code[0].isupper() else None
            out[key] = {"name": name, "min": low, "max": high, "type": code, "child": child,
                        "choice": stem}
    return out


def objects(resource: Json) -> list[tuple[Json, str]]:
    """Every JSON object of a resource with the structure it follows (nested resources too)."""
    found: list[tuple[Json, str]] = []

    def visit(obj: Json, path: str) -> None:
        found.append((obj, path))
        table = members(path)
        for key, value in obj.items():
            info = table.get(key)
            if info is None or info["child"] is None:
                continue
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    continue
                if info["type"] != "Resource":
                    visit(item, info["child"])
                elif item.get("resourceType") in structure.r4_resource_types():
                    visit(item, item["resourceType"])

    visit(resource, resource["resourceType"])
    return found


# -- the two judges ----------------------------------------------------------------------------


def json_rule_problems(value: object, path: str) -> list[str]:
    """The JSON rules as the old pipeline checked them: no null (in objects), "", [] or {}."""
    problems: list[str] = []
    if isinstance(value, dict):
        if not value:
            problems.append(path)
        for key, item in value.items():
            child = f"{path}.{key}"
            problems += [child] if item is None else json_rule_problems(item, child)
    elif isinstance(value, list):
        if not value:
            problems.append(path)
        for index, item in enumerate(value):
            if item is not None:
                problems += json_rule_problems(item, f"{path}[{index}]")
    elif isinstance(value, str) and not value.strip():
        problems.append(path)
    return problems


def old_problems(resource: Json) -> list[str] | None:
    """What the old pipeline (JSON rules, R4B model, narrative) found; None if no R4B model."""
    resource_type = resource["resourceType"]
    if resource_type in R4_ONLY_TYPES or resource_type in REDESIGNED_IN_R4B:
        return None
    problems = json_rule_problems(resource, resource_type)
    if problems:
        return problems
    try:
        get_fhir_model_class(resource_type).model_validate(resource)
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    except Exception as exc:  # the models raise KeyError for an unknown contained type
        return [f"{type(exc).__name__}: {exc}"]
    return [issue.diagnostics for issue in xhtml.check_narrative(resource)]


def new_problems(resource: Json) -> list[Issue]:
    return [i for i in elements.check_structure(resource) if i.message_id != "MSG_CODE_INVALID"]


# -- known differences: where R4B accepts what R4 forbids --------------------------------------

_STEP = re.compile(r"\.([^.\[]+)(?:\[(\d+)\])?")


def locate(resource: Json, expression: str) -> tuple[Any, Json | None]:
    """Return the value at an issue's expression and its element (None for a resource)."""
    value: Any = resource
    path = resource["resourceType"]
    info: Json | None = None
    for name, index in _STEP.findall(expression[expression.index("."):]):
        if info is not None:
            path = info["child"] if info["type"] != "Resource" else value["resourceType"]
        info = members(path).get(name.removeprefix("_"))
        value = value[name]
        if index:
            value = value[int(index)]
        if name.startswith("_"):
            info = {**(info or {}), "type": "Element", "child": "Element"}
    return value, info


def _coerced(issue: Issue, value: Any, info: Json | None) -> bool:
    """pydantic's lax mode turns "true", 1 and "yes" into booleans, "1", 1.0 and true into
    integers, "1.5" into a decimal and numbers (timestamps) into dates; R4 JSON gives each
    primitive one JSON type (json.html#primitive: true/false, a number, a string)."""
    if issue.message_id != "MSG_VALUE_INVALID" or info is None:
        return False
    kind = info["type"]
    if kind == "boolean":
        return isinstance(value, str | int)
    if kind in _INTEGERS or kind == "decimal":
        numeric = isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+(\.\d+)?\s*", value)
        whole = isinstance(value, float) and value.is_integer()
        return bool(numeric) or isinstance(value, bool) or (kind in _INTEGERS and whole)
    return kind in _DATES and isinstance(value, int | float)


def _unanchored(issue: Issue, value: Any, info: Json | None) -> bool:
    """pydantic checks the uri, id and string patterns with search(), and ids without R4's
    64-character limit: "a b" passes as a uri. R4's regexes describe the whole value."""
    if issue.message_id != "MSG_VALUE_INVALID" or info is None or not isinstance(value, str):
        return False
    return info["type"] in ("uri", "url", "canonical", "id", "string") and bool(value.strip())


def _untyped_resource(issue: Issue, value: Any, info: Json | None) -> bool:
    """The R4B models accept a contained resource without resourceType (as a bare
    DomainResource); R4 needs one to know what the resource is."""
    return issue.message_id == "MSG_RESOURCE_TYPE" and (
        isinstance(value, dict) and "resourceType" not in value
    )


def _ignored_member(issue: Issue, value: Any, info: Json | None) -> bool:
    """The R4B models drop a ``resourceType`` inside a datatype and accept ``fhir_comments``
    (STU3 JSON comments, removed in R4) anywhere; R4 has no such elements."""
    return issue.message_id == "MSG_UNKNOWN_ELEMENT" and issue.expression[0].endswith(
        (".resourceType", ".fhir_comments")
    )


KNOWN_DIFFERENCES: dict[str, Callable[[Issue, Any, Json | None], bool]] = {
    "R4B coerces JSON types": _coerced,
    "R4B matches regexes unanchored": _unanchored,
    "R4B accepts a resource without resourceType": _untyped_resource,
    "R4B ignores resourceType in datatypes and fhir_comments": _ignored_member,
}


def assert_agree(resource: Json) -> None:
    old = old_problems(resource)
    if old is None:
        return
    new = new_problems(resource)
    if old and not new:
        pytest.fail(f"only the R4B pipeline rejects it: {old[:3]}\n{json.dumps(resource)}")
    if new and not old:
        unexplained = []
        for issue in new:
            value, info = locate(resource, issue.expression[0])
            if not any(known(issue, value, info) for known in KNOWN_DIFFERENCES.values()):
                unexplained.append(issue.diagnostics)
        assert not unexplained, f"only the R4 checker rejects it:\n{json.dumps(resource)}"


# -- the corpus --------------------------------------------------------------------------------


def _with_nested(name: str, resource: Json) -> list[tuple[str, Json]]:
    out = [(name, resource)]
    if resource["resourceType"] == "Bundle":
        out += [
            (f"{name}#{index}", entry["resource"])
            for index, entry in enumerate(resource.get("entry", []))
            if "resource" in entry
        ]
    return out


@functools.cache
def corpus() -> tuple[tuple[str, Json], ...]:
    found: list[tuple[str, Json]] = []
    files = [*ROOT.glob("examples/**/*.json"), *ROOT.glob("profiles/*.json"),
             *ROOT.glob("terminology/*.json")]
    for path in sorted(files):
        if not path.name.endswith(".expected.json"):
            found += _with_nested(str(path.relative_to(ROOT)), orjson.loads(path.read_bytes()))
    with tempfile.TemporaryDirectory() as folder:
        for path in generate(12, 5, Path(folder)).files:
            for line, text in enumerate(path.read_bytes().splitlines()):
                found += _with_nested(f"generate:{path.name}:{line}", orjson.loads(text))
    for name, resource in builders.HEALTH_BOOK_RESOURCES.items():
        found.append((f"builders:{name}", resource))
    found.append(("builders:patient", builders.patient()))
    found.append(("builders:observation", builders.observation()))
    return tuple(found)


def test_the_oracle_lacks_exactly_the_r4_only_types() -> None:
    missing = set()
    for name in structure.r4_resource_types():
        try:
            get_fhir_model_class(name)
        except (KeyError, ValueError):
            missing.add(name)
    assert missing == R4_ONLY_TYPES


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Evidence", "status": "draft",
         "exposureBackground": {"reference": "EvidenceVariable/e1"}},
        {"resourceType": "EvidenceVariable", "status": "draft", "type": "dichotomous",
         "characteristic": [{"definitionCanonical": "http://example.org/x"}]},
    ],
)
def test_r4b_redesigned_evidence_types_reject_valid_r4(resource: Json) -> None:
    assert elements.check_structure(resource) == []
    with pytest.raises(ValidationError):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_the_corpus_is_judged_alike() -> None:
    assert len(corpus()) > 400
    for _, resource in corpus():
        assert_agree(resource)


def _sample(code: str) -> Any:
    """A valid value of a type, for building resources from the tables."""
    primitives: Json = {
        "boolean": True, "integer": 1, "positiveInt": 1, "unsignedInt": 0, "decimal": 1.5,
        "date": "2020-01-01", "dateTime": "2020-01-01T10:00:00+07:00",
        "instant": "2020-01-01T10:00:00Z", "time": "10:00:00", "base64Binary": "aGk=",
        "oid": "urn:oid:1.2.3", "uuid": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
        "uri": "http://x", "url": "http://x", "canonical": "http://x", "id": "a1", "code": "x",
        "xhtml": f'<div xmlns="{xhtml.XHTML_NS}">x</div>',
    }
    if code[0].islower():
        return primitives.get(code, "x")
    if code == "Resource":
        return {"resourceType": "Basic", "code": {"text": "x"}}
    return minimal(code.removeprefix("#")) or {"id": "x"}


@functools.cache
def _minimal(path: str) -> str:
    out: Json = {}
    for key, info in members(path).items():
        if info["min"] >= 1 and not (info["choice"] and any(
            members(path)[k]["choice"] == info["choice"] for k in out if k in members(path)
        )):
            value = (
                minimal(info["child"]) or {"id": "x"}
                if info["type"] in ("BackboneElement", "Element")
                else _sample(info["type"])
            )
            out[key] = value if info["max"] == "1" else [value]
    return json.dumps(out)


def minimal(path: str) -> Json:
    """The smallest valid instance of a structure: its required elements, recursively."""
    loaded: Json = json.loads(_minimal(path))
    return loaded


def test_every_r4_type_and_its_top_level_elements_are_judged_alike() -> None:
    """A minimal resource of each type, then with each top-level element in turn."""
    for resource_type in sorted(structure.r4_resource_types()):
        resource = {"resourceType": resource_type, **minimal(resource_type)}
        assert_agree(resource)
        for key, info in members(resource_type).items():
            if key in resource or info["choice"] or info["type"].startswith("#"):
                continue
            value = (
                minimal(info["child"]) or {"id": "x"}
                if info["type"] in ("BackboneElement", "Element")
                else _sample(info["type"])
            )
            assert_agree({**resource, key: value if info["max"] == "1" else [value]})


# -- mutations ---------------------------------------------------------------------------------

#: Wrong values per type: R4B coerces some (known difference), rejects others.
WRONG: Json = {
    "boolean": ["true", 1, "maybe", 2.5, {}],
    "integer": ["1", 1.5, True, "one", 2**31],
    "positiveInt": [0, -1, "1", 1.5],
    "unsignedInt": [-1, "0", 0.5],
    "decimal": ["1.5", True, "one", [1.5]],
    "date": ["2023-02-30", "2023-13-01", "01/02/2023", 20230201, "2023-02-01T10:00:00Z"],
    "dateTime": ["2023-02-30", "2023-02-29T10:00:00Z", "2023-02-01T10:00", 12345, "yesterday"],
    "instant": ["2023-02-01", "2023-02-30T10:00:00Z", "2023-02-01T10:00:00", 12345],
    "time": ["25:00:00", "10:00", 1000],
    "code": [12345, True, " x", "a  b"],
    "id": ["a b", "x" * 65, "é", 12],
}
WRONG_DEFAULT = [12345, True, 1.5, ["x"], {"value": "x"}]
EMPTY = [None, "", "  ", [], {}]
UNKNOWN = ["bogus", "valueStrin", "resourceType", "_bogus", "Extension", "fhir_comments"]


def _drop_required(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    required = [k for k in obj if k in table and table[k]["min"] >= 1]
    if not required:
        return False
    key = draw(st.sampled_from(required))
    del obj[key]
    obj.pop("_" + key, None)
    return True


def _add_unknown(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    key = draw(st.sampled_from([k for k in UNKNOWN if k not in table and k not in obj]))
    obj[key] = draw(st.sampled_from(["x", 1, {"id": "x"}]))
    return True


def _single_to_array(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    singles = [k for k in obj if k in table and table[k]["max"] == "1"]
    if not singles:
        return False
    key = draw(st.sampled_from(singles))
    obj[key] = [obj[key]]
    return True


def _array_to_single(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    arrays = [k for k in obj if k in table and table[k]["max"] != "1" and obj[k]]
    if not arrays:
        return False
    key = draw(st.sampled_from(arrays))
    obj[key] = obj[key][0] if isinstance(obj[key], list) else obj[key]
    return True


def _wrong_primitive(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    primitives = [k for k in obj if k in table and table[k]["child"] is None]
    if not primitives:
        return False
    key = draw(st.sampled_from(primitives))
    info = table[key]
    wrong = draw(st.sampled_from(WRONG.get(info["type"], WRONG_DEFAULT)))
    obj[key] = wrong if info["max"] == "1" else [wrong]
    return True


def _invalid_date(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    dates = [k for k, i in table.items() if i["type"] in _DATES and i["max"] == "1"]
    if not dates:
        return False
    key = draw(st.sampled_from(dates))
    choice = table[key]["choice"]
    for other in [k for k in obj if choice and k in table and table[k]["choice"] == choice]:
        del obj[other]
    obj[key] = draw(st.sampled_from(["2023-02-30", "2023-04-31", "2023-02-29", "1900-02-29"]))
    return True


def _two_choices(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    chosen = [k for k in obj if k in table and table[k]["choice"]]
    if not chosen:
        return False
    key = draw(st.sampled_from(chosen))
    others = [k for k, i in table.items() if i["choice"] == table[key]["choice"] and k != key]
    if not others:
        return False
    other = draw(st.sampled_from(others))
    obj[other] = _sample(table[other]["type"])
    return True


def _empty(obj: Json, table: Json, draw: Callable[[Any], Any]) -> bool:
    present = [k for k in obj if k in table]
    if not present:
        return False
    obj[draw(st.sampled_from(present))] = draw(st.sampled_from(EMPTY))
    return True


MUTATIONS = [_drop_required, _add_unknown, _single_to_array, _array_to_single, _wrong_primitive,
             _invalid_date, _two_choices, _empty]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_are_judged_alike(data: st.DataObject) -> None:
    _, original = data.draw(st.sampled_from(corpus()), label="resource")
    resource = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        obj, path = data.draw(st.sampled_from(objects(resource)), label="object")
        mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        mutation(obj, members(path), data.draw)
    assert_agree(resource)
