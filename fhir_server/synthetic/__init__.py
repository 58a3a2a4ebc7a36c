"""Deterministic synthetic Vietnamese health-book data: one FHIR transaction Bundle per visit.

`generate(patients, seed, out)` writes NDJSON files of transaction Bundles that follow the
hospital push contract (conditional create of Patient and Organization, conditional update of
everything else), so that loading them twice is idempotent.
"""

from __future__ import annotations

from fhir_server.synthetic.generation import BUNDLES_PER_FILE, GenerateSummary, generate

__all__ = ["BUNDLES_PER_FILE", "GenerateSummary", "generate"]
