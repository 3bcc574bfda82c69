"""How accounts find their marketplace: the sync settings read from the environment, endpoints per marketplace,
credentials from their file (and never printed), and the adapter chosen per marketplace."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from ledger.aggregates.values import Marketplace
from ledger.application.queries import AccountDetails
from ledger.config import ConfigError
from ledger.integrations.amazon import AmazonClient
from ledger.integrations.jet import JetClient
from ledger.integrations.marketplaces import (
    MarketplaceNotConfiguredError,
    SyncSettings,
    client_for,
    endpoint_for,
)


def _account(marketplace: Marketplace) -> AccountDetails:
    return AccountDetails(uuid4(), "acme", marketplace.value, "main", True, False, 1)


def test_defaults_without_any_setting() -> None:
    """With nothing set, sync is off (no URL) and the documented defaults apply."""
    settings = SyncSettings.from_env({})
    assert settings.url_for(Marketplace.AMAZON) is None
    assert (settings.import_interval, settings.import_overlap) == (900.0, 300.0)
    assert (settings.sync_max_attempts, settings.sync_lease) == (8, 300.0)
    assert settings.sync_since is None


def test_reads_every_setting_with_durations_and_per_marketplace_urls() -> None:
    """A per-marketplace URL overrides the common one; durations take s, m, h, d."""
    settings = SyncSettings.from_env(
        {
            "LEDGER_MARKETPLACE_URL": "http://127.0.0.1:8700",
            "LEDGER_EBAY_URL": "https://api.ebay.example",
            "LEDGER_IMPORT_INTERVAL": "15m",
            "LEDGER_IMPORT_LOOKBACK": "2d",
            "LEDGER_SYNC_LEASE": "90s",
            "LEDGER_SYNC_BACKOFF_MAX": "1h",
            "LEDGER_SYNC_MAX_ATTEMPTS": "3",
            "LEDGER_SYNC_SINCE": "2026-11-20T00:00:00Z",
            "LEDGER_SYNC_RATE_LIMITS": "amazon.confirmShipment=1/4, walmart.shippingUpdates=0.5/2",
            "LEDGER_SYNC_PROCESSES": "2",
        }
    )
    assert settings.url_for(Marketplace.AMAZON) == "http://127.0.0.1:8700"
    assert settings.url_for(Marketplace.EBAY) == "https://api.ebay.example"
    assert (settings.import_interval, settings.import_lookback) == (900.0, 172800.0)
    assert (settings.sync_lease, settings.sync_backoff_max, settings.sync_max_attempts) == (90.0, 3600.0, 3)
    assert settings.sync_since == datetime(2026, 11, 20, tzinfo=UTC)
    assert settings.rate_limits == {"amazon.confirmShipment": (1.0, 4), "walmart.shippingUpdates": (0.5, 2)}
    assert settings.processes == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEDGER_IMPORT_INTERVAL", "soon"),
        ("LEDGER_SYNC_MAX_ATTEMPTS", "many"),
        ("LEDGER_SYNC_MAX_ATTEMPTS", "0"),
        ("LEDGER_SYNC_SINCE", "yesterday"),
        ("LEDGER_SYNC_SINCE", "2026-11-20T00:00:00"),
        ("LEDGER_SYNC_RATE_LIMITS", "amazon=fast"),
        ("LEDGER_SYNC_RATE_LIMITS", "amazon.ship=2/10"),
        ("LEDGER_SYNC_PROCESSES", "0"),
        ("LEDGER_SYNC_PROCESSES", "two"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_it(name: str, value: str) -> None:
    """A malformed value stops start-up with a message that names the variable."""
    with pytest.raises(ConfigError, match=name):
        SyncSettings.from_env({name: value})


def test_credentials_come_from_the_file_by_account_then_marketplace(tmp_path: Path) -> None:
    """An account's own entry wins over its marketplace's default; neither shows in the endpoint's repr."""
    account = _account(Marketplace.AMAZON)
    path = tmp_path / "credentials.json"
    path.write_text(
        json.dumps(
            {str(account.account_id): {"access_token": "own-secret"}, "amazon": {"access_token": "shared"}}
        )
    )
    settings = SyncSettings(marketplace_url="http://sandbox:8700/", credentials_file=path)
    endpoint = endpoint_for(str(account.account_id), Marketplace.AMAZON, settings)
    assert endpoint.base_url == "http://sandbox:8700"
    assert endpoint.credentials == {"access_token": "own-secret"}
    other = endpoint_for(str(uuid4()), Marketplace.AMAZON, settings)
    assert other.credentials == {"access_token": "shared"}
    assert "secret" not in repr(endpoint)
    assert "secret" not in repr(settings)


def test_a_bad_credentials_file_is_a_config_error_without_its_content(tmp_path: Path) -> None:
    """An unreadable or malformed file is reported by the variable's name, never by what it holds."""
    path = tmp_path / "credentials.json"
    path.write_text('{"acct": "s3cr3t-not-an-object"')
    settings = SyncSettings(marketplace_url="http://x", credentials_file=path)
    with pytest.raises(ConfigError, match="LEDGER_MARKETPLACE_CREDENTIALS") as error:
        endpoint_for("acct", Marketplace.JET, settings)
    assert "s3cr3t" not in str(error.value)
    path.write_text('{"acct": "s3cr3t-not-an-object"}')
    with pytest.raises(ConfigError, match="LEDGER_MARKETPLACE_CREDENTIALS") as error:
        endpoint_for("acct", Marketplace.JET, settings)
    assert "s3cr3t" not in str(error.value)


def test_client_for_picks_the_marketplaces_adapter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each account gets its marketplace's adapter at the configured URL; no credential is logged."""
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"amazon": {"access_token": "tok-amz"}, "jet": {"token": "tok-jet"}}))
    settings = SyncSettings(marketplace_url="http://127.0.0.1:8700", credentials_file=path)
    with caplog.at_level(logging.DEBUG):
        amazon = client_for(_account(Marketplace.AMAZON), settings)
        jet = client_for(_account(Marketplace.JET), settings)
    try:
        assert isinstance(amazon, AmazonClient)
        assert isinstance(jet, JetClient)
    finally:
        amazon.close()
        jet.close()
    assert "tok-" not in caplog.text


def test_no_url_for_the_marketplace_is_a_named_error() -> None:
    """Without a URL for its marketplace an account has no client, and the error says what to set."""
    with pytest.raises(MarketplaceNotConfiguredError, match="LEDGER_WALMART_URL") as error:
        client_for(_account(Marketplace.WALMART), SyncSettings(marketplace_urls={"amazon": "http://x"}))
    assert error.value.code == "marketplace-not-configured"
