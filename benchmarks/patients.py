"""The Patient document every benchmark writes: one template shared by wrk, seeding and SQLite.

The create scenario (Lua), the seeding of read ids (Python) and the raw SQLite baseline all fill
the same template, so the server and the baselines handle byte-for-byte comparable JSON. The
placeholder ``__N__`` is replaced by a counter so that each body differs a little (a server that
cached identical bodies would otherwise look faster than it is).
"""

from __future__ import annotations

__all__ = ["COUNTER_TOKEN", "PATIENT_TEMPLATE", "patient_document"]

COUNTER_TOKEN = "__N__"

PATIENT_TEMPLATE = (
    '{"resourceType":"Patient",'
    '"extension":[{"url":"https://fhir.sskdt.vn/StructureDefinition/patient-ethnicity",'
    '"valueCoding":{"system":"https://fhir.sskdt.vn/CodeSystem/ethnic-group","code":"01",'
    '"display":"Kinh"}}],'
    '"identifier":[{"system":"http://fhir.ehealth.gov.vn/core/sid/national_id",'
    '"value":"001085012345"},'
    '{"system":"urn:oid:2.16.840.1.113883.2.24.1.1","value":"BENCH-__N__"}],'
    '"active":true,'
    '"name":[{"use":"official","family":"Nguyễn","given":["Văn","An __N__"],'
    '"text":"Nguyễn Văn An __N__"}],'
    '"telecom":[{"system":"phone","value":"0912345678","use":"mobile"}],'
    '"gender":"male","birthDate":"1985-04-12",'
    '"address":[{"use":"home","line":["12 Phố Huế"],"city":"Hà Nội","state":"Hà Nội",'
    '"country":"VN","extension":[{"url":'
    '"https://fhir.sskdt.vn/StructureDefinition/address-province-code","valueCode":"01"}]}]}'
)
"""A valid Vietnamese Patient (profile vn-patient): the server validates it fully."""


def patient_document(counter: int) -> bytes:
    """Return the UTF-8 JSON of the benchmark Patient numbered ``counter``."""
    return PATIENT_TEMPLATE.replace(COUNTER_TOKEN, str(counter)).encode()
