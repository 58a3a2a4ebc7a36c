"""SMART App Launch end to end: a real server process on the loopback, the app registered with
``fhir-server client add``, a real SMART client library (``fhirclient``) as the app, and headless
Chromium (Debian's package, driven by Playwright) as the citizen's browser.

The citizen signs in at the development identity provider, reads the consent page (Vietnamese,
then English), approves; the app exchanges the code, reads the Patient's ``$summary``,
refreshes, revokes its refresh token, and sees the next call refused. A second launch needs no
consent (the approval is remembered); the citizen then withdraws the app on the page of apps
with access, and the app's next call is refused again.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.builders import patient
from tests.system.server_process import ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
CCCD = "079203001234"
SCOPE = "openid fhirUser offline_access patient/*.rs"

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
client_module = pytest.importorskip("fhirclient.client", reason="fhirclient is not installed")
server_module = pytest.importorskip("fhirclient.server", reason="fhirclient is not installed")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (make test installs it as "
                "root with apt-get)", allow_module_level=True)


class _AppCallback(http.server.BaseHTTPRequestHandler):
    """The app's redirect URI: it only has to answer, the test reads the URL."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"app callback")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def app_callback() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AppCallback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback"
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(tmp_path: Path, app_callback: str) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", port=free_port(), log_path=tmp_path / "log",
                            env={"FHIR_SERVER_DEV_IDENTITY_PROVIDER": "true"})
    fhir_server = shutil.which("fhir-server", path=str(Path(sys.executable).parent))
    command = [fhir_server or "fhir-server", "client", "add", "--kind", "public",
               "--client-id", "so-suc-khoe", "--name", "Sổ sức khỏe điện tử",
               "--redirect-uri", app_callback, "--scope", "launch/patient " + SCOPE,
               "--data-dir", str(process.data_dir)]
    subprocess.run(command, check=True, capture_output=True,
                   env={**os.environ, "FHIR_SERVER_PORT": str(process.port)})
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS)
        try:
            yield context.new_page()
        finally:
            context.close()


def _smart_app(server: ServerProcess, redirect: str) -> Any:
    return client_module.FHIRClient(settings={
        "app_id": "so-suc-khoe", "api_base": server.base + "/fhir", "redirect_uri": redirect,
        "scope": SCOPE})


def _launch(page: Any, app: Any, redirect: str, *, consent: bool) -> None:
    """Drive the browser from the app's authorize URL back to its redirect URI."""
    page.goto(app.authorize_url)
    if page.url.startswith(redirect):
        return
    page.fill("#cccd", CCCD)
    page.fill("#name", "Trần Thị Bình")
    page.click("#sign-in")
    if consent:
        page.wait_for_selector("#approve")
        assert "Cho phép ứng dụng truy cập sổ sức khỏe" in page.content()
        assert "Sổ sức khỏe điện tử" in page.content()
        page.click("#language")
        page.wait_for_selector("text=Allow an app to access your health book")
        page.click("#approve")
    page.wait_for_url(redirect + "?**")


def _summary(app: Any) -> dict[str, Any]:
    result: dict[str, Any] = app.server.request_json(f"Patient/{app.patient_id}/$summary")
    return result


def test_standalone_launch_through_the_pages_with_a_real_smart_client(
    server: ServerProcess, browser: Any, app_callback: str
) -> None:
    created = httpx.post(f"{server.base}/fhir/Patient", json=patient(CCCD),
                         headers=server.headers())
    patient_id = created.json()["id"]

    app = _smart_app(server, app_callback)
    _launch(browser, app, app_callback, consent=True)
    app.handle_callback(browser.url)
    assert app.patient_id == patient_id
    assert _summary(app)["type"] == "document"

    first_access = app.server.auth.access_token
    app.reauthorize()
    assert app.server.auth.access_token != first_access
    assert _summary(app)["type"] == "document"

    revoked = httpx.post(f"{server.base}/fhir/auth/revoke", data={
        "token": app.server.auth.refresh_token, "client_id": "so-suc-khoe"})
    assert revoked.status_code == 200
    with pytest.raises(server_module.FHIRUnauthorizedException):
        _summary(app)

    again = _smart_app(server, app_callback)
    _launch(browser, again, app_callback, consent=False)  # remembered: no consent page
    again.handle_callback(browser.url)
    assert _summary(again)["type"] == "document"
    browser.goto(f"{server.base}/fhir/auth/apps")
    assert "Sổ sức khỏe điện tử" in browser.content()
    browser.click("button.revoke")
    browser.wait_for_selector("#notice")
    with pytest.raises(server_module.FHIRUnauthorizedException):
        _summary(again)
