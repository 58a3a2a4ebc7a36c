"""The proof that the XML 130 route may skip the structural check for what it builds.

The route checks each value as it writes it (``bridges.xml130.lexical``) and its transaction
then skips ``elements.check_structure`` (``conformance.built``). The differential test sends
synthetic visits with hostile field values (dates, codes, numbers, text with white space,
control characters, very long) and compares the route with checks against the same tables
without them: a visit the route accepts has no structural error in any resource it built, and
a visit it refuses for a value is one whose resources the structural check refuses too. The
corpus sample converts with no structural error (checked here, not skipped); the skip
happens for the route's transaction and never for a FHIR push.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fhir_server.bridges.xml130 import kinds, lexical, tables, values
from fhir_server.bridges.xml130.envelope import encode_envelope, encode_table
from fhir_server.bridges.xml130.tables import Standard, load_standard
from fhir_server.bridges.xml130.transaction import Plan
from fhir_server.bridges.xml130.visits import convert_only, import_envelope
from fhir_server.conformance import built, elements, primitives, structure
from fhir_server.loader import open_services
from fhir_server.router.request import FhirRequest
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import Access
from fhir_server.settings import Settings
from fhir_server.synthetic.generation import synthetic_visits
from fhir_server.synthetic.xml130 import visit_envelope, visit_records

STANDARD = load_standard("4750")
#: Examples of the differential test (``XML130_LEXICAL_EXAMPLES``; the suite's default runs
#: in seconds, a longer run is a separate target).
EXAMPLES = int(os.environ.get("XML130_LEXICAL_EXAMPLES", "80"))
#: The same tables, compiled without the checks of each value (``lexical.checked`` and
#: ``lexical.tester`` made no-ops while they compile).
UNCHECKED: Standard = load_standard.__wrapped__("4750")

Records = dict[str, list[dict[str, str]]]


@cache
def _pool() -> tuple[tuple[str, Records], ...]:
    """Synthetic visits (facility, records) to change: inpatient and outpatient, every table."""
    return tuple((v.facility.code, visit_records(v, b)) for v, b in synthetic_visits(6, 4242))


def _envelope(facility: str, records: Records) -> bytes:
    files = []
    for name, rows in records.items():
        table = STANDARD.tables[name]
        assert table.shape is not None
        files.append((name, encode_table(table.shape, rows, list(table.facts))))
    return encode_envelope(facility, "20240105", [files])


def _structure_errors(plan: Plan) -> list[str]:
    return [i.diagnostics for e in plan.bundle["entry"] if "resource" in e
            for i in elements.check_structure(e["resource"]) if i.severity != "warning"]


@contextmanager
def _unchecked() -> Iterator[None]:
    with mock.patch.object(lexical, "checked", lambda put, target: put), \
            mock.patch.object(lexical, "tester", lambda target: lambda kind, value, text: None):
        yield


def _xml_char(c: str) -> bool:
    code = ord(c)
    return c in "\t\n\r" or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code > 0xFFFF


_HOSTILE = st.text(alphabet=st.sampled_from(
    [*"AJ0189.-/:;_ xĐđ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085",
     "<", "&", "\ufeff", "\U0001f600"]), max_size=24)
_DATES = st.one_of(st.from_regex(r"\A(19|20|99|00)\d{2}(0[0-9]|1[0-3])([0-3]\d)(\d{4})?\Z"),
                   st.from_regex(r"\A\d{1,14}\Z"))
_NUMBERS = st.one_of(st.from_regex(r"\A-?\d{1,12}(\.\d{1,6})?\Z"),
                     st.sampled_from(["1e5", "NaN", "-0", "00", "9" * 20, "2147483648",
                                      "-2147483649", ".5", "5."]))
_CODES = st.from_regex(r"\A[A-Z0-9.]{1,5}([ \t\n\r]{0,3}[A-Z0-9.;]{1,4}){0,2}\Z")
_ANY = st.one_of(_HOSTILE, _DATES, _NUMBERS, _CODES,
                 st.text(st.characters(codec="utf-8").filter(_xml_char), max_size=40),
                 st.builds(lambda c, n: c * n, st.sampled_from(["x", "Đ", " a"]),
                           st.integers(200, 1100)),
                 st.just(""))


def _change(records: Records, table: str, row: int, name: str, value: str) -> Records:
    changed = {t: [dict(r) for r in rows] for t, rows in records.items()}
    rows = changed[table]
    rows[row % len(rows)][name] = value
    return changed


_CODED = frozenset({"lookup", "coding", "concept", "codings", "concepts", "identifier",
                    "reference", "actors", "person_id", "address", "integer", "decimal"})


def _fields(records: Records, coded: bool) -> list[tuple[str, str]]:
    """The mapped fields of the visit's tables (those written as codes and numbers only)."""
    return [(t, r.name) for t in records for r in STANDARD.tables[t].rules.values()
            if (r.targets or r.name == "MA_CSKCB")
            and (not coded or any(x.kind in _CODED for x in r.targets))]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_route_refuses_exactly_what_the_structural_check_refuses(data: Any) -> None:
    facility, records = data.draw(st.sampled_from(_pool()))
    for _ in range(data.draw(st.integers(1, 4))):
        table, name = data.draw(st.sampled_from(_fields(records, data.draw(st.booleans()))))
        row, value = data.draw(st.integers(0, 20)), data.draw(_ANY)
        size = STANDARD.tables[table].facts[name].size
        if size and data.draw(st.integers(0, 4)):  # mostly within the field's size
            value = value[:size]
        records = _change(records, table, row, name, value)
    envelope = _envelope(records["XML1"][0].get("MA_CSKCB", "").strip() or facility, records)
    checked = convert_only(envelope, STANDARD)[0]
    with _unchecked():
        unchecked = convert_only(envelope, UNCHECKED)[0]
    event(f"{type(checked).__name__}/{type(unchecked).__name__}")
    if isinstance(checked, Plan):
        assert _structure_errors(checked) == []
        assert isinstance(unchecked, Plan)
    elif isinstance(unchecked, Plan):
        refused = [i.diagnostics for i in checked.issues if i.severity == "error"]
        assert _structure_errors(unchecked), refused  # refused only for a real error
        assert any(i.message_id == "MSG_XML130_VALUE" for i in checked.issues)


