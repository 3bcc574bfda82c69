"""The SSRF guard: a webhook URL must be https and reach only public addresses.

Checked when a webhook is made and again before every delivery (a name may resolve elsewhere later): the host
is resolved and every address it resolves to must be public; the delivery then connects to the address that
was checked (dispatcher.py), so a second lookup cannot send it elsewhere. `LEDGER_WEBHOOK_ALLOW_HTTP=1` allows
http://, `LEDGER_WEBHOOK_ALLOW_PRIVATE=1` allows loopback, private, link-local and other non-public addresses
(tests and local use).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ledger.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str, int], list[str]]
MAX_URL_LENGTH = 2048
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
"""Cloud instance metadata services (AWS, ECS, AWS over IPv6, Alibaba): refused even when private is allowed."""


class WebhookUrlError(ValueError):
    """A webhook URL the ledger will not call; the message says why."""


@dataclass(frozen=True)
class UrlPolicy:
    """What the deployment allows besides public https URLs (Settings: LEDGER_WEBHOOK_ALLOW_*)."""

    allow_http: bool = False
    allow_private: bool = False

    @classmethod
    def of(cls, settings: Settings) -> UrlPolicy:
        return cls(allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (a checked address) and what to call it (Host, TLS server name)."""

    url: str
    host: str
    address: IPAddress


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise WebhookUrlError(f"{host!r} does not resolve: {e}") from None
    return [str(info[4][0]) for info in found]


def check_syntax(url: str, policy: UrlPolicy) -> tuple[str, int]:
    """(host, port) of an absolute http(s) URL the policy allows, before any lookup."""
    if len(url) > MAX_URL_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise WebhookUrlError(f"a URL is at most {MAX_URL_LENGTH} printable characters without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise WebhookUrlError(f"not a URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        allowed = "https:// (or http:// with LEDGER_WEBHOOK_ALLOW_HTTP=1)" if scheme == "http" else "https://"
        raise WebhookUrlError(f"a webhook URL must start with {allowed}")
    if not parts.hostname:
        raise WebhookUrlError("a webhook URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("a webhook URL must not carry credentials")
    return parts.hostname, port or (443 if scheme == "https" else 80)


def check_url(url: str, policy: UrlPolicy, lookup: Resolve = resolve) -> Target:
    """The URL's target if the policy allows it and every address its host resolves to; else WebhookUrlError."""
    host, port = check_syntax(url, policy)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in lookup(host, port)]
    if not addresses:
        raise WebhookUrlError(f"{host!r} resolves to no address")
    for address in addresses:
        refused = refusal(address, policy)
        if refused:
            raise WebhookUrlError(f"{host!r} resolves to {address}, {refused}")
    return Target(url, host, addresses[0])


def refusal(address: IPAddress, policy: UrlPolicy) -> str | None:
    """Why the policy refuses to call this address, or None."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None:
        return refusal(mapped, policy)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_multicast or address.is_unspecified:
        return "not a unicast address"
    if policy.allow_private:
        return None
    if address.is_loopback:
        return "a loopback address (allowed with LEDGER_WEBHOOK_ALLOW_PRIVATE=1)"
    if address.is_link_local:
        return "a link-local address (allowed with LEDGER_WEBHOOK_ALLOW_PRIVATE=1)"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved address (allowed with LEDGER_WEBHOOK_ALLOW_PRIVATE=1)"
    return None
