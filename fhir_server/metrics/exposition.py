"""What a scrape of ``/metrics`` gets: the Prometheus text format, over every worker process.

In multiprocess mode (``serve`` names the directory, ``metrics.directory``) a scrape reads the
files of every worker, the live ones and those that ended (their counters still count); a
process that ends cleanly removes its share of the live-only gauges (:func:`process_ended`).
Without the directory (tests, an embedding application) the process's own registry answers.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from fhir_server.metrics.directory import MULTIPROCESS_ENV

__all__ = ["CONTENT_TYPE", "process_ended", "render"]

#: The classic text format, which every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def render() -> bytes:
    """The current figures in the Prometheus text format (summed over worker processes)."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_ended() -> None:
    """Drop this process's live-only gauges (the audit backlog) from the shared figures."""
    if os.environ.get(MULTIPROCESS_ENV):
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
