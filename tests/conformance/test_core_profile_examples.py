"""R4's vital-sign profiles as the validator checks them, slices and bindings included: the
official examples meet the profile of their code (with ``vitalsigns``), and copies broken in
a slice or a binding get the issue naming the profile and the slice or binding."""

from __future__ import annotations

import json
import tarfile

import pytest

from fhir_server.conformance.profiles import default_validator
from tests.conformance.r4_examples import cache_dir
from tests.conformance.vital_signs import BREAKS, CORE, Break, claiming, example, examples

EXAMPLES = examples()


@pytest.mark.parametrize(("file", "profile"), [e[:2] for e in EXAMPLES],
                         ids=[e[0] for e in EXAMPLES])  # fmt: skip
def test_official_vital_signs_meet_the_profile_of_their_code(file: str, profile: str) -> None:
    resource = claiming(example(file), profile)
    issues = default_validator().validate(resource, resource["meta"]["profile"])
    assert [(i.severity, i.diagnostics) for i in issues] == []


@pytest.mark.parametrize("broken", BREAKS, ids=[b.name for b in BREAKS])
def test_a_broken_copy_gets_the_issue_naming_profile_and_slice_or_binding(broken: Break) -> None:
    issues = default_validator().validate(broken.resource(), [CORE + broken.profile])
    errors = [(i.message_id, i.diagnostics) for i in issues if i.severity == "error"]
    assert (broken.message_id, broken.text) in errors
    assert default_validator().validate(example(broken.file), [CORE + broken.profile]) == []


def test_an_extensible_binding_warns_only_when_no_code_is_from_its_value_set() -> None:
    weight = example("Observation-example.json")  # LOINC 29463-7 among three other codings
    assert default_validator().validate(weight, [CORE + "vitalsigns"]) == []
    weight["code"]["coding"] = [c for c in weight["code"]["coding"] if c["code"] == "27113001"]
    issues = default_validator().validate(weight, [CORE + "vitalsigns"])
    assert [(i.severity, i.message_id) for i in issues] == [("warning", "MSG_PROFILE_BINDING")]
    assert "observation-vitalsignresult" in issues[0].diagnostics


def test_the_examples_are_the_published_ones() -> None:
    """The committed examples are those of the package (checked where it is cached)."""
    package = cache_dir() / "hl7.fhir.r4.examples-4.0.1.tgz"
    if not package.exists():
        pytest.skip("the R4 examples package is not cached (tests/conformance/r4_examples.py)")
    with tarfile.open(package) as archive:
        for file, _, resource in EXAMPLES:
            handle = archive.extractfile(f"package/{file}")
            assert handle is not None and json.load(handle) == resource, file


def test_a_profile_claimed_with_one_building_on_it_is_checked_once() -> None:
    bp = claiming(example("Observation-blood-pressure.json"), "bp")  # vitalsigns and bp
    del bp["category"]
    texts = [i.diagnostics for i in default_validator().validate(bp, bp["meta"]["profile"])]
    assert texts.count("vitalsigns: Observation.category:VSCat: found 0, allowed 1..1") == 1
    alone = default_validator().validate(bp, [CORE + "vitalsigns"])
    assert [i.diagnostics for i in alone] == [t for t in texts if t.startswith("vitalsigns")]
