"""The job store: jobs are claimed under a lease by one worker at a time, resumed when their
worker is gone, stopped when cancelled, and removed when they expire."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_server.jobs.model import (
    JobState,
    caller_from_record,
    caller_record,
    owner_key,
)
from fhir_server.jobs.store import JobStore
from fhir_server.security.caller import Caller
from fhir_server.security.scopes import parse_scopes


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[JobStore]:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.open()
    yield store
    store.close()


def _alive(worker: str) -> bool:
    return False


def test_a_created_job_is_queued_with_its_owner_and_request(jobs: JobStore) -> None:
    job = jobs.create("export", {"subject": "a"}, "a", {"types": ["Patient"]})
    assert job.state is JobState.QUEUED
    assert jobs.get(job.id) == job
    assert job.owner == {"subject": "a"} and job.request == {"types": ["Patient"]}
    assert jobs.active("a", "export") == 1 and jobs.active("b", "export") == 0
    assert jobs.get("nothing") is None


def test_two_workers_never_claim_the_same_job(jobs: JobStore) -> None:
    job = jobs.create("export", {}, "a", {})
    first = jobs.claim("w1", ["export"], 30, _alive)
    assert first is not None and first.id == job.id and first.state is JobState.RUNNING
    assert jobs.claim("w2", ["export"], 30, _alive) is None
    assert jobs.claim("w2", ["other-kind"], 30, _alive) is None


def test_a_job_whose_lease_ran_out_or_whose_worker_died_is_claimed_again(
    jobs: JobStore,
) -> None:
    job = jobs.create("export", {}, "a", {})
    assert jobs.claim("w1", ["export"], 0.01, _alive) is not None
    time.sleep(0.02)
    again = jobs.claim("w2", ["export"], 30, _alive)
    assert again is not None and again.id == job.id
    assert not jobs.renew(job.id, "w1", 30)  # w1 lost it
    assert jobs.claim("w3", ["export"], 30, lambda worker: worker == "w2") is not None


def test_renew_records_progress_and_checkpoint_for_the_lease_holder_only(
    jobs: JobStore,
) -> None:
    job = jobs.create("export", {}, "a", {})
    jobs.claim("w1", ["export"], 30, _alive)
    assert jobs.renew(job.id, "w1", 30, progress="10%", checkpoint={"page": 3})
    assert not jobs.renew(job.id, "w2", 30, progress="stolen")
    found = jobs.get(job.id)
    assert found is not None and found.progress == "10%" and found.checkpoint == {"page": 3}


def test_a_released_job_is_claimed_at_once(jobs: JobStore) -> None:
    job = jobs.create("export", {}, "a", {})
    jobs.claim("w1", ["export"], 30, _alive)
    jobs.release(job.id, "w1")
    again = jobs.claim("w2", ["export"], 30, _alive)
    assert again is not None and again.id == job.id


def test_a_cancelled_job_stops_its_worker_and_expires_at_once(jobs: JobStore) -> None:
    job = jobs.create("export", {}, "a", {})
    jobs.claim("w1", ["export"], 30, _alive)
    before = jobs.cancel(job.id)
    assert before is not None and before.state is JobState.RUNNING
    assert jobs.cancel(job.id) is None
    assert not jobs.renew(job.id, "w1", 30)
    assert not jobs.finish(job.id, "w1", JobState.COMPLETED, time.time() + 60)
    assert [j.id for j in jobs.expired(time.time() + 1)] == [job.id]
    jobs.delete(job.id)
    assert jobs.get(job.id) is None


def test_a_finished_job_keeps_its_result_until_it_expires(jobs: JobStore) -> None:
    job = jobs.create("export", {}, "a", {})
    jobs.claim("w1", ["export"], 30, _alive)
    assert jobs.finish(job.id, "w1", JobState.COMPLETED, time.time() + 60, result={"n": 1})
    done = jobs.get(job.id)
    assert done is not None and done.state is JobState.COMPLETED and done.result == {"n": 1}
    assert jobs.expired() == []
    assert [j.id for j in jobs.expired(time.time() + 61)] == [job.id]
    assert jobs.active("a", "export") == 0


def test_the_caller_of_a_job_round_trips_through_its_record() -> None:
    caller = Caller(subject="s", issuer="i", scopes=parse_scopes(
        "patient/Observation.rs?category=laboratory system/*.read"), client_id="c",
        patient_id="p", organization="Organization/o", verified=True,
        identities=("Organization|http://moh.gov.vn/facility|01001",))
    assert caller_from_record(caller_record(caller)) == caller
    stored = json.loads(json.dumps(caller_record(caller)))  # as the job store keeps it
    assert caller_from_record(stored) == caller
    assert hash(caller_from_record(stored).identities)  # the policy's memo keys hash it
    assert caller_from_record(caller_record(Caller())).unlimited
    assert caller_from_record({**caller_record(caller), "unknown": 1}) == caller


def test_the_owner_of_a_job_is_the_token_s_issuer_subject_client_and_patient() -> None:
    mine = Caller(subject="s", issuer="i", client_id="c", patient_id="p", token_id="t1")
    assert owner_key(mine) == owner_key(Caller(subject="s", issuer="i", client_id="c",
                                               patient_id="p", token_id="t2"))
    for other in (Caller(subject="x", issuer="i", client_id="c", patient_id="p"),
                  Caller(subject="s", issuer="j", client_id="c", patient_id="p"),
                  Caller(subject="s", issuer="i", client_id="d", patient_id="p"),
                  Caller(subject="s", issuer="i", client_id="c", patient_id="q")):
        assert owner_key(other) != owner_key(mine)
