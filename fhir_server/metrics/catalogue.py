"""Every metric the server exports, defined once, with the functions that observe them.

Names follow Prometheus conventions (``_total`` counters, ``_seconds`` and ``_bytes`` units);
every label takes values from a bounded set (route names, R4 resource types, status codes,
profile URLs, message ids), never from user input as such, so a client cannot grow the number
of series. Gauges say how they combine over worker processes (``multiprocess_mode``): a backlog
is the sum over the live workers, a file size the most recent reading.

Background jobs (``jobs.runner``) are counted by kind (``export``, ``export-cli``): running,
and ended by state; a bulk export counts the resources it writes. The subscriptions' delivery
worker adds what waits in the outbox, attempts by kind, channel and outcome, and events sent
or withheld, in the same last section.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from fhir_server.errors import Issue

__all__ = [
    "AUDIT_BACKLOG",
    "CHECKPOINT_SECONDS",
    "EXPORTED_RESOURCES",
    "JOBS_ENDED",
    "JOBS_RUNNING",
    "LAST_CHECKPOINT",
    "PUSHED_RESOURCES",
    "PUSHES",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SEARCH_TIMEOUTS",
    "SIGNATURE_CHECKS",
    "VALIDATION_FAILURES",
    "WAL_BYTES",
    "WRITE_LOCK_HOLD_SECONDS",
    "WRITE_LOCK_WAIT_SECONDS",
    "count_signature_check",
    "count_validation_failures",
    "counted_push",
    "job_ended",
    "observe_backlog",
    "observe_checkpoint",
    "observe_delivery",
    "observe_push",
    "observe_request",
]

#: Request latencies run from a cached read (under a millisecond) to a slow search (seconds).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0)
#: Lock waits and holds are shorter: a commit group holds the lock for a few milliseconds.
_LOCK_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 10.0)

# --- requests (counted by api.middleware around every HTTP request) ---------------------------
REQUESTS = Counter(
    "fhir_requests", "HTTP requests answered, by interaction, resource type and status",
    ["interaction", "resource_type", "status"])
REQUEST_SECONDS = Histogram(
    "fhir_request_duration_seconds", "Time from request to the end of the response",
    ["interaction", "resource_type"], buckets=_LATENCY_BUCKETS)

# --- pushes (transaction Bundles; the XML 130 bridge counts its visits as source xml130) -------
PUSHES = Counter("fhir_pushes", "Visit pushes, by source (fhir, xml130) and outcome",
                 ["source", "outcome"])
PUSHED_RESOURCES = Counter(
    "fhir_pushed_resources", "Resources (Bundle entries) in pushes, by source and outcome",
    ["source", "outcome"])

# --- validation ---------------------------------------------------------------------------------
VALIDATION_FAILURES = Counter(
    "fhir_validation_failures",
    "Errors found by validation of writes and $validate, by profile and message id",
    ["profile", "message_id"])

# --- signatures (each signature checked on write: a JWS, an envelope's, a PDF's) -----------------
SIGNATURE_CHECKS = Counter(
    "fhir_signature_checks",
    "Signatures checked on write, by kind (jws, xmldsig, pdf) and result (verified, invalid, "
    "untrusted, expired, revoked...)", ["kind", "result"])

# --- storage ------------------------------------------------------------------------------------
WRITE_LOCK_WAIT_SECONDS = Histogram(
    "fhir_store_write_lock_wait_seconds",
    "Time a write scope waited for the write lock (in the process, then across processes)",
    buckets=_LOCK_BUCKETS)
WRITE_LOCK_HOLD_SECONDS = Histogram(
    "fhir_store_write_lock_hold_seconds",
    "Time a commit group held the write lock, from BEGIN to the end of COMMIT",
    buckets=_LOCK_BUCKETS)
WAL_BYTES = Gauge("fhir_sqlite_wal_bytes", "Size of the SQLite write-ahead log",
                  multiprocess_mode="mostrecent")
CHECKPOINT_SECONDS = Histogram(
    "fhir_sqlite_checkpoint_seconds", "Duration of WAL checkpoints, by mode (passive, restart)",
    ["mode"], buckets=_LOCK_BUCKETS)
LAST_CHECKPOINT = Gauge("fhir_sqlite_last_checkpoint_timestamp_seconds",
                        "Unix time of the last WAL checkpoint", multiprocess_mode="mostrecent")
SEARCH_TIMEOUTS = Counter(
    "fhir_search_timeouts", "Searches stopped at FHIR_SERVER_SEARCH_TIMEOUT_S, by resource type",
    ["resource_type"])

# --- background work ----------------------------------------------------------------------------
AUDIT_BACKLOG = Gauge("fhir_audit_backlog", "AuditEvents of reads waiting to be written",
                      multiprocess_mode="livesum")
JOBS_RUNNING = Gauge("fhir_jobs_running", "Background jobs running, by kind", ["kind"],
                     multiprocess_mode="livesum")
JOBS_ENDED = Counter(
    "fhir_jobs_ended", "Background jobs that ended, by kind and state (completed, failed, "
    "cancelled)", ["kind", "state"])
EXPORTED_RESOURCES = Counter("fhir_exported_resources",
                             "Resources written to the files of bulk exports")

# The outbox is shared by the workers: every worker reads the same figures, so the most recent.
SUBSCRIPTION_EVENTS_WAITING = Gauge(
    "fhir_subscription_events_waiting",
    "Notification events recorded and not yet delivered, over live subscriptions",
    multiprocess_mode="mostrecent")
SUBSCRIPTIONS_WAITING = Gauge(
    "fhir_subscriptions_waiting", "Live subscriptions with events not yet delivered",
    multiprocess_mode="mostrecent")
SUBSCRIPTIONS_RETRYING = Gauge(
    "fhir_subscriptions_retrying",
    "Live subscriptions whose last delivery attempt failed (retried with back-off)",
    multiprocess_mode="mostrecent")
SUBSCRIPTION_DELIVERIES = Counter(
    "fhir_subscription_deliveries",
    "Delivery attempts, by kind (handshake, event-notification, heartbeat), channel "
    "(rest-hook, websocket) and outcome (sent; retry: failed, tried again later; error: "
    "failed past the retry window, the subscription went to error)",
    ["kind", "channel", "outcome"])
SUBSCRIPTION_EVENTS = Counter(
    "fhir_subscription_events",
    "Events sent in notifications, by outcome (focus: with the resource; withheld: without "
    "it, the owner may not read it now)", ["outcome"])

_request_children: dict[tuple[str, str, int], Counter] = {}
_latency_children: dict[tuple[str, str], Histogram] = {}


def observe_request(interaction: str, resource_type: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration (label children are cached: a
    ``labels()`` call costs more than the increment)."""
    key = (interaction, resource_type, status)
    counter = _request_children.get(key)
    if counter is None:
        counter = _request_children[key] = REQUESTS.labels(interaction, resource_type,
                                                           str(status))
    counter.inc()
    pair = (interaction, resource_type)
    histogram = _latency_children.get(pair)
    if histogram is None:
        histogram = _latency_children[pair] = REQUEST_SECONDS.labels(*pair)
    histogram.observe(seconds)


