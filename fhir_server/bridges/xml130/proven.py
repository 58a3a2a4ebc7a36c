"""The base invariants that hold by the route's construction, whatever a visit's fields say.

A visit's transaction evaluates the base R4 invariants (``conformance.base_invariants``) of
what the route built, except the (context, key) pairs named here
(``base_invariants.check_unproven``, through ``conformance.built``). Each pair holds because
the route writes the elements it tests from its own tables and code, never from a sent
field's text; the reason is given with it. Every other pair is evaluated, in particular those
whose elements come from sent fields: ``per-1`` (NGAY_VAO/NGAY_RA, the card's dates),
``app-2`` and ``app-3`` (an appointment's dates), ``drt-1`` (SO_NGAY_DTRI), ``ext-1`` (the
extensions' values), ``obs-6`` and ``obs-7`` (GIA_TRI and its absent reason), ``con-4`` and
``con-5`` (a condition's statuses), and any pair a new table makes that is not listed.

The proof is the differential test ``tests/unit/bridges/test_xml130_invariants.py``: over the
generated corpus and visits with hostile field values, the full evaluation and this shortcut
give the same answer, every pair below is met there, and a built resource broken in a pair
that depends on a sent value is still refused.
"""

from __future__ import annotations

from fhir_server.conformance.built import Pairs
from fhir_server.conformance.structure import r4_resource_types

__all__ = ["PROVEN", "REASONS"]

#: (context, key) -> why it holds for every resource the route builds.
REASONS: dict[tuple[str, str], str] = {
    ("Reference", "ref-1"):
        "a reference is an entry's urn:uuid, a Binary/<id> or a logical reference (an "
        "identifier, no reference text); never a local '#' reference",
    ("Attachment", "att-1"):
        "the only Attachment is the original table's (transaction._original), whose "
        "contentType is written with its data",
    ("Composition.section", "cmp-1"):
        "a section is written with its narrative (kind 'section')",
    ("Composition.section", "cmp-2"):
        "no table writes a section's emptyReason",
    ("ContactPoint", "cpt-2"):
        "the telecom's system is a fixed value set with its value (DIEN_THOAI)",
    ("Organization", "org-1"):
        "the facility's Organization always has MA_CSKCB as identifier (a visit without "
        "it is refused before mapping)",
    ("Quantity", "qty-3"):
        "a unit code is only written by a template, with its system",
    ("SimpleQuantity", "qty-3"):
        "no table writes a dispensed quantity's code",
    ("Duration", "qty-3"):
        "the length's code is a fixed value set with its UCUM system",
    ("SimpleQuantity", "sqty-1"):
        "no table writes a comparator",
    ("Appointment.participant", "app-1"):
        "a participant is written with its actor (the patient's link, a doctor's actors)",
    ("Appointment", "app-4"):
        "no table writes a cancelationReason",
    ("ServiceRequest", "prr-1"):
        "no table writes an orderDetail",
}

#: ``dom-2`` to ``dom-5`` test ``contained`` only: the route never writes it (and the
#: shortcut's walk hands a resource with a nested one to the full evaluation).
_CONTAINED = ("dom-2", "dom-3", "dom-4", "dom-5")

#: The pairs the transaction does not evaluate for what the route built.
PROVEN: Pairs = frozenset(REASONS) | frozenset(
    (resource_type, key) for resource_type in r4_resource_types() for key in _CONTAINED)
