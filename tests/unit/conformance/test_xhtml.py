"""Tests of the narrative rules (txt-1, txt-2, XHTML namespace) in ``conformance.xhtml``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_server.conformance.xhtml import check_div, check_narrative
from fhir_server.errors import InvalidResource
from fhir_server.operations import narrative
from fhir_server.resources import validate_structure

REPO = Path(__file__).resolve().parents[3]
NS = 'xmlns="http://www.w3.org/1999/xhtml"'


def a_patient(div: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}}


BROKEN = [
    ("<div>hi</div>", "MSG_NARRATIVE_NAMESPACE"),
    (f"<div {NS}>hi", "MSG_NARRATIVE_NOT_XHTML"),
    (f"<div {NS}>a &nbsp; b</div>", "MSG_NARRATIVE_NOT_XHTML"),
    (f"<!DOCTYPE div><div {NS}>hi</div>", "MSG_NARRATIVE_NOT_XHTML"),
    (f"<p {NS}>hi</p>", "MSG_NARRATIVE_NAMESPACE"),
    (f"<div {NS}><script>alert(1)</script>hi</div>", "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><p onclick="x()">hi</p></div>', "MSG_INVARIANT_TXT_1"),
    (f"<div {NS}><form><input/></form>hi</div>", "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><iframe src="https://x"/>hi</div>', "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><a href="javascript:alert(1)">hi</a></div>', "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><img src=" JavaScript:x" alt="a"/></div>', "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><p style="background: url(https://x/t.png)">hi</p></div>', "MSG_INVARIANT_TXT_1"),
    (f'<div {NS}><p style="width: expression(alert(1))">hi</p></div>', "MSG_INVARIANT_TXT_1"),
    (f"<div {NS}><p style=\"background: url('//x/data:t.png')\">hi</p></div>",
     "MSG_INVARIANT_TXT_1"),
    (f'<div {NS} xmlns:s="urn:s"><s:x>hi</s:x></div>', "MSG_INVARIANT_TXT_1"),
    (
        f'<div {NS} xmlns:l="http://www.w3.org/1999/xlink"><a l:href="x">hi</a></div>',
        "MSG_INVARIANT_TXT_1",
    ),
    (42, "MSG_NARRATIVE_NOT_XHTML"),
]

KEPT = [
    f"<div {NS}>hi</div>",
    f'<div {NS}><p style="color: red" class="x">a <b>b</b> &amp; &lt;c&gt;</p></div>',
    f'<div {NS}><table border="1"><tbody><tr><td colspan="2">1</td></tr></tbody></table></div>',
    f'<div {NS}><a href="https://example.org/x">link</a> <a name="n">anchor</a></div>',
    f'<div {NS}><img src="#photo" alt="photo"/></div>',
    f'<div {NS} xml:lang="vi" lang="vi"><!-- note --><ul><li>Bệnh nhân</li></ul></div>',
    # txt-1: an inline image in a style fetches nothing (R4's own examples use it).
    f'<div {NS}><p style="background-image: url(data:image/png;base64,iVBORw0K)">x</p></div>',
    f"<div {NS}><span style=\"background:url( 'data:image/gif;base64,R0lG')\">x</span></div>",
]


@pytest.mark.parametrize(("div", "message_id"), BROKEN)
def test_narrative_breaking_the_xhtml_rules_is_reported(div: Any, message_id: str) -> None:
    issues = check_narrative(a_patient(div))
    assert message_id in {issue.message_id for issue in issues}
    assert all(i.severity == "error" and i.expression == ("Patient.text.div",) for i in issues)


@pytest.mark.parametrize("div", KEPT)
def test_narrative_keeping_the_xhtml_rules_passes(div: str) -> None:
    assert check_narrative(a_patient(div)) == []


def test_contained_and_nested_narratives_are_checked_with_their_path() -> None:
    organization = {"resourceType": "Organization", "id": "o", "text": {"div": "<div>x</div>"}}
    patient = a_patient(f"<div {NS}>ok</div>") | {"contained": [organization]}
    bundle = {"resourceType": "Bundle", "entry": [{"resource": patient}]}
    paths = [issue.expression for issue in check_narrative(bundle)]
    assert paths == [("Bundle.entry[0].resource.contained[0].text.div",)]


def test_validate_structure_rejects_a_div_without_the_xhtml_namespace() -> None:
    with pytest.raises(InvalidResource) as caught:
        validate_structure(a_patient("<div>hi</div>"))
    assert caught.value.issues[0].message_id == "MSG_NARRATIVE_NAMESPACE"


def test_validate_structure_rejects_a_script_in_the_narrative() -> None:
    with pytest.raises(InvalidResource):
        validate_structure(a_patient(f"<div {NS}><script>x()</script>hi</div>"))


def test_generated_narrative_keeps_the_shared_rules() -> None:
    made = narrative.narrative(narrative.paragraph("<script>"), narrative.table(["a"], [["b"]]))
    assert narrative.check_narrative(made["div"]) == []
    assert check_div(made["div"], "Composition.text.div") == []
    assert narrative.check_narrative("<div>x</div>") != []


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "valid").glob("*.json")), ids=str)
def test_example_narratives_pass(path: Path) -> None:
    assert check_narrative(json.loads(path.read_text("utf-8"))) == []


@pytest.mark.parametrize("div", [f"<div {NS}>   <p> </p></div>", f"<div {NS}/>",
                                 f"<div {NS}>\n    </div>"])
def test_a_narrative_of_whitespace_only_is_a_txt_2_warning(div: str) -> None:
    issues = check_narrative(a_patient(div))
    assert [(i.message_id, i.severity) for i in issues] == [("MSG_INVARIANT_TXT_2", "warning")]
