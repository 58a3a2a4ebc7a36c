"""What Consent costs (issue 26): a clinician's search and ``$everything`` against a
national operator's same requests, on the 1,000,000-resource store with 10 Consents per
patient, and how soon a Consent change applies.

    # once: the store (docs/performance.md), then 10 Consents for every patient
    fhir-server generate --patients 50000 --seed 1 --out GEN
    fhir-server load GEN/*.ndjson --data-dir DIR --processes 3 --concurrency 64
    .venv/bin/python benchmarks/consent_cost.py --data-dir DIR --prepare
    # the measurement (repeat it; it reports the ratio of the same run)
    .venv/bin/python benchmarks/consent_cost.py --data-dir DIR [--rounds 3] [--duration 10]

``--prepare`` loads (through ``fhir-server load``, the server's own write path) 201 facilities
and, for every Patient, 10 Consents: one permits the benchmark's facility everything
(sensitive labels included, so that the clinician sees what the operator sees and both do the
same work), six permit other facilities (some with a deny inside, some expired), one is
revoked, one permits everyone the Immunizations, one is a research Consent.

The measurement starts a one-worker server on DIR, picks sample patients, and drives the same
request paths with wrk (2 connections) with each token in turn, alternating, ``--rounds``
times: a clinician (``user/*.rs``, ``organization`` the benchmark facility) and an operator
(``system/*.rs``, not governed by Consent). It reads the worker's CPU time from ``/proc``
around each run: the ratio of CPU per request is what Consent costs a CPU-bound server
(requests per second and p50 are reported too). Then it revokes one patient's Consent and
times how long until the clinician's next read of that patient's record is refused.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import WrkLoad, run_wrk
from processes import LOOPBACK, free_port, running_server
from scenarios import LUA_DIR

from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import mint_access_token

FACILITY = "bench-facility"
OTHERS = 200
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TYPES = "http://hl7.org/fhir/resource-types"
_TICK = os.sysconf("SC_CLK_TCK")


# -- preparing the store -------------------------------------------------------------------


def _actor(reference: str | None) -> list[dict[str, Any]]:
    if reference is None:
        return []
    return [{"role": {"coding": [{"system":
        "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"reference": reference}}]


def _consent(patient: str, number: int, provision: dict[str, Any], status: str = "active",
             scope: str = "patient-privacy") -> dict[str, Any]:
    return {"resourceType": "Consent", "id": f"bc-{patient}-{number}", "status": status,
            "scope": {"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/consentscope", "code": scope}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient}"}, "dateTime": "2026-12-01",
            "policyRule": {"coding": [{"system": V3, "code": "OPTIN"}]},
            "provision": provision}


def consents_of(patient: str, rng: random.Random) -> list[dict[str, Any]]:
    """The 10 Consents of one patient (see the module docstring)."""
    labels = [{"type": "permit", "securityLabel": [{"system": V3, "code": code}]}
              for code in ("HIV", "PSY", "SEX")]
    found = [_consent(patient, 0, {"type": "permit", "actor": _actor(
        f"Organization/{FACILITY}"), "provision": labels})]
    for number in range(1, 7):
        provision: dict[str, Any] = {"type": "permit", "actor": _actor(
            f"Organization/bench-other-{rng.randrange(OTHERS)}")}
        if number % 3 == 0:
            provision["provision"] = [{"type": "deny", "class": [
                {"system": TYPES, "code": "MedicationRequest"}]}]
        if number % 3 == 1:
            provision["period"] = {"start": "2020-01-01", "end": "2021-01-01"}
        found.append(_consent(patient, number, provision))
    found.append(_consent(patient, 7, {"type": "permit", "actor": _actor(
        f"Organization/{FACILITY}")}, status="inactive"))
    found.append(_consent(patient, 8, {"type": "permit", "class": [
        {"system": TYPES, "code": "Immunization"}]}))
    found.append(_consent(patient, 9, {"type": "permit"}, scope="research"))
    return found


def _bundle(resources: list[dict[str, Any]]) -> bytes:
    entries = [{"fullUrl": f"urn:bench:{r['resourceType']}/{r['id']}", "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
               for r in resources]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _load(data_dir: Path, path: Path) -> None:
    subprocess.run([sys.executable, "-P", "-m", "fhir_server.cli", "load", str(path), "--data-dir",
                    str(data_dir), "--processes", "3", "--concurrency", "32",
                    "--defer-indexes", "off"], check=True)


def prepare(data_dir: Path, work: Path) -> None:
    """Load the facilities and 10 Consents per patient into the store at ``data_dir``."""
    with sqlite3.connect(data_dir / "fhir.sqlite3") as conn:
        patients = [row[0] for row in conn.execute(
            "SELECT id FROM resources WHERE type = 'Patient' AND deleted = 0 ORDER BY rid")]
    facilities = [{"resourceType": "Organization", "id": name, "name": name, "identifier": [{
        "system": "http://fhir.ehealth.gov.vn/core/sid/provider-code",
        "value": f"{90000 + n:05d}"}]}
        for n, name in enumerate([FACILITY, *(f"bench-other-{k}" for k in range(OTHERS))])]
    (work / "facilities.ndjson").write_bytes(_bundle(facilities) + b"\n")
    _load(data_dir, work / "facilities.ndjson")
    rng = random.Random(26)
    with (work / "consents.ndjson").open("wb") as out:
        for patient in patients:
            out.write(_bundle(consents_of(patient, rng)) + b"\n")
    started = time.monotonic()
    _load(data_dir, work / "consents.ndjson")
    print(f"loaded {10 * len(patients)} Consents of {len(patients)} patients in "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)


# -- measuring -----------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _tokens(data_dir: Path, base: str) -> dict[str, str]:
    key = load_server_key(data_dir)

    def token(subject: str, scope: str, organization: str | None = None,
              user: str | None = None) -> str:
        return mint_access_token(key, issuer=base, audience=base, ttl=7200, subject=subject,
                                 scope=scope, client_id=subject, organization=organization,
                                 fhir_user=user)

    return {
        "operator": token("bench-operator", "system/*.rs"),
        "clinician": token("bench-his", "user/*.rs", f"Organization/{FACILITY}",
                           "Practitioner/bench-doctor"),
        "admin": token("bench-admin", "system/Consent.cru"),
    }


def _sample(data_dir: Path, count: int) -> list[str]:
    with sqlite3.connect(data_dir / "fhir.sqlite3") as conn:
        return [row[0] for row in conn.execute(
            "SELECT id FROM resources WHERE type = 'Patient' AND deleted = 0 "
            "AND id IN (SELECT substr(id, 4, length(id) - 5) FROM resources "
            "WHERE type = 'Consent' AND id LIKE 'bc-%-0') ORDER BY random() LIMIT ?", (count,))]


SCENARIOS = {
    "search-observation": "/fhir/Observation?patient=Patient/{id}&_count=50",
    "search-encounter": "/fhir/Encounter?patient={id}&_revinclude=Condition:encounter",
    "everything": "/fhir/Patient/{id}/$everything",
}


def _get(base: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        answer = conn.getresponse()
        return answer.status, orjson.loads(answer.read() or b"{}")
    finally:
        conn.close()


def _same_answers(base: str, paths: list[str], tokens: dict[str, str]) -> None:
    """Both callers see the same entries (so they do the same work)."""
    for path in paths[:5]:
        seen = [_get(base, path, tokens[who])[1] for who in ("operator", "clinician")]
        ids = [sorted(e["fullUrl"] for e in body.get("entry", [])) for body in seen]
        if ids[0] != ids[1]:
            raise RuntimeError(f"{path}: the clinician and the operator see different entries")


def _run(base: str, pid: int, paths_file: Path, token: str, duration: int) -> tuple[float, ...]:
    headers = [f"Authorization: Bearer {token}"]
    script = LUA_DIR / "get_paths.lua"
    before = _cpu_s(pid)
    result = run_wrk(base, script, [str(paths_file)], WrkLoad(2, 2, duration), headers)
    used = _cpu_s(pid) - before
    if result.errors:
        raise RuntimeError(f"{result.errors} errors in a run")
    return used / max(result.requests, 1) * 1e6, result.requests_per_s, result.percentiles_ms[50]


def _measure(base: str, pid: int, work: Path, patients: list[str], tokens: dict[str, str],
             rounds: int, duration: int) -> dict[str, dict[str, list[tuple[float, ...]]]]:
    figures: dict[str, dict[str, list[tuple[float, ...]]]] = {}
    for name, template in SCENARIOS.items():
        paths = [template.format(id=p) for p in patients]
        paths_file = work / f"{name}.paths"
        paths_file.write_text("\n".join(paths) + "\n")
        _same_answers(base, paths, tokens)
        for who in ("operator", "clinician"):  # warm-up
            _run(base, pid, paths_file, tokens[who], 3)
        figures[name] = {"operator": [], "clinician": []}
        for _ in range(rounds):
            for who in ("operator", "clinician"):
                figures[name][who].append(_run(base, pid, paths_file, tokens[who], duration))
    return figures


def _revocation(base: str, patient: str, tokens: dict[str, str]) -> float:
    """Seconds from sending the revocation of the facility's Consent to the first refused
    read of the patient's record by the clinician (its Consent is restored after)."""
    _, found = _get(base, f"/fhir/Observation?patient={patient}&_count=1", tokens["operator"])
    target = found["entry"][0]["fullUrl"].split("/fhir/")[1]
    _, consent = _get(base, f"/fhir/Consent/bc-{patient}-0", tokens["operator"])
    admin = tokens["admin"]
    started = time.monotonic()
    _put(base, f"/fhir/Consent/{consent['id']}", {**consent, "status": "inactive"}, admin)
    while _get(base, f"/fhir/{target}", tokens["clinician"])[0] == 200:
        if time.monotonic() - started > 10:
            raise RuntimeError("the revocation did not apply within 10 s")
    elapsed = time.monotonic() - started
    _put(base, f"/fhir/Consent/{consent['id']}", consent, admin)
    return elapsed


