"""Tests of the benchmark harness itself: wrk parsing, targets, scenarios, baselines.

Run with ``.venv/bin/python -m pytest benchmarks/test_harness.py -q`` (no server, no wrk).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import pytest
from baseline_app import app
from loadgen import parse_wrk
from machine_use import Snapshot, group_cpu_s, lock_sums_of, lock_use, machine_busy_s, use_between
from patients import patient_document
from results import Measurement, Target, check_targets, format_table
from scenarios import SCENARIOS, SUITES, expand
from sqlite_inserts import measure_batched_inserts, measure_inserts, measure_reads

WRK_REPORT = """Running 10s test @ http://127.0.0.1:8080/fhir/Patient
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.01ms    2.02ms  41.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    2.50ms
     90%    4.00ms
     99%    1.20s
  43000 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   4300.12
Transfer/sec:      2.00MB
"""


def test_wrk_report_is_parsed_into_milliseconds_and_errors() -> None:
    result = parse_wrk(WRK_REPORT)
    assert result.requests == 43000
    assert result.requests_per_s == pytest.approx(4300.12)
    assert result.percentiles_ms == pytest.approx({50: 0.812, 75: 2.5, 90: 4.0, 99: 1200.0})
    assert (result.non_2xx, result.socket_errors, result.errors) == (7, 5, 12)


def test_wrk_report_without_throughput_is_rejected() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def _measured(name: str, rps: float, p99: float, errors: int = 0) -> Measurement:
    return Measurement(name, "http", rps, 1.0, p99, 100, errors)


@pytest.mark.parametrize(
    ("measurement", "target", "verdict"),
    [
        (
            _measured("fhir-read", 3000, 10),
            Target("fhir-read", "requests_per_s", ">=", 2500),
            "PASS",
        ),
        (
            _measured("fhir-read", 2000, 10),
            Target("fhir-read", "requests_per_s", ">=", 2500),
            "FAIL",
        ),
        (_measured("fhir-read", 3000, 25), Target("fhir-read", "p99_ms", "<=", 20), "FAIL"),
        (
            _measured("fhir-read", 3000, 10, errors=1),
            Target("fhir-read", "p99_ms", "<=", 20),
            "FAIL",
        ),
    ],
)
def test_target_verdict_follows_measured_value_and_errors(
    measurement: Measurement, target: Target, verdict: str
) -> None:
    [outcome] = check_targets([measurement], [target])
    assert outcome.verdict == verdict


def test_targets_of_scenarios_that_did_not_run_are_left_out() -> None:
    outcomes = check_targets([_measured("asgi-get", 9000, 1)],
                             [Target("fhir-read", "p99_ms", "<=", 20)])
    assert outcomes == []


def test_table_shows_ratio_to_each_baseline_that_ran() -> None:
    fhir = Measurement("fhir-read", "http", 1000, 2, 9, 10, 0, ("asgi-get", "sqlite-read"))
    table = format_table([fhir, _measured("asgi-get", 4000, 1)], [])
    assert "0.25x asgi-get" in table
    assert "sqlite-read" not in table.splitlines()[2]


def test_table_shows_the_server_cpu_and_the_other_cores_where_measured() -> None:
    watched = Measurement("push", "http", 150, 40, 90, 3000, 0, (),
                          {"server_cpu_ms_per_request": 9.25, "other_cores": 0.31})
    table = format_table([watched, _measured("asgi-get", 4000, 1)], [])
    push_row, asgi_row = table.splitlines()[2:4]
    assert push_row.split()[5:7] == ["9.25", "0.31"]
    assert asgi_row.split()[5:7] == ["-", "-"]


def test_machine_use_splits_the_busy_cores_between_server_harness_and_others() -> None:
    before = Snapshot(100.0, 50.0, {10: 1.0, 11: 2.0}, 0.5)
    # 2 s later: the machine was busy 3.6 s; the server 2.0 (pid 12 new); wrk 0.6.
    after = Snapshot(102.0, 53.6, {10: 2.5, 11: 2.4, 12: 0.1}, 1.1)
    use = use_between(before, after, operations=200)
    assert use == {"server_cpu_ms_per_request": 10.0, "server_cores_used": 1.0,
                   "busiest_process_core": 0.75, "wrk_cores": 0.3, "other_cores": 0.5}


def test_machine_busy_time_is_all_but_idle_and_iowait() -> None:
    tick = os.sysconf("SC_CLK_TCK")
    stat = f"cpu  {tick} {tick} {tick} {50 * tick} {7 * tick} {tick} {tick} {tick} 0 0\ncpu0 1\n"
    assert machine_busy_s(stat) == pytest.approx(6.0)
    assert machine_busy_s() > 0
    with pytest.raises(ValueError):
        machine_busy_s("intr 1 2 3\n")


def test_the_server_group_is_read_from_proc() -> None:
    mine = group_cpu_s(os.getpgrp())
    assert os.getpid() in mine and mine[os.getpid()] > 0


def test_write_lock_use_is_read_from_the_metrics_of_all_workers() -> None:
    metrics = (
        "# TYPE fhir_store_write_lock_hold_seconds histogram\n"
        'fhir_store_write_lock_hold_seconds_bucket{le="0.005"} 3\n'
        "fhir_store_write_lock_hold_seconds_sum 0.5\n"
        "fhir_store_write_lock_hold_seconds_count 100\n"
        'fhir_store_write_lock_wait_seconds_sum{worker="2"} 1.5\n'
        'fhir_store_write_lock_wait_seconds_count{worker="2"} 300\n'
        "fhir_requests_total 9\n"
    )
    before = lock_sums_of(metrics)
    assert before == {"fhir_store_write_lock_hold_seconds_sum": 0.5,
                      "fhir_store_write_lock_hold_seconds_count": 100.0,
                      "fhir_store_write_lock_wait_seconds_sum": 1.5,
                      "fhir_store_write_lock_wait_seconds_count": 300.0}
    after = {name: 2 * value for name, value in before.items()}
    assert lock_use(before, after, operations=200) == {
        "lock_hold_ms_per_group": 5.0, "lock_hold_ms_per_request": 2.5,
        "lock_groups_per_request": 0.5, "lock_wait_ms_per_scope": 5.0}
    assert lock_use(before, before, operations=200) == {}


def test_suite_expands_to_its_scenarios_once_in_order() -> None:
    names = [s.name for s in expand(["core", "fhir-read"])]
    assert names == list(SUITES["core"])
    assert set(names) <= set(SCENARIOS)


def test_unknown_scenario_is_refused_with_the_known_names() -> None:
    with pytest.raises(KeyError, match="fhir-read"):
        list(expand(["no-such-scenario"]))


def test_patient_document_is_a_patient_numbered_by_the_counter() -> None:
    document = orjson.loads(patient_document(42))
    assert document["resourceType"] == "Patient"
    assert document["identifier"][1]["value"] == "BENCH-42"
    assert patient_document(1) != patient_document(2)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_baseline_app_answers_any_request_with_the_fixed_patient(method: str) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        answer = await client.request(method, "/fhir/Patient/x", content=patient_document(1))
    assert answer.status_code == 200
    assert answer.json()["resourceType"] == "Patient"


def test_sqlite_loops_count_inserts_and_reads_within_their_time(tmp_path: Path) -> None:
    path = tmp_path / "bench.sqlite3"
    single = measure_inserts(path, 0.2)
    batched = measure_batched_inserts(path, 0.2, batch=10)
    reads = measure_reads(path, 0.1)
    assert single.operations > 0 and single.per_s > 0
    assert batched.operations % 10 == 0 and batched.operations > 0
    assert reads.operations > 0 and reads.p50_ms <= reads.p99_ms


def test_the_push_generates_new_visits_for_the_whole_run(tmp_path: Path) -> None:
    """A push of ``d`` seconds at ``PUSH_MAX_RATE`` Bundles/s never runs out of new visits
    (wrk's script would start over and re-push, which costs a fraction of a new visit)."""
    from big_data import PUSH_MAX_RATE, push_patients

    from fhir_server.synthetic import generate

    duration = 4
    generate(push_patients(duration), 11, tmp_path)
    visits = (tmp_path / "visits-00001.ndjson").read_bytes().splitlines()
    assert len(visits) >= PUSH_MAX_RATE * duration


def test_the_push_warm_up_pushes_other_patients_than_the_measured_run(tmp_path: Path) -> None:
    """The push's warm-up Bundles (seed + 1) share no patient with the measured ones, so the
    measured run's visits are still all new."""
    from big_data import PUSH_SEED

    from fhir_server.synthetic.generation import visit_bundles

    def patients(seed: int) -> set[str]:
        return {str(bundle["entry"][0]["request"]["ifNoneExist"])
                for bundle in visit_bundles(200, seed)}

    measured, warm_up = patients(PUSH_SEED), patients(PUSH_SEED + 1)
    assert len(measured) > 150 and len(warm_up) > 150
    assert not measured & warm_up
