"""What 10,000 active subscriptions cost the visit push (issue 29), and how soon a committed
change is first sent.

    .venv/bin/python benchmarks/subscription_cost.py [--rounds 2] [--duration 15]
                                                     [--patients 3000] [--workers 1]
                                                     [--connections 8]

One data directory: the first visit of ``--patients`` synthetic patients is pushed, then
10,000 rest-hook Subscriptions are created on the ``encounter-new`` topic, each filtered on one
citizen: ``--notified`` of them on pushed patients, the others on citizens who do not visit
during the run (every citizen's app, whether or not they are seen today). Their endpoint is a
receiver in this process (loopback) that records when each notification arrives. Then the
push of the patients' later visits (``--connections`` wrk connections, 8) alternates,
``--rounds`` times, between the server with subscriptions on and off
(``FHIR_SERVER_SUBSCRIPTIONS``; on first in odd rounds, off first in even ones), each run on
visits of its own. Reported: Bundles/s of each run and the ratio on/off of the medians, the
baseline being the runs without (the target is a drop of at most 10 %); and for the
notifications of the runs with subscriptions on, the time from the event (the change's
``lastUpdated``, stamped inside its transaction, a few ms before its commit) to the
notification's arrival, whose 95th percentile must be <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import WrkLoad, run_wrk
from processes import LOOPBACK, free_port, running_server
from scenarios import LUA_DIR

SUBSCRIPTIONS = 10_000
TOPIC = "https://fhir.sskdt.vn/SubscriptionTopic/encounter-new"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
CCCD = "http://fhir.ehealth.gov.vn/core/sid/national_id"


class Arrivals:
    """What the receiver saw: (arrival time, event timestamp) of each event notified."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delays: list[float] = []
        self.handshakes = 0
        self.recording = False

    def record(self, bundle: dict[str, Any], arrived: float) -> None:
        status = bundle["entry"][0]["resource"]["parameter"]
        kind = next(p["valueCode"] for p in status if p["name"] == "type")
        with self.lock:
            if kind == "handshake":
                self.handshakes += 1
            for parameter in status:
                if parameter["name"] == "notification-event" and self.recording:
                    stamp = next(p["valueInstant"] for p in parameter["part"]
                                 if p["name"] == "timestamp")
                    self.delays.append(arrived - datetime.fromisoformat(stamp).timestamp())


