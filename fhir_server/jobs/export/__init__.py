"""Bulk Data export (FHIR Bulk Data Access IG, https://hl7.org/fhir/uv/bulkdata/export.html):
the job that writes what a caller may see to NDJSON files, from a consistent snapshot.

``request`` parses the kick-off, ``plan`` turns it into searches under the caller's access,
``pages`` reads them as they were at the snapshot (``changes``: what was written since),
``members`` finds a Group's patients, ``lines`` and ``files`` write the NDJSON, ``job`` runs
it all as a background job (``jobs.runner``), and ``status`` answers the status, cancel and
file requests. The kick-off itself is the ``$export`` operation (``operations.export``).
"""
