"""Where a rest-hook may post: ``https`` only (``subscription_allow_http`` for development)
and never an address of the server's own network (loopback, private ranges, link-local,
multicast, reserved: RFC 1918, RFC 4193...) unless the operator allows it
(``subscription_allow_private_endpoints``). The url is checked when the Subscription is
written (an address literal, ``localhost``), and the name is resolved again before each
delivery: a name that now resolves into a refused range is not posted to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from fhir_server.errors import BadRequest
from fhir_server.settings import Settings

__all__ = ["EndpointRefused", "check_endpoint", "check_resolved"]


class EndpointRefused(BadRequest):
    """400: the endpoint is not one the server posts to."""

    default_message_id = "MSG_SUBSCRIPTION_ENDPOINT"


def _refused_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global or address.is_multicast


def check_endpoint(endpoint: str | None, settings: Settings) -> None:
    """Refuse (``EndpointRefused``) a rest-hook endpoint the server will not post to."""
    parts = urlsplit(endpoint or "")
    allowed = ("https", "http") if settings.subscription_allow_http else ("https",)
    if parts.scheme not in allowed or not parts.hostname:
        raise EndpointRefused(f"endpoint '{endpoint}' must be an {' or '.join(allowed)} URL",
                              expression=("Subscription.channel.endpoint",))
    host = parts.hostname
    local = host == "localhost" or host.endswith(".localhost") or _refused_address(host)
    if local and not settings.subscription_allow_private_endpoints:
        raise EndpointRefused(f"endpoint '{endpoint}' is on a loopback, private or reserved "
                              "address", expression=("Subscription.channel.endpoint",))


async def check_resolved(endpoint: str, settings: Settings) -> None:
    """Refuse an endpoint whose name resolves (now) to a refused address."""
    check_endpoint(endpoint, settings)
    if settings.subscription_allow_private_endpoints:
        return
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(
        parts.hostname, port, type=socket.SOCK_STREAM)
    if any(_refused_address(str(info[4][0])) for info in infos):
        raise EndpointRefused(f"endpoint '{endpoint}' resolves to a loopback, private or "
                              "reserved address")
