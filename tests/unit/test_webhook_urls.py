"""The SSRF guard for webhook URLs: https only, and no address a server should not call from inside."""

from __future__ import annotations

import pytest

from ledger.feed.urls import UrlPolicy, WebhookUrlError, check_url

STRICT = UrlPolicy()
LOCAL = UrlPolicy(allow_http=True, allow_private=True)


def resolver(*addresses: str):  # type: ignore[no-untyped-def]
    """A resolver that answers these addresses for every name."""
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (("127.0.0.1",), "loopback"),
        (("::1",), "loopback"),
        (("10.1.2.3",), "private"),
        (("172.16.0.9",), "private"),
        (("192.168.1.1",), "private"),
        (("169.254.10.10",), "link-local"),
        (("fe80::1",), "link-local"),
        (("fd12:3456::1",), "private"),
        (("100.64.0.1",), "private"),
        (("::ffff:127.0.0.1",), "loopback"),
        (("169.254.169.254",), "metadata"),
        (("0.0.0.0",), "unicast"),
        (("93.184.216.34", "10.0.0.1"), "private"),
    ],
)
def test_non_public_addresses_are_refused(addresses: tuple[str, ...], why: str) -> None:
    """A host resolving to any loopback, private, link-local or metadata address is refused, naming which."""
    with pytest.raises(WebhookUrlError, match=why):
        check_url("https://hooks.example.com/in", STRICT, resolver(*addresses))


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/in", "https://[::1]:8443/in", "https://169.254.169.254/latest"]
)
def test_address_literals_are_checked_too(url: str) -> None:
    """A URL naming an address directly is checked without a lookup."""
    with pytest.raises(WebhookUrlError):
        check_url(url, STRICT, resolver("93.184.216.34"))


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/in",
        "ftp://hooks.example.com/in",
        "hooks.example.com/in",
        "https:///in",
        "https://user:pw@hooks.example.com/in",
        "https://hooks.example.com/in put",
    ],
)
def test_only_plain_https_urls(url: str) -> None:
    """http (unless allowed), other schemes, no host, credentials and spaces are refused."""
    with pytest.raises(WebhookUrlError):
        check_url(url, STRICT, resolver("93.184.216.34"))


def test_a_public_https_url_is_accepted_at_the_address_checked() -> None:
    """A public host passes; the target keeps the checked address, to connect to it and no other."""
    target = check_url(
        "https://hooks.example.com/in", STRICT, resolver("93.184.216.34", "2606:2800:220:1::1")
    )

    assert (target.host, str(target.address)) == ("hooks.example.com", "93.184.216.34")


def test_the_local_settings_allow_http_and_private_but_never_metadata() -> None:
    """LEDGER_WEBHOOK_ALLOW_HTTP and _PRIVATE allow a local receiver; a metadata address stays refused."""
    local = check_url("http://localhost:8080/in", LOCAL, resolver("127.0.0.1"))

    assert str(local.address) == "127.0.0.1"
    with pytest.raises(WebhookUrlError, match="metadata"):
        check_url("http://169.254.169.254/", LOCAL)
