"""Background work that outlives the request that asked for it.

Jobs: a :class:`~fhir_server.jobs.model.Job` row in the job store (``jobs.sqlite3`` in the
data directory, ``jobs.store``), a runner in each server process that claims queued jobs (and
jobs whose process died) under a lease and runs them as asyncio tasks (``jobs.runner``), and a
pace that bounds the share of the event loop a job takes (``jobs.pace``). A kind of job
(``jobs.runner.JobKind``) says how to run, resume and discard its work; bulk export
(``jobs.export``) is the first.

Beside them, work fed by rows the writes committed (the outbox): subscription delivery
(``subscription_delivery``, ``websocket_hub``).
"""