@pytest.mark.parametrize(("table", "name", "value", "found"), [
    ("XML1", "MA_BENH_CHINH", "J18  9", "is not a valid code"),
    ("XML1", "MA_CSKCB", "7 001", "R4 uri"),
    ("XML1", "MA_BENH_KT", "I10;E11  9", "is not a valid code"),
])
def test_a_value_r4_refuses_is_refused_at_its_field(table: str, name: str, value: str,
                                                    found: str) -> None:
    facility, records = _pool()[0]
    changed = _change(records, table, 0, name, value)
    result = convert_only(_envelope(value if name == "MA_CSKCB" else facility, changed),
                          STANDARD)[0]
    assert not isinstance(result, Plan)
    issue = next(i for i in result.issues if i.severity == "error")
    assert issue.expression == (f"{table}.{name}",)
    assert found in issue.diagnostics and issue.message_id == "MSG_XML130_VALUE"


def test_every_resource_the_corpus_builds_passes_the_structural_check() -> None:
    for visit, bundle in synthetic_visits(40, 20261206):
        plan = convert_only(visit_envelope(visit, bundle), STANDARD)[0]
        assert isinstance(plan, Plan), [i.diagnostics for i in plan.issues]
        assert _structure_errors(plan) == []


@contextmanager
def _counting() -> Iterator[list[str]]:
    walked: list[str] = []
    real = elements.check_structure

    def counted(resource: dict[str, Any]) -> Any:
        walked.append(str(resource.get("resourceType")))
        return real(resource)

    with mock.patch.object(elements, "check_structure", counted):
        yield walked


