"""The facility registry: the Ministry's list of medical facilities as Organizations.

- ``csv_rows``: the CSV format (docs/operations.md, "The facility registry") read into
  checked rows, each malformed row reported with its line number;
- ``organization``: a row as an Organization of the Vietnamese profile, marked as a registry
  entry;
- ``loading``: ``fhir-server facilities load FILE.csv``, idempotent, through the push path;
- ``known``: the codes the registry holds, and the check of a write that names a facility.
"""
