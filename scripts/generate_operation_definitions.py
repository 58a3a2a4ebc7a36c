"""Generate the OperationDefinitions of the operations the server has, for the
CapabilityStatement's ``definition`` links (``[base]/OperationDefinition/[name]``).

Writes ``profiles/OperationDefinition-<name>.json`` for each name of
``fhir_server.operations.OPERATIONS``: the R4 definition (read from ``--r4``, default
../shared/fhir-r4/profiles-resources.json, FHIR 4.0.1) where R4 has one, trimmed of its
narrative, with the server's levels (``type``/``instance``) and resource types; the
project's own operations (``$summary``, Encounter ``$document``, ``$json-schema``) are
written here as data. The id of each is the operation's name, so the link resolves once
the server stores the file at start-up (``conformance.seeding``).

Run: ``.venv/bin/python scripts/generate_operation_definitions.py [--r4 FILE] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fhir_server.operations import OPERATIONS  # noqa: E402

OWN = "https://fhir.sskdt.vn/OperationDefinition"
#: The R4 definition of each operation the server has, by name.
R4_IDS = {"validate": "Resource-validate", "expand": "ValueSet-expand",
          "validate-code": "ValueSet-validate-code", "lookup": "CodeSystem-lookup",
          "everything": "Patient-everything"}
_KEPT = ("url", "version", "name", "status", "kind", "date", "publisher", "description",
         "affectsState", "code", "comment", "resource", "system", "type", "instance",
         "parameter")


def _parameter(name: str, use: str, minimum: int, maximum: str, type_: str,
               documentation: str) -> dict[str, Any]:
    return {"name": name, "use": use, "min": minimum, "max": maximum,
            "documentation": documentation, "type": type_}


#: The project's own operations (no R4 definition).
OWN_DEFINITIONS: dict[str, dict[str, Any]] = {
    "summary": {
        "url": f"{OWN}/summary", "name": "HealthBookSummary", "status": "active",
        "kind": "operation", "code": "summary",
        "description": "The citizen's electronic health book (So suc khoe dien tu) as a document "
                       "Bundle: the Patient's record in sections, newest first. By id, or by "
                       "identifier (system|value, the CCCD).",
        "parameter": [
            _parameter("identifier", "in", 0, "1", "string",
                       "system|value of the Patient's identifier (type level); a "
                       "valueIdentifier is accepted too"),
            _parameter("return", "out", 1, "1", "Bundle", "The document Bundle"),
        ],
    },
    "document": {
        "url": f"{OWN}/document", "name": "EncounterDocument", "status": "active",
        "kind": "operation", "code": "document",
        "description": "The document of one visit: a document Bundle whose Composition lists "
                       "what the Encounter produced.",
        "parameter": [_parameter("return", "out", 1, "1", "Bundle", "The document Bundle")],
    },
    "export": {
        "url": f"{OWN}/export", "name": "BulkDataExport", "status": "active",
        "kind": "operation", "code": "export",
        "description": "Bulk Data export (FHIR Bulk Data Access IG v2.0, with the _until, "
                       "organizeOutputBy and allowPartialManifests parameters of its later "
                       "versions: http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export, "
                       "patient-export and group-export): asynchronous (Prefer: respond-async, "
                       "202 and Content-Location), NDJSON files of what the caller may see, "
                       "from a consistent snapshot. See docs/bulk-export.md.",
        "parameter": [
            _parameter("_outputFormat", "in", 0, "1", "string",
                       "application/fhir+ndjson (also application/ndjson, ndjson)"),
            _parameter("_since", "in", 0, "1", "instant",
                       "Only resources last updated after this instant"),
            _parameter("_until", "in", 0, "1", "instant",
                       "Only resources last updated before this instant"),
            _parameter("_type", "in", 0, "*", "string", "Comma-separated resource types"),
            _parameter("_elements", "in", 0, "*", "string",
                       "[Type.]element: resources cut to these (and mandatory) elements, "
                       "tagged SUBSETTED"),
            _parameter("patient", "in", 0, "*", "Reference",
                       "Patient and Group level: only these patients' compartments"),
            _parameter("includeAssociatedData", "in", 0, "*", "code",
                       "Not supported: refused (ignored under Prefer: handling=lenient)"),
            _parameter("_typeFilter", "in", 0, "*", "string",
                       "Type?query: only resources of Type that the search matches "
                       "(several for one type are ORed)"),
            _parameter("organizeOutputBy", "in", 0, "1", "string",
                       "Patient (Patient and Group level): files of patient blocks"),
            _parameter("allowPartialManifests", "in", 0, "1", "boolean",
                       "Accepted; the manifest is always whole, given once the export is done"),
        ],
    },
    "break-glass": {
        "url": f"{OWN}/break-glass", "name": "BreakTheGlass", "status": "active",
        "kind": "operation", "code": "break-glass", "affectsState": True,
        "description": "Emergency access by a clinician or facility to one patient's record "
                       "without the patient's Consent, for a limited time (one hour by "
                       "default): recorded as an emergency Consent, every access under it "
                       "audited with purpose BTG and shown in the citizen's access log.",
        "parameter": [
            _parameter("reason", "in", 1, "1", "string", "Why the record is needed now"),
            _parameter("return", "out", 1, "1", "Consent", "The emergency Consent"),
        ],
    },
    "access-log": {
        "url": f"{OWN}/access-log", "name": "AccessLog", "status": "active",
        "kind": "operation", "code": "access-log",
        "description": "Who saw or changed the citizen's record, newest first: when, who "
                       "(user, facility, app), what, why (treatment, emergency, the citizen "
                       "themself) and under which Consent. For the citizen and operators.",
        "parameter": [
            _parameter("_count", "in", 0, "1", "integer", "Accesses per page (50; at most 500)"),
            _parameter("_cursor", "in", 0, "1", "string", "The next value of the page before"),
            _parameter("return", "out", 1, "1", "Parameters",
                       "One access parameter per access (when, action, outcome, who, facility, "
                       "app, what, why, emergency, consent, event) and next"),
        ],
    },
    "json-schema": {
        "url": f"{OWN}/json-schema", "name": "ProfileJsonSchema", "status": "active",
        "kind": "operation", "code": "json-schema",
        "description": "A JSON Schema of a profile (StructureDefinition) for integrators.",
        "parameter": [
            _parameter("url", "in", 0, "1", "uri", "The profile's canonical URL (type level)"),
            _parameter("return", "out", 1, "1", "Binary", "The JSON Schema"),
        ],
    },
    "import-xml130": {
        "url": f"{OWN}/import-xml130", "name": "ImportXml130", "status": "active",
        "kind": "operation", "code": "import-xml130", "affectsState": True,
        "description": "Import the XML 130 claim envelope (QD 130/4750/3176) a facility sends to "
                       "the insurance portal: each visit (HOSO) becomes one transaction of "
                       "Vietnamese-profile resources. The body is the envelope "
                       "(application/xml) or a Parameters with it as base64.",
        "parameter": [
            _parameter("envelope", "in", 0, "1", "base64Binary",
                       "The envelope, when the body is a Parameters"),
            _parameter("standard", "in", 0, "1", "string", "130, 4750 (default) or 3176"),
            _parameter("dry-run", "in", 0, "1", "boolean", "Convert without writing"),
            _parameter("return", "out", 1, "1", "Parameters",
                       "One visit part per HOSO: created, updated, unchanged or rejected"),
        ],
    },
    "convert-xml130": {
        "url": f"{OWN}/convert-xml130", "name": "ConvertXml130", "status": "active",
        "kind": "operation", "code": "convert-xml130", "affectsState": False,
        "description": "The transaction Bundles an XML 130 import would commit, without writing.",
        "parameter": [
            _parameter("envelope", "in", 0, "1", "base64Binary",
                       "The envelope, when the body is a Parameters"),
            _parameter("standard", "in", 0, "1", "string", "130, 4750 (default) or 3176"),
            _parameter("return", "out", 1, "1", "Resource",
                       "The Bundle of a one-visit envelope, else a Parameters of Bundles"),
        ],
    },
    "export-xml130": {
        "url": f"{OWN}/export-xml130", "name": "ExportXml130", "status": "active",
        "kind": "operation", "code": "export-xml130", "affectsState": False,
        "description": "A stored visit written back as an XML 130 envelope of one HOSO.",
        "parameter": [
            _parameter("standard", "in", 0, "1", "string", "130, 4750 (default) or 3176"),
            _parameter("return", "out", 1, "1", "Binary", "The envelope (application/xml)"),
        ],
    },
    "verify-signature": {
        "url": f"{OWN}/verify-signature", "name": "VerifySignature", "status": "active",
        "kind": "operation", "code": "verify-signature", "affectsState": False,
        "description": "Check again the digital signatures about a resource: a Bundle's own "
                       "Bundle.signature, a signed PDF, or the signatures whose proof (the "
                       "server's Provenance, with the bytes received) names the resource; "
                       "against the trust list, the certificate's validity at the signing time "
                       "and revocation at the moment the server received it.",
        "parameter": [
            _parameter("verified", "out", 1, "1", "boolean",
                       "There is at least one signature and every one verifies"),
            {"name": "signature", "use": "out", "min": 0, "max": "*",
             "documentation": "One per signature",
             "part": [_parameter(name, "out", low, "1", kind, text) for name, low, kind, text in (
                 ("result", 1, "code", "verified, invalid, malformed, unsupported, untrusted, "
                                       "expired, not-yet-valid, revoked or unverifiable"),
                 ("messageId", 1, "string", "The result's stable message id"),
                 ("detail", 1, "string", "Why, in words"),
                 ("kind", 1, "code", "jws, xmldsig or pdf"),
                 ("signer", 0, "string", "The signer's certificate subject"),
                 ("issuer", 0, "string", "Its issuer"),
                 ("signingTime", 0, "dateTime", "The signing time the signature claims"),
                 ("trustAnchor", 0, "string", "The root of the trust list it leads to"),
                 ("proof", 0, "Reference", "The server's Provenance recording it"),
                 ("changedSince", 0, "boolean", "The resource changed after it was signed"))]},
        ],
    },
}


BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition"
#: The Subscriptions Backport IG's operations (its definitions, restated here as data).
OWN_DEFINITIONS.update({
    "status": {
        "url": f"{BACKPORT}/backport-subscription-status", "name": "R5SubscriptionStatus",
        "status": "active", "kind": "operation", "code": "status",
        "description": "The current status of one Subscription (instance) or of every "
                       "Subscription the caller may read (type), as SubscriptionStatus "
                       "Parameters (query-status).",
        "parameter": [
            _parameter("id", "in", 0, "*", "id", "Type level: the Subscriptions to report"),
            _parameter("status", "in", 0, "*", "code", "Type level: only these statuses"),
            _parameter("return", "out", 1, "1", "Bundle", "A searchset of statuses"),
        ],
    },
    "events": {
        "url": f"{BACKPORT}/backport-subscription-events", "name": "R5SubscriptionEvents",
        "status": "active", "kind": "operation", "code": "events",
        "description": "The events a Subscription recorded (kept 7 days by default), as a "
                       "notification Bundle (query-event).",
        "parameter": [
            _parameter("eventsSinceNumber", "in", 0, "1", "string", "First event, inclusive"),
            _parameter("eventsUntilNumber", "in", 0, "1", "string", "Last event, inclusive"),
            _parameter("content", "in", 0, "1", "code",
                       "empty | id-only | full-resource (at most the Subscription's)"),
            _parameter("return", "out", 1, "1", "Bundle", "The notification Bundle"),
        ],
    },
    "get-ws-binding-token": {
        "url": f"{BACKPORT}/backport-subscription-get-ws-binding-token",
        "name": "R5SubscriptionGetWsBindingToken", "status": "active", "kind": "operation",
        "code": "get-ws-binding-token",
        "description": "A token a websocket client sends (bind-with-token) to receive the "
                       "notifications of websocket Subscriptions.",
        "parameter": [
            _parameter("id", "in", 0, "*", "id", "Type level: the Subscriptions to bind"),
            _parameter("token", "out", 1, "1", "string", "The binding token"),
            _parameter("expiration", "out", 1, "1", "dateTime", "When the token expires"),
            _parameter("subscription", "out", 0, "*", "string", "The Subscriptions bound"),
            _parameter("websocket-url", "out", 1, "1", "url", "Where to connect"),
        ],
    },
})


def _levels(name: str) -> tuple[list[str], bool, bool, bool]:
    """The resource types and levels (system, type, instance) the server has ``name`` at."""
    keys = [(level, rtype) for (level, rtype, op) in OPERATIONS if op == name]
    types = sorted({rtype if rtype != "*" else "Resource" for _, rtype in keys})
    levels = {level for level, _ in keys}
    return types, "system" in levels, "type" in levels, "instance" in levels


def definition(name: str, r4: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The OperationDefinition of ``name`` as the server serves it."""
    source = r4[R4_IDS[name]] if name in R4_IDS else OWN_DEFINITIONS[name]
    body = {key: source[key] for key in _KEPT if key in source}
    types, system, type_, instance = _levels(name)
    body.update(resource=types, system=system, type=type_, instance=instance)
    return {"resourceType": "OperationDefinition", "id": name, **body}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--r4", type=Path,
                        default=REPO.parent / "shared" / "fhir-r4" / "profiles-resources.json")
    parser.add_argument("--out", type=Path, default=REPO / "profiles")
    args = parser.parse_args()
    bundle = json.loads(args.r4.read_text())
    r4 = {e["resource"]["id"]: e["resource"] for e in bundle["entry"]
          if e["resource"]["resourceType"] == "OperationDefinition"}
    for name in sorted({op for (_, _, op) in OPERATIONS}):
        path = args.out / f"OperationDefinition-{name}.json"
        path.write_text(json.dumps(definition(name, r4), ensure_ascii=False, indent=1) + "\n")
        print(path)


if __name__ == "__main__":
    main()