def observe_push(source: str, accepted: bool, resources: int) -> None:
    """Count one push (a visit) from ``source`` (``fhir``, ``xml130``) and its resources."""
    outcome = "accepted" if accepted else "rejected"
    PUSHES.labels(source, outcome).inc()
    PUSHED_RESOURCES.labels(source, outcome).inc(resources)


@contextmanager
def counted_push(source: str, bundle: Any) -> Iterator[None]:
    """Count the processing of ``bundle`` as a push if it is a transaction Bundle: accepted
    when the block ends normally, rejected when it raises (the exception goes on)."""
    push = isinstance(bundle, dict) and bundle.get("type") == "transaction"
    entries = bundle.get("entry") if push else None
    resources = len(entries) if isinstance(entries, list) else 0
    try:
        yield
    except Exception:
        if push:
            observe_push(source, False, resources)
        raise
    if push:
        observe_push(source, True, resources)


def count_validation_failures(profile: str, issues: Iterable[Issue]) -> None:
    """Count the errors among ``issues`` found against ``profile`` (a StructureDefinition URL
    the server knows), each under its message id."""
    for issue in issues:
        if issue.severity in ("error", "fatal"):
            VALIDATION_FAILURES.labels(profile, issue.message_id).inc()


def count_signature_check(kind: str, result: str) -> None:
    """Count one signature checked on write: its kind and its result (both from the server's
    own bounded sets, ``signatures.verification``)."""
    SIGNATURE_CHECKS.labels(kind, result).inc()


def observe_checkpoint(mode: str, seconds: float, wal_bytes: int) -> None:
    """Note a WAL checkpoint: its duration, its time and the WAL's size after it."""
    CHECKPOINT_SECONDS.labels(mode).observe(seconds)
    LAST_CHECKPOINT.set(time.time())
    WAL_BYTES.set(wal_bytes)


def job_ended(kind: str, state: str) -> None:
    """Count a background job of ``kind`` that ended in ``state``."""
    JOBS_ENDED.labels(kind, state).inc()


def observe_backlog(events: int, subscriptions: int, retrying: int) -> None:
    """Note what waits in the subscriptions' outbox (read by the delivery worker)."""
    SUBSCRIPTION_EVENTS_WAITING.set(events)
    SUBSCRIPTIONS_WAITING.set(subscriptions)
    SUBSCRIPTIONS_RETRYING.set(retrying)


def observe_delivery(kind: str, channel: str, outcome: str, focus: int = 0,
                     withheld: int = 0) -> None:
    """Count one delivery attempt and, when it was sent, its events with and without focus."""
    SUBSCRIPTION_DELIVERIES.labels(kind, channel, outcome).inc()
    if focus:
        SUBSCRIPTION_EVENTS.labels("focus").inc(focus)
    if withheld:
        SUBSCRIPTION_EVENTS.labels("withheld").inc(withheld)
