"""What the revocation check of App Launch tokens costs per request (issue 27).

    .venv/bin/python benchmarks/revocation_cost.py [--rounds 5] [--calls 20000]

A token from the App Launch flow names its authorization (``grant_id``); the verifier asks the
authorization store (``auth.sqlite3``) whether it was revoked on every request, also when the
token itself is cached. This times ``TokenVerifier.verify`` of an already verified token in
the same process, without a ``grant_id`` (a backend-services token: the baseline, a dictionary
look-up) and with one (one SQLite point query), alternating, and prints the median of each and
the difference per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_server.authorization.store import AuthStore, TokenFamily
from fhir_server.security.keys import load_server_key
from fhir_server.security.tokens import TokenVerifier, mint_access_token

BASE = "http://127.0.0.1:8080/fhir"


def _per_call_us(verifier: TokenVerifier, token: str, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        verifier.verify(token)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        data_dir = Path(directory)
        key = load_server_key(data_dir)
        store = AuthStore(data_dir / "auth.sqlite3")
        store.open_family(TokenFamily("family-1", "app", "sub", "p1", "patient/*.rs", 0, 0.0))
        verifier = TokenVerifier(audience=BASE, server_key=key, revocations=store)
        backend = mint_access_token(key, issuer=BASE, audience=BASE, subject="sub",
                                    scope="patient/*.rs", patient_id="p1", client_id="app")
        app = mint_access_token(key, issuer=BASE, audience=BASE, subject="sub",
                                scope="patient/*.rs", patient_id="p1", client_id="app",
                                grant_id="family-1")
        baseline, checked = [], []
        for _ in range(args.rounds):
            baseline.append(_per_call_us(verifier, backend, args.calls))
            checked.append(_per_call_us(verifier, app, args.calls))
    base, check = statistics.median(baseline), statistics.median(checked)
    print(f"cached token, no grant_id (baseline): {base:.2f} us/call")
    print(f"cached token with grant_id (revocation check): {check:.2f} us/call")
    print(f"revocation check adds {check - base:.2f} us/call (ratio {check / base:.1f}x)")


if __name__ == "__main__":
    main()
