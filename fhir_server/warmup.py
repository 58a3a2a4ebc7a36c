"""Building at start-up what the first visit push would otherwise build inside a request.

The structural tables (every R4 element), the profile validator, the WHO ICD-10 list and
the compiled search parameters of each resource type are made on first use and kept for
the worker's life. Built lazily, they cost the first push of every worker about 0.3 s
(docs/performance.md), and under 8 concurrent pushes the requests queued behind it made the
tail of the first seconds after a start. :func:`warm_up` runs one synthetic visit (every
resource type of the push contract) through the same validation and indexing as a push,
writing nothing, before the worker says it is ready; ``main`` then freezes what it built
(``gc.freeze``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fhir_server.resources import validate_structure
from fhir_server.search.indexing import index_resource
from fhir_server.search.registry import SearchParameterRegistry
from fhir_server.settings import Settings

__all__ = ["WarmUp", "warm_up"]

log = logging.getLogger("fhir_server")

#: The seed of the synthetic visit; any fixed one gives the same visit at every start.
_SEED = 20261202


@dataclass(frozen=True)
class WarmUp:
    """What the warm-up prepared: resources, their types, and how long it took."""

    resources: int
    types: frozenset[str]
    seconds: float


def warm_up(settings: Settings, registry: SearchParameterRegistry) -> WarmUp:
    """Validate and index the resources of a synthetic visit, as a push would, and store
    nothing.

    Profile validation runs where ``settings`` has it on for the type, as in a request. A
    failure is logged and the server starts anyway: the warm-up only moves work earlier.
    """
    from fhir_server.conformance.profiles import default_validator
    from fhir_server.synthetic.generation import visit_bundles

    started = time.perf_counter()
    resources: list[dict[str, Any]] = []
    try:
        bundle = next(visit_bundles(1, _SEED))
        resources = [entry["resource"] for entry in bundle["entry"]]
        for resource in resources:
            validate_structure(resource)
            if settings.validation_mode(resource["resourceType"]) != "off":
                default_validator().validate_resource(resource)
            index_resource(resource, registry)
    except Exception:
        log.warning("the start-up warm-up failed; the first requests build what it would have",
                    exc_info=True)
    done = WarmUp(len(resources), frozenset(r["resourceType"] for r in resources),
                  time.perf_counter() - started)
    log.info("warmed up: %d resources of %d types validated and indexed in %.2f s",
             done.resources, len(done.types), done.seconds)
    return done