async def test_the_route_skips_the_walk_and_a_fhir_push_of_the_same_resources_does_not(
        tmp_path: Path) -> None:
    visit, bundle = next(iter(synthetic_visits(1, 7)))
    envelope = visit_envelope(visit, bundle)
    plan = convert_only(envelope, STANDARD)[0]
    assert isinstance(plan, Plan)
    async with open_services(Settings(data_dir=tmp_path / "d",
                                      seed_search_parameters=False)) as services:
        access = Access(SERVER, services.registry)
        with _counting() as walked:
            report = await import_envelope(services, access, envelope, STANDARD)
        assert [v.outcome for v in report.visits] == ["created"]
        assert walked == []
        assert services.handle is not None
        pushed = json.loads(json.dumps(plan.bundle))  # what a client would send
        with _counting() as walked:
            await services.handle(services, FhirRequest("POST", "bundle", body=pushed), SERVER)
        assert len(walked) == sum(1 for e in pushed["entry"] if "resource" in e)


def test_the_mark_holds_for_the_objects_named_in_the_block_only() -> None:
    mine, twin = {"resourceType": "Patient"}, {"resourceType": "Patient"}
    with built.structure_built([mine]):
        assert built.is_built(mine) and not built.is_built(twin)
    assert not built.is_built(mine)


def test_without_its_checks_the_route_builds_what_the_structural_check_refuses() -> None:
    """The comparison of the differential test has teeth: the unchecked tables build it."""
    facility, records = _pool()[0]
    envelope = _envelope(facility, _change(records, "XML1", 0, "MA_BENH_CHINH", "J18  9"))
    with _unchecked():
        unchecked = convert_only(envelope, UNCHECKED)[0]
    assert isinstance(unchecked, Plan)
    assert any("is not a valid code" in e for e in _structure_errors(unchecked))
    assert not isinstance(convert_only(envelope, STANDARD)[0], Plan)


_DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><p>{}</p></div>'
_SECTION_TEST = elements.value_check("Composition", ("section",), True)


def _section(div: str) -> dict[str, Any]:
    code = {"system": "https://fhir.sskdt.vn/CodeSystem/xml130-field", "code": "XML1.PP_DIEU_TRI"}
    return {"title": "Phương pháp điều trị", "code": {"coding": [code]},
            "text": {"status": "additional", "div": div}}


_DIV_TEXT = st.one_of(
    st.text(),  # any code point but the surrogates
    st.lists(st.sampled_from([*"aĐ <>&;#x01ampltg", "\t", "\r", "\n", "\x00", "\x0b", "\x1f",
                              "\x85", "\xa0", "\u2028", "\ufffe", "\uffff", "\ud800",
                              "\U0001f600", "]]>", "&amp;", "&lt;", "&gt;", "&#1;", "&#x41;",
                              "</p><script>", "<!DOCTYPE"]), max_size=30).map("".join))


@settings(max_examples=max(EXAMPLES * 5, 400), deadline=None)
@given(text=_DIV_TEXT, escape=st.booleans())
def test_a_plain_text_div_is_a_narrative_the_structural_check_accepts(text: str,
                                                                      escape: bool) -> None:
    """What lets a section skip the full test of its narrative: every ``div`` that
    ``plain_div`` accepts (the route's escaped text, or any other string put in the
    paragraph) is one the structural check accepts in that section."""
    div = _DIV.format(html.escape(text, quote=False) if escape else text)
    try:
        found = _SECTION_TEST(_section(div))
    except UnicodeError:  # a lone surrogate: not a narrative at all
        assert not lexical.plain_div(div)
        return
    event(f"plain={lexical.plain_div(div)} accepted={not found}")
    if lexical.plain_div(div):
        assert found == []