def _receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            arrivals.record(orjson.loads(body), time.time())
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((LOOPBACK, free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _token(data_dir: Path, base: str) -> str:
    from fhir_server.security.keys import load_server_key
    from fhir_server.security.tokens import mint_access_token

    return mint_access_token(load_server_key(data_dir), issuer=base, audience=base,
                             subject="benchmark", scope="system/*.cruds", ttl=7200)


def _visits(patients: int) -> list[list[bytes]]:
    """Each patient's visit Bundles, in order."""
    from fhir_server.synthetic.generation import visit_bundles

    by_patient: dict[str, list[bytes]] = {}
    for bundle in visit_bundles(patients, seed=2029):
        person = next(e["resource"] for e in bundle["entry"]
                      if e["resource"]["resourceType"] == "Patient")
        cccd = next(i["value"] for i in person["identifier"] if i["system"] == CCCD)
        by_patient.setdefault(cccd, []).append(orjson.dumps(bundle))
    return list(by_patient.values())


def _post_all(base: str, token: str, path: str, bodies: list[bytes]) -> list[Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def post(body: bytes) -> Any:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            response = http.post(path, content=body)
            response.raise_for_status()
            return response.json()

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, bodies))


def _patient_ids(base: str, token: str) -> list[str]:
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
        url: str | None = "/fhir/Patient?_count=1000&_elements=id"
        while url:
            page = http.get(url).json()
            ids += [e["resource"]["id"] for e in page.get("entry", [])]
            url = next((link["url"].split(base, 1)[-1] for link in page.get("link", [])
                        if link["relation"] == "next"), None)
    return ids


def _subscription(patient_id: str, endpoint: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "citizen app",
            "criteria": TOPIC,
            "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                         "valueString": f"patient=Patient/{patient_id}"}]},
            "channel": {"type": "rest-hook", "endpoint": endpoint,
                        "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                    "valueCode": "id-only"}]}}}


def _subscribe(base: str, token: str, patients: list[str], endpoint: str) -> None:
    bodies = []
    for start in range(0, len(patients), 500):
        entries = [{"resource": _subscription(p, endpoint),
                    "request": {"method": "POST", "url": "Subscription"}}
                   for p in patients[start:start + 500]]
        bodies.append(orjson.dumps({"resourceType": "Bundle", "type": "batch",
                                    "entry": entries}))
    _post_all(base, token, "/fhir", bodies)


def _command(data_dir: Path, port: int, workers: int) -> list[str]:
    return [sys.executable, "-P", "-m", "fhir_server.cli", "serve", "--host", LOOPBACK, "--port",
            str(port), "--data-dir", str(data_dir), "--workers", str(workers)]


def _env(subscriptions: bool) -> dict[str, str]:
    return {**os.environ, "FHIR_SERVER_SUBSCRIPTIONS": "true" if subscriptions else "false",
            "FHIR_SERVER_SUBSCRIPTION_ALLOW_HTTP": "true",
            "FHIR_SERVER_SUBSCRIPTION_ALLOW_PRIVATE_ENDPOINTS": "true",
            "FHIR_SERVER_REFERENTIAL_INTEGRITY": "false"}


def _setup(work: Path, args: argparse.Namespace, endpoint: str,
           arrivals: Arrivals) -> list[bytes]:
    """Push every patient's first visit, subscribe 10,000 citizens; return the later visits."""
    visits = _visits(args.patients)
    data_dir = work / "data"
    port = free_port()
    with running_server("fhir", _command(data_dir, port, args.workers), port=port,
                        ready_path="/readyz", env=_env(True),
                        log_path=work / "setup.log") as server:
        token = _token(data_dir, server.base_url + "/fhir")
        _post_all(server.base_url, token, "/fhir", [v[0] for v in visits])
        pushed = _patient_ids(server.base_url, token)
        rng = random.Random(29)
        notified = rng.sample(pushed, min(args.notified, len(pushed)))
        others = [f"citizen-{n}" for n in range(SUBSCRIPTIONS - len(notified))]
        started = time.monotonic()
        _subscribe(server.base_url, token, notified + others, endpoint)
        while arrivals.handshakes < SUBSCRIPTIONS and time.monotonic() - started < 600:
            time.sleep(0.5)
        print(f"setup: {len(visits)} patients, {SUBSCRIPTIONS} subscriptions "
              f"({len(notified)} on pushed patients), {arrivals.handshakes} handshakes in "
              f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    later = [bundle for patient in visits for bundle in patient[1:]]
    random.Random(30).shuffle(later)
    return later


def _run(work: Path, args: argparse.Namespace, bundles: list[bytes], subscriptions: bool,
         label: str) -> float:
    data_dir = work / "data"
    lines = work / f"{label}.ndjson"
    warm = work / f"{label}-warm.ndjson"
    lines.write_bytes(b"\n".join(bundles[200:]) + b"\n")
    warm.write_bytes(b"\n".join(bundles[:200]) + b"\n")
    port = free_port()
    with running_server("fhir", _command(data_dir, port, args.workers), port=port,
                        ready_path="/readyz", env=_env(subscriptions),
                        log_path=work / f"{label}.log") as server:
        url = server.base_url + "/fhir"
        headers = [f"Authorization: Bearer {_token(data_dir, url)}"]
        run_wrk(url, LUA_DIR / "post_bundles.lua", [str(warm), "2"], WrkLoad(8, 2, 3), headers)
        result = run_wrk(url, LUA_DIR / "post_bundles.lua", [str(lines), "2"],
                         WrkLoad(args.connections, 2, args.duration), headers)
        time.sleep(2)  # the last notifications arrive
    if result.requests > len(bundles) - 200 or result.errors:
        print(f"{label}: {result.requests} pushes, {result.errors} errors (of "
              f"{len(bundles) - 200} new visits)", file=sys.stderr)
    return result.requests_per_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--notified", type=int, default=1000,
                        help="subscriptions on patients whose visits are pushed (1000)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8,
                        help="wrk connections pushing (8: the server saturated)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fhir-subscription-cost-"))
    arrivals = Arrivals()
    receiver = _receiver(arrivals)
    endpoint = f"http://{LOOPBACK}:{receiver.server_address[1]}/hook"
    later = _setup(work, args, endpoint, arrivals)
    share = len(later) // (2 * args.rounds)
    figures: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for mode in ((True, False) if round_ % 2 == 0 else (False, True)):  # alternating
            part = 2 * round_ + (0 if mode else 1)
            arrivals.recording = mode
            rate = _run(work, args, later[part * share:(part + 1) * share], mode,
                        f"round{round_}-{'on' if mode else 'off'}")
            figures[mode].append(rate)
            print(f"round {round_ + 1} subscriptions {'on ' if mode else 'off'}: "
                  f"{rate:.1f} Bundles/s", file=sys.stderr)
    receiver.shutdown()
    on, off = statistics.median(figures[True]), statistics.median(figures[False])
    delays = sorted(arrivals.delays)
    p95 = delays[int(0.95 * (len(delays) - 1))] if delays else float("nan")
    report = {"push_bundles_per_s": {"on": figures[True], "off": figures[False]},
              "ratio_on_off": round(on / off, 3), "drop": round(1 - on / off, 3),
              "notifications": len(delays),
              "commit_to_arrival_s": {"p50": delays[len(delays) // 2] if delays else None,
                                      "p95": p95, "max": delays[-1] if delays else None}}
    print(json.dumps(report, indent=1))
    print(f"{'PASS' if on >= 0.9 * off else 'FAIL'} push with 10,000 subscriptions: "
          f"{on:.1f} vs {off:.1f} Bundles/s (ratio {on / off:.3f} to the baseline without; "
          f"{100 * (1 - on / off):+.1f} % drop; <= 10 %)")
    print(f"{'PASS' if p95 <= 1.0 else 'FAIL'} p95 event to first delivery: {p95:.3f} s "
          f"(<= 1 s, {len(delays)} notifications)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
