"""Where a rest-hook may post, and the shape of notifications in R4 and R4B."""

from __future__ import annotations

import pytest

from fhir_server.settings import Settings
from fhir_server.subscriptions.endpoints import EndpointRefused, check_endpoint
from fhir_server.subscriptions.notifications import EventEntry, Notice, notification
from fhir_server.subscriptions.plans import Content

STRICT = Settings()
LENIENT = Settings(subscription_allow_http=True, subscription_allow_private_endpoints=True)


@pytest.mark.parametrize("endpoint", [
    "http://hooks.example.vn/x", "https://127.0.0.1/x", "https://10.0.0.8/x",
    "https://192.168.1.1/x", "https://172.16.0.1/x", "https://[fd00::1]/x", "https://[::1]/x",
    "https://169.254.169.254/x", "https://0.0.0.0/x", "https://localhost/x",
    "https://a.localhost/x", "ftp://hooks.example.vn/x", "https:///x", "",
])
def test_endpoints_the_server_refuses_to_post_to(endpoint: str) -> None:
    with pytest.raises(EndpointRefused):
        check_endpoint(endpoint, STRICT)


def test_public_https_endpoints_and_what_the_operator_allows_are_accepted() -> None:
    check_endpoint("https://hooks.example.vn/x", STRICT)
    check_endpoint("https://8.8.8.8/x", STRICT)
    check_endpoint("http://127.0.0.1:8000/x", LENIENT)


def _notice(content: Content, version: str = "4.0") -> Notice:
    return Notice("s1", "https://topic", "active", "event-notification", 2, content, version)


def test_an_r4_notification_is_a_history_bundle_with_the_status_parameters_first() -> None:
    event = EventEntry(2, "2026-12-06T00:00:00Z", "Encounter/e1", "create",
                       {"resourceType": "Encounter", "id": "e1"})
    bundle = notification(_notice(Content.FULL_RESOURCE), [event], "http://x/fhir")
    assert bundle["type"] == "history"
    status, focus = bundle["entry"]
    assert status["resource"]["resourceType"] == "Parameters"
    assert status["request"] == {"method": "GET", "url": "Subscription/s1/$status"}
    names = [p["name"] for p in status["resource"]["parameter"]]
    assert names == ["subscription", "topic", "status", "type",
                     "events-since-subscription-start", "notification-event"]
    assert focus == {"fullUrl": "http://x/fhir/Encounter/e1", "resource": event.resource,
                     "request": {"method": "POST", "url": "Encounter"},
                     "response": {"status": "201"}}


def test_an_r4b_notification_carries_a_subscription_status_resource() -> None:
    event = EventEntry(2, "2026-12-06T00:00:00Z", "Encounter/e1", "update")
    bundle = notification(_notice(Content.ID_ONLY, "4.3"), [event], "http://x/fhir")
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "SubscriptionStatus"
    assert status["notificationEvent"] == [{"eventNumber": "2",
                                            "timestamp": "2026-12-06T00:00:00Z",
                                            "focus": {"reference": "http://x/fhir/Encounter/e1"}}]
    assert "resource" not in bundle["entry"][1]
    assert bundle["entry"][1]["request"] == {"method": "PUT", "url": "Encounter/e1"}


def test_a_withheld_event_keeps_its_number_and_shows_nothing_else() -> None:
    bundle = notification(_notice(Content.FULL_RESOURCE),
                          [EventEntry(3, "2026-12-06T00:00:00Z", None, "create")],
                          "http://x/fhir")
    assert len(bundle["entry"]) == 1
    (event,) = [p for p in bundle["entry"][0]["resource"]["parameter"]
                if p["name"] == "notification-event"]
    assert [p["name"] for p in event["part"]] == ["event-number", "timestamp"]