def test_a_section_is_tested_in_full_once_per_fixed_part_and_always_when_not_plain() -> None:
    calls: list[str] = []
    real = lexical._test

    def counted(resource_type: str, names: tuple[str, ...], item: bool) -> Any:
        test = real(resource_type, names, item)

        def check(value: Any) -> Any:
            calls.append(value["text"]["div"])
            return test(value)
        return check

    def put(resource: dict[str, Any], text: str, context: Any) -> None:
        resource.setdefault("section", []).append(_section(_DIV.format(text)))

    with mock.patch.object(lexical, "_test", counted):
        put_section = lexical.section_checked(put)
        resource: dict[str, Any] = {"resourceType": "Composition"}
        for text in ("một", "hai", "ba &amp; bốn"):
            put_section(resource, text, None)
        assert len(calls) == 1  # the fixed part once; plain paragraphs after it
        with pytest.raises(ValueError, match="not well-formed"):
            put_section(resource, "năm \x01", None)
        with pytest.raises(ValueError, match="not allowed"):
            put_section(resource, "<script>x</script>", None)
        with pytest.raises(ValueError, match="txt-2"):  # white space only: in full
            put_section(resource, "\u00a0", None)
    assert len(calls) == 4


# -- dates and dateTimes valid by construction ------------------------------------------------

_R4 = primitives.validators(structure.load_table("r4_elements.json")["_primitives"])
_DATE_TEXTS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59))
    .map(lambda moment: moment.strftime("%Y%m%d%H%M")),
    st.text(st.sampled_from([*"0123456789", "٣", "１", "\u0966", " ", "-", "\n"]),
            min_size=7, max_size=13))


@settings(max_examples=max(EXAMPLES * 5, 400), deadline=None)
@given(text=_DATE_TEXTS)
def test_every_date_and_time_the_converters_write_is_valid_in_r4(text: str) -> None:
    """The proof behind ``lexical.proven_valid``: whatever the text, a value the converters
    give is one R4's date and dateTime (or dateTime and instant) tests accept (a text they
    refuse gives no value)."""
    for converter, types in ((values.date_from_xml, ("date", "dateTime")),
                             (values.datetime_from_xml, ("dateTime", "instant"))):
        for given_text in (text, text[:8], text[:12]):
            try:
                value = converter(given_text)
            except ValueError:
                continue
            event(converter.__name__)
            assert all(_R4[kind](value) for kind in types), (given_text, value)


def test_the_tables_dates_and_times_are_proven_where_they_are_written() -> None:
    """Each ``date`` and ``datetime`` target of the tables writes at an element whose type
    accepts every value of its kind, so the route does not test those values again (the
    differential test above still checks every resource it builds, dates included, against
    the structural check)."""
    targets = [(table.name, target) for table in STANDARD.tables.values()
               for rule in table.rules.values() for target in rule.targets
               if target.kind in ("date", "datetime")]
    assert len(targets) >= 10
    for name, target in targets:
        for resource_type in {STANDARD.tables[name].roles[r].type for r in target.roles}:
            assert lexical.proven_valid(target.kind, resource_type, target.path), \
                (name, target.path)


@pytest.mark.parametrize(("kind", "resource_type", "path", "refused"), [
    ("date", "Observation", "issued", True),  # an instant needs a time
    ("datetime", "Patient", "birthDate", True),  # a date has no time
    ("datetime", "Patient", "gender", True),  # a bound code
    ("date", "Encounter", "period", True),  # an object
    ("date", "Patient", "name[0].given[0]", False),  # a string holds a date, and is tested
])
def test_a_date_is_tested_where_its_type_does_not_accept_every_date(
        kind: str, resource_type: str, path: str, refused: bool) -> None:
    """The proof holds only where the element's type accepts every value of the kind: a
    mapping that put a date where R4 refuses it would still be caught as the route writes."""
    assert not lexical.proven_valid(kind, resource_type, path)
    put = kinds.compile_put(tables.Target(("any",), path, kind, {}))
    resource: dict[str, Any] = {"resourceType": resource_type}
    text = "20240105" if kind == "date" else "202401051230"
    if refused:
        with pytest.raises(ValueError):
            put(resource, text, kinds.Context("XML1", "NGAY", "00000"))
    else:
        put(resource, text, kinds.Context("XML1", "NGAY", "00000"))
