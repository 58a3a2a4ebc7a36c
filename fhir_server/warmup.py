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

from fhir_server.interactions.context import Services
from fhir_server.interactions.prepare import prepare_resource
from fhir_server.security.caller import SERVER
from fhir_server.security.policy import Access

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


def warm_up(services: Services) -> WarmUp | None:
    """Prepare (``prepare_resource``: structure, then profiles where validation is on for the
    type) and index (``Services.index``) the resources of a synthetic visit, as a push does
    before the write lock, and store nothing.

    Returns what it prepared, or None when it failed: the failure is logged and the server
    starts anyway, since the warm-up only moves work earlier.
    """
    from fhir_server.synthetic.generation import visit_bundles

    started = time.perf_counter()
    try:
        resources = [entry["resource"] for entry in next(visit_bundles(1, _SEED))["entry"]]
        server = Access(SERVER, services.registry)
        for resource in resources:
            prepare_resource(services, server, resource, resource["resourceType"])
            services.index(resource)
    except Exception:
        log.warning("the start-up warm-up failed; the first requests build what it would have",
                    exc_info=True)
        return None
    done = WarmUp(len(resources), frozenset(r["resourceType"] for r in resources),
                  time.perf_counter() - started)
    log.info("warmed up: %d resources of %d types prepared and indexed in %.2f s",
             done.resources, len(done.types), done.seconds)
    return done