def _put(base: str, path: str, body: dict[str, Any], token: str) -> None:
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=60)
    try:
        conn.request("PUT", path, body=orjson.dumps(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
        answer = conn.getresponse()
        answer.read()
    finally:
        conn.close()
    if answer.status != 200:
        raise RuntimeError(f"PUT {path}: {answer.status}")


def _report(figures: dict[str, dict[str, list[tuple[float, ...]]]], revoked_s: float) -> None:
    print("scenario              who         cpu us/req   req/s   p50 ms")
    verdicts = []
    for name, by_who in figures.items():
        cpu = {}
        for who, runs in by_who.items():
            cpu[who] = statistics.median(r[0] for r in runs)
            rate = statistics.median(r[1] for r in runs)
            p50 = statistics.median(r[2] for r in runs)
            print(f"{name:21} {who:10} {cpu[who]:12.0f} {rate:7.0f} {p50:8.2f}")
        ratio = cpu["clinician"] / cpu["operator"]
        verdicts.append(f"{name}: clinician/operator CPU per request {ratio:.3f} "
                        f"({'PASS' if ratio <= 1.10 else 'FAIL'} <= 1.10)")
    print("\n".join(verdicts))
    print(f"consent revocation applied after {revoked_s * 1000:.1f} ms "
          f"({'PASS' if revoked_s < 1 else 'FAIL'} < 1 s)")


def measure(data_dir: Path, rounds: int, duration: int, sample: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="fhir-consent-cost-"))
    port = free_port()
    command = [sys.executable, "-P", "-m", "fhir_server.cli", "serve", "--host", LOOPBACK, "--port",
               str(port), "--data-dir", str(data_dir), "--workers", "1"]
    with running_server("fhir", command, port=port, ready_path="/readyz",
                        log_path=work / "server.log", ready_timeout_s=600) as server:
        base = server.base_url + "/fhir"
        tokens = _tokens(data_dir, base)
        patients = _sample(data_dir, sample)
        figures = _measure(server.base_url, server.pid, work, patients, tokens, rounds,
                           duration)
        revoked = _revocation(server.base_url, patients[0], tokens)
    _report(figures, revoked)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--patients", type=int, default=200)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data_dir, Path(tempfile.mkdtemp(prefix="fhir-consent-prepare-")))
        return 0
    measure(args.data_dir, args.rounds, args.duration, args.patients)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
