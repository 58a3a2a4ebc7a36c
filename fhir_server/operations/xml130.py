"""The XML 130 operations: ``$import-xml130``, ``$convert-xml130`` and ``$export-xml130``.

- ``POST [base]/$import-xml130`` with the envelope a facility sends to the insurance portal
  (``Content-Type: application/xml``, or a ``Parameters`` with ``envelope`` as
  ``valueBase64Binary``): each visit becomes one transaction through the push path. The answer
  is a ``Parameters`` with one ``visit`` part per HOSO (created, updated, unchanged or rejected,
  with an OperationOutcome located at the XML fields); when every visit is rejected the request
  fails with the first rejection's status. ``dry-run=true`` converts without writing. Each
  visit's transaction leaves its AuditEvent; the import leaves one of its own only when a
  visit was rejected before its transaction (one AuditEvent per visit, not two).
- ``POST [base]/$convert-xml130``: the dry run; one visit answers its transaction Bundle,
  several a ``Parameters`` with one Bundle each.
- ``GET Encounter/[id]/$export-xml130``: the visit written back as XML 130, as a ``Binary``
  (``application/xml``) holding an unsigned envelope of one HOSO.

``standard`` (130, 4750 or 3176; default 4750) chooses the tables. See docs/hospital-push.md.
"""

from __future__ import annotations

import base64
import binascii

from fhir_server.bridges.xml130.exporting import export_visit
from fhir_server.bridges.xml130.visits import convert_envelope, import_envelope, standard_of
from fhir_server.errors import BadRequest
from fhir_server.interactions.context import Outcome, Services
from fhir_server.operations.parameters import OperationInput
from fhir_server.security.policy import Access

__all__ = ["RAW_BODY_TYPES", "convert_xml130", "export_xml130", "import_xml130"]

#: The media types ``$import-xml130`` and ``$convert-xml130`` read as the raw envelope.
RAW_BODY_TYPES = frozenset({"application/xml", "text/xml"})


def _envelope(call: OperationInput) -> bytes:
    if call.raw is not None:
        return call.raw
    text = call.value("envelope")
    if text is None:
        raise BadRequest("Send the envelope as the body (application/xml) or as the Parameters "
                         "parameter 'envelope' (valueBase64Binary)",
                         message_id="MSG_XML130_NO_ENVELOPE", expression=("envelope",))
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("The parameter 'envelope' is not valid base64",
                         message_id="MSG_XML130_BASE64", expression=("envelope",)) from None


async def _convert(services: Services, call: OperationInput) -> Outcome:
    report = await convert_envelope(services, _envelope(call), standard_of(call.value("standard")))
    report.raise_if_all_rejected()
    if len(report.visits) == 1 and report.visits[0].bundle is not None:
        return Outcome(200, body=report.visits[0].bundle)
    return Outcome(200, body=report.parameters())


async def import_xml130(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``$import-xml130`` (or its dry run)."""
    if (call.value("dry-run") or "").lower() == "true":
        return await _convert(services, call)
    report = await import_envelope(services, access, _envelope(call),
                                   standard_of(call.value("standard")))
    report.raise_if_all_rejected()
    return Outcome(200, body=report.parameters(), audited=report.audited)


async def convert_xml130(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``$convert-xml130``: the transaction Bundles an import would commit."""
    return await _convert(services, call)


async def export_xml130(services: Services, access: Access, call: OperationInput) -> Outcome:
    """Run ``Encounter/[id]/$export-xml130``: a Binary holding the visit's envelope."""
    envelope = await export_visit(services, access, standard_of(call.value("standard")),
                                  str(call.id))
    binary = {"resourceType": "Binary", "contentType": "application/xml",
              "data": base64.b64encode(envelope).decode()}
    return Outcome(200, body=binary)
