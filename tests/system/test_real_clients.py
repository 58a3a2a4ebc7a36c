"""Real FHIR client libraries against a real server process on loopback: fhirpy and
fhirclient (Python, test extras) run their CRUD, search, count, paging, transaction and
``$everything`` calls unchanged; fhir-kit-client (Node) where node and npm are available."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.builders import HEALTH_BOOK_RESOURCES, observation, patient
from tests.conformance.r4_examples import cache_dir
from tests.system.server_process import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("clients"))
    process.start()
    yield process
    process.stop()


def _token(server: ServerProcess) -> str:
    return server.headers()["Authorization"].removeprefix("Bearer ")


def _visit_bundle(cccd: str) -> dict[str, Any]:
    """A transaction: a Patient and an Observation referring to it by its fullUrl."""
    person = "urn:uuid:6f1c7a52-0000-4000-8000-" + cccd
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": person, "resource": patient(cccd=cccd, family="Trần"),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation(person, value=36.5),
         "request": {"method": "POST", "url": "Observation"}},
    ]}


def test_fhirpy_crud_search_count_paging_transaction_everything(server: ServerProcess) -> None:
    from fhirpy import SyncFHIRClient

    client = SyncFHIRClient(f"{server.base}/fhir", authorization=f"Bearer {_token(server)}")
    created = client.resource("Patient", **patient(cccd="001090000101", family="Phạm"))
    created.save()
    assert created.id
    read = client.reference("Patient", created.id).to_resource()
    assert read["name"][0]["family"] == "Phạm"
    read["gender"] = "female"
    read.save()
    assert client.reference("Patient", created.id).to_resource()["gender"] == "female"
    for n in range(4):
        client.resource("Patient", **patient(cccd=f"00109000020{n}", family="Phạm")).save()
    search = client.resources("Patient").search(family="Phạm")
    assert search.count() == 5
    assert len(search.limit(2).fetch_all()) == 5  # follows the next links
    answer = client.execute("", method="post", data=_visit_bundle("001090000301"))
    assert answer["type"] == "transaction-response"
    person_id = answer["entry"][0]["response"]["location"].split("/")[1]
    everything = client.execute(f"Patient/{person_id}/$everything", method="get")
    kinds = sorted(e["resource"]["resourceType"] for e in everything["entry"])
    assert kinds == ["Observation", "Patient"]
    read.delete()
    assert client.resources("Patient").search(_id=created.id).count() == 0


def test_fhirclient_crud_search_paging_transaction_everything(server: ServerProcess) -> None:
    from fhirclient import client as smart_client
    from fhirclient.models.bundle import Bundle
    from fhirclient.models.patient import Patient

    smart = smart_client.FHIRClient(settings={"app_id": "test", "api_base":
                                              f"{server.base}/fhir"})
    fhir = smart.server
    fhir.session.headers["Authorization"] = f"Bearer {_token(server)}"
    assert fhir.capabilityStatement.fhirVersion == "4.0.1"
    answer = Patient(patient(cccd="001090000401", family="Đỗ")).create(fhir)
    created = Patient.read(answer["id"], fhir)
    assert created.name[0].family == "Đỗ"
    created.gender = "female"
    created.update(fhir)
    assert Patient.read(created.id, fhir).gender == "female"
    for n in range(3):
        Patient(patient(cccd=f"00109000050{n}", family="Đỗ")).create(fhir)
    search = Patient.where(struct={"family": "Đỗ", "_count": "2"})
    assert len(list(search.perform_resources_iter(fhir))) == 4  # every page
    response = Bundle(fhir.post_json("", _visit_bundle("001090000601")).json())
    assert response.type == "transaction-response"
    person_id = response.entry[0].response.location.split("/")[1]
    everything = Bundle(fhir.request_json(f"Patient/{person_id}/$everything"))
    assert sorted(e.resource.resource_type for e in everything.entry) == [
        "Observation", "Patient"]
    created.delete(fhir)
    assert list(Patient.where(struct={"_id": created.id}).perform_resources_iter(fhir)) == []


_KIT_SCRIPT = r"""
import { Client } from 'fhir-kit-client';
const [base, token, patientJson, orgJson] = process.argv.slice(2);
(async () => {
  const client = new Client({ baseUrl: base, customHeaders: { Authorization: `Bearer ${token}` } });
  const created = await client.create({ resourceType: 'Patient', body: JSON.parse(patientJson) });
  const read = await client.read({ resourceType: 'Patient', id: created.id });
  read.gender = 'female';
  await client.update({ resourceType: 'Patient', id: read.id, body: read });
  const org = await client.create({ resourceType: 'Organization', body: JSON.parse(orgJson) });
  const found = await client.search({ resourceType: 'Patient', searchParams: { _id: read.id } });
  const counted = await client.search({ resourceType: 'Patient', searchParams: { _count: 0 } });
  const everything = await client.operation({ name: 'everything', resourceType: 'Patient',
                                              id: read.id, method: 'get' });
  await client.delete({ resourceType: 'Organization', id: org.id });
  console.log(JSON.stringify({ gender: (await client.read({ resourceType: 'Patient',
    id: read.id })).gender, found: found.entry.length, total: counted.total,
    everything: everything.entry.length }));
})().catch((e) => {
  console.error(e.response ? JSON.stringify(e.response.data) : e);
  process.exit(1);
});
"""


def _fhir_kit_client() -> Path:
    """The folder where fhir-kit-client is installed (installed there once with npm)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for fhir-kit-client")
    folder = cache_dir() / "fhir-kit-client"
    if not (folder / "node_modules" / "fhir-kit-client").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund",
                            "fhir-kit-client@2"], cwd=folder, check=True, capture_output=True,
                           timeout=300)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"fhir-kit-client could not be installed: {exc}")
    return folder


def test_fhir_kit_client_crud_search_count_everything(server: ServerProcess) -> None:
    folder = _fhir_kit_client()
    script = folder / "run.mjs"
    script.write_text(_KIT_SCRIPT)
    run = subprocess.run(
        ["node", str(script), f"{server.base}/fhir", _token(server),
         json.dumps(patient(cccd="001090000701")),
         json.dumps(HEALTH_BOOK_RESOURCES["Organization"])],
        cwd=folder, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == {"gender": "female", "found": 1, "total": result["total"],
                      "everything": 1}
    assert result["total"] >= 1
