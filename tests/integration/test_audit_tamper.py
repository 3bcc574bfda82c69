"""Audit beyond the database: signed checkpoints, a record outside the database and an auditor's saved
checkpoint name every tamper by order and version, even when the attacker deletes checkpoints or rewrites
the SHA-256 chains; the signing key lives outside the database; bundles verify offline."""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from api_support import make_seller
from audit_support import (
    CTX,
    TRACKING,
    Shop,
    alter_tracking,
    delete,
    drop_checkpoint,
    open_shop,
    replace_checkpoint_over_deleted_event,
    rewrite_chain_without_key,
    two_sealed_orders,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from litestar.testing import TestClient

from ledger.aggregates.values import Carrier, Marketplace, Role
from ledger.api.app import create_app
from ledger.audit.checkpoints import (
    CheckpointsChangedError,
    CheckpointWorker,
    latest_checkpoint,
    write_checkpoints,
)
from ledger.audit.keys import AuditTrust, key_id, load_trust, parse_public_key, public_pem, seed_b64
from ledger.audit.verification import verify_all
from ledger.cli.main import main
from ledger.config import ConfigError, Settings
from ledger.eventstore import database
from ledger.eventstore.database import PostgresTarget

pytestmark = pytest.mark.postgres


@pytest.fixture
def shop(own_target: PostgresTarget, tmp_path: Path) -> Iterator[Shop]:
    """A seller with an Amazon account on the test's own schema, a signing key and this host's record."""
    with open_shop(own_target, tmp_path) as opened:
        yield opened


def named(summary: Any) -> set[tuple[UUID | None, int | None]]:
    return {(f.order_id, f.version) for f in summary.findings}


def messages(summary: Any) -> str:
    return "\n".join(f.message for f in summary.findings)


def verify(shop: Shop, trust: AuditTrust | None = None, **kwargs: Any) -> Any:
    return verify_all(shop.conn, shop.ledger.mapper, trust or shop.trust, seal=False, **kwargs)


# ------------------------------------------------------------------------------------------ tampers


def test_clean_log_verifies_and_records_the_newest_checkpoint(shop):
    """Signed checkpoints verify; a clean verification keeps the newest one outside the database."""
    two_sealed_orders(shop)

    summary = verify(shop)

    assert (summary.valid, summary.checkpoints_checked) == (True, 2)
    assert shop.trust.state_dir is not None
    assert len(list(shop.trust.state_dir.glob("checkpoint-*.json"))) == 1


def test_two_deletes_are_named_and_not_resealed(shop):
    """The issue's attack: a sealed event deleted, then the newest checkpoint and its rows dropped."""
    _, second = two_sealed_orders(shop)
    delete(shop, second, 4)
    drop_checkpoint(shop, 2)

    summary = verify(shop)
    with pytest.raises(CheckpointsChangedError):
        write_checkpoints(shop.conn, shop.trust)
    resealing = verify_all(shop.conn, shop.ledger.mapper, shop.trust)

    assert not summary.valid
    assert (second, 4) in named(summary)
    assert "checkpoint 2 (up to position" in messages(summary)
    assert "is gone from the database: the checkpoints shrank" in messages(summary)
    assert f"{second} version 4 (notification" in messages(summary)
    assert (resealing.valid, resealing.checkpoints_written) == (False, 0)
    assert latest_checkpoint(shop.conn).seq == 1


def test_two_deletes_fail_against_the_auditors_saved_checkpoint(shop):
    """An auditor elsewhere (no record of this host's) with the saved checkpoint sees the checkpoint gone."""
    _, second = two_sealed_orders(shop)
    saved = latest_checkpoint(shop.conn)
    delete(shop, second, 4)
    drop_checkpoint(shop, 2)
    elsewhere = AuditTrust(None, shop.trust.trusted)

    summary = verify(shop, elsewhere, against=saved)
    with_record = verify(shop, against=saved)

    assert not summary.valid
    assert "the saved checkpoint: checkpoint 2" in messages(summary)
    assert "gone from the database" in messages(summary)
    assert (second, 4) in named(with_record)


def test_emptied_checkpoint_tables_are_named(shop):
    """Both checkpoint tables emptied (and the newest event deleted): the record outside names both."""
    _, second = two_sealed_orders(shop)
    delete(shop, second, 4)
    shop.sql("DELETE FROM audit_checkpoint_events")
    shop.sql("DELETE FROM audit_checkpoints")

    summary = verify(shop)

    assert not summary.valid
    assert "checkpoint 2 (up to position" in messages(summary)
    assert (second, 4) in named(summary)


def test_chain_rewritten_without_the_key_is_named(shop):
    """Event, order chain, row digests, roots and checkpoint digests all recomputed: signatures and row tags
    still fail, naming the order and each rewritten version."""
    first, _second = two_sealed_orders(shop)
    rewrite_chain_without_key(shop, first, 2)

    summary = verify(shop)

    assert not summary.valid
    assert {(first, 2), (first, 3), (first, 4)} <= named(summary)
    assert "checkpoint 1 (notifications" in messages(summary)
    assert "does not match its content" in messages(summary)
    assert f"the sealed entry of {first} version 2" in messages(summary)


def test_replaced_checkpoint_is_named(shop):
    """A checkpoint re-made over a doctored range and signed with the attacker's own key is not trusted."""
    first, _ = two_sealed_orders(shop)
    kid = replace_checkpoint_over_deleted_event(shop, first, 3)

    summary = verify(shop)

    assert not summary.valid
    assert f"signed by key {kid}, which is not a trusted key" in messages(summary)
    assert "checkpoint 2 (notifications" in messages(summary)  # no longer links to the one it followed
    assert (first, 3) in named(summary)


def test_altered_event_is_named(shop):
    """A sealed event's stored content changed in place."""
    first, _ = two_sealed_orders(shop)
    alter_tracking(shop, first, 2)

    assert (first, 2) in named(verify(shop))


def test_deleted_middle_event_is_named(shop):
    """A sealed event deleted from the middle of an order."""
    first, _ = two_sealed_orders(shop)
    delete(shop, first, 2)

    summary = verify(shop)

    assert (first, 2) in named(summary)
    assert f"{first} version 2 (notification" in messages(summary)


def test_deleted_newest_events_after_a_checkpoint_are_named(shop):
    """An order's newest events deleted after the checkpoint sealed them: the chain alone cannot tell."""
    first, _ = two_sealed_orders(shop)
    delete(shop, first, 3)
    delete(shop, first, 4)

    assert {(first, 3), (first, 4)} <= named(verify(shop))


# --------------------------------------------------------------------------------------- the worker


def run_worker(shop: Shop, **kwargs: Any) -> tuple[CheckpointWorker, threading.Thread]:
    worker = CheckpointWorker(
        lambda: database.connect(shop.target, autocommit=True), shop.trust, poll=0.02, **kwargs
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def wait_for(condition: Any) -> None:
    done = threading.Event()
    for _ in range(1500):
        if condition():
            return
        done.wait(0.02)
    pytest.fail("the worker did not get there")


def test_worker_seals_every_n_events(shop):
    """N unsealed events make the worker seal, in ranges of at most N rows, every range signed."""
    worker, thread = run_worker(shop, every_events=3, max_age=3600)
    shop.order()
    wait_for(lambda: (c := latest_checkpoint(shop.conn)) is not None and c.last_position >= 4)
    worker.stop()
    thread.join()

    assert worker.error is None
    sizes = [r[0] for r in shop.conn.execute("SELECT row_count FROM audit_checkpoints").fetchall()]
    assert max(sizes) <= 3
    assert verify(shop).valid


def test_worker_seals_old_events_and_stops_when_checkpoints_shrank(shop):
    """Unsealed events older than the age limit are sealed; a dropped checkpoint stops the sealer."""
    order_id = shop.order()
    worker, thread = run_worker(shop, every_events=1000, max_age=0)
    wait_for(lambda: latest_checkpoint(shop.conn) is not None)
    delete(shop, order_id, 4)
    drop_checkpoint(shop, latest_checkpoint(shop.conn).seq)
    shop.ledger.ship(CTX, shop.order(shipments=0), carrier=Carrier.UPS, tracking_number=TRACKING)
    thread.join(timeout=30)

    assert isinstance(worker.error, CheckpointsChangedError)
    assert latest_checkpoint(shop.conn) is None


@pytest.mark.slow
def test_ledger_worker_makes_its_key_and_seals_by_itself(shop, cli_env):
    """`ledger worker` with no key configured makes one (0600, in the data directory, logged) and signs
    checkpoints on its own within LEDGER_AUDIT_CHECKPOINT_EVENTS events."""
    env = cli_env | {"LEDGER_AUDIT_CHECKPOINT_EVENTS": "2"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "worker", "--projection", "all_sales", "--no-sync"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        shop.order()
        wait_for(lambda: (c := latest_checkpoint(shop.conn)) is not None and c.last_position >= 5)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    key_file = Path(env["LEDGER_DATA_DIR"]) / "audit-signing-key.pem"
    public = parse_public_key((key_file.with_suffix(".pub")).read_text(), source="test")

    assert worker.returncode == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file) in err
    assert f"audit checkpoints signed by key {key_id(public)}" in out
    assert verify(shop, AuditTrust.of(None, public)).valid


# ------------------------------------------------------------------------------------------ keys


def test_first_start_makes_a_key_file_in_the_data_dir(tmp_path, caplog):
    """No key configured: a key file in the data directory, mode 0600, logged with its place; kept after."""
    settings = Settings(data_dir=tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="ledger.audit.keys"):
        first = load_trust(settings)
    again = load_trust(settings)
    key_file = tmp_path / "data" / "audit-signing-key.pem"

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (tmp_path / "data" / "audit-signing-key.pub").exists()
    assert str(key_file) in caplog.text
    assert first.signer_id == again.signer_id
    assert first.signer_id in first.trusted


def test_key_from_the_environment_or_a_file(tmp_path, offline_cli):
    """keygen prints a key for LEDGER_AUDIT_SIGNING_KEY or writes a 0600 file; both load; a missing file is
    a configuration error, not a new key."""
    printed = offline_cli("audit", "keygen")
    written = offline_cli("audit", "keygen", "--out", str(tmp_path / "k.pem"))
    again = offline_cli("audit", "keygen", "--out", str(tmp_path / "k.pem"))
    env_key = printed[1].splitlines()[0].removeprefix("LEDGER_AUDIT_SIGNING_KEY=")

    from_env = load_trust(Settings(data_dir=tmp_path, audit_signing_key=env_key))
    from_file = load_trust(Settings(data_dir=tmp_path, audit_key_file=tmp_path / "k.pem"))

    assert printed[0] == 0
    assert f"key id {from_env.signer_id}" in printed[1]
    assert written[0] == 0
    assert f"key id {from_file.signer_id}" in written[1]
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert again[0] == 2
    assert not (tmp_path / "audit-signing-key.pem").exists()
    assert env_key not in repr(Settings(data_dir=tmp_path, audit_signing_key=env_key))
    with pytest.raises(ConfigError, match="LEDGER_AUDIT_KEY_FILE"):
        load_trust(Settings(data_dir=tmp_path, audit_key_file=tmp_path / "missing.pem"))


# ------------------------------------------------------------------------------------ HTTP and CLI


@pytest.fixture
def client(shop: Shop) -> Iterator[TestClient[Any]]:
    """The HTTP API over the test's own schema, with the shop's signing key."""
    with TestClient(create_app(shop.target, ledger=shop.ledger, audit_trust=shop.trust)) as test_client:
        yield test_client


@pytest.fixture
def shop_cli(shop: Shop, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`ledger ARGS` in-process on the shop's schema, key and data directory: (exit status, stdout, stderr)."""
    for name in ("LEDGER_DATABASE_URL", "LEDGER_DATABASE_SCHEMA"):
        monkeypatch.setenv(name, cli_env[name])
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LEDGER_AUDIT_SIGNING_KEY", seed_b64(shop.trust.signer))
    return run_cli(monkeypatch)


@pytest.fixture
def offline_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """`ledger ARGS` with no database configured at all (an unreachable one, to be sure none is opened)."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path / "offline"))
    return run_cli(monkeypatch)


def run_cli(monkeypatch: pytest.MonkeyPatch):
    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        return main(list(args), out=out), out.getvalue(), err.getvalue()

    return run


def test_audit_routes_answer_auditors_and_admins(shop, client):
    """Public keys, the latest checkpoint and an order's bundle: auditor and admin only; others' orders 404."""
    seller = make_seller(shop.ledger)
    order_id = shop.ledger.import_order(CTX, seller.accounts[Marketplace.AMAZON], shop.imported()).order_id
    before = client.get("/v1/audit/checkpoints/latest", headers=seller.auth(Role.AUDITOR))
    write_checkpoints(shop.conn, shop.trust)
    keys = client.get("/v1/audit/public-keys", headers=seller.auth(Role.AUDITOR))
    latest = client.get("/v1/audit/checkpoints/latest", headers=seller.auth(Role.ADMIN))
    bundle = client.get(f"/v1/orders/{order_id}/audit-bundle", headers=seller.auth(Role.AUDITOR))

    assert before.status_code == 404
    assert keys.status_code == 200
    assert keys.json()["keys"] == [
        {
            "key_id": shop.trust.signer_id,
            "algorithm": "Ed25519",
            "public_key": keys.json()["keys"][0]["public_key"],
            "pem": public_pem(shop.trust.signer.public_key()).decode(),
            "signing": True,
        }
    ]
    assert latest.status_code == 200
    assert set(latest.json()) == {
        "seq",
        "last_position",
        "digest",
        "prev_digest",
        "signed_at",
        "key_id",
        "signature",
    }
    assert latest.json()["key_id"] == shop.trust.signer_id
    assert bundle.status_code == 200
    assert [e["version"] for e in bundle.json()["events"]] == [1]
    for path in (
        "/v1/audit/public-keys",
        "/v1/audit/checkpoints/latest",
        f"/v1/orders/{order_id}/audit-bundle",
    ):
        assert client.get(path, headers=seller.auth(Role.OPERATOR)).status_code == 403
        assert client.get(path, headers=seller.auth(Role.FINANCE)).status_code == 403
    foreign = client.get(
        f"/v1/orders/{order_id}/audit-bundle", headers=make_seller(shop.ledger).auth(Role.AUDITOR)
    )
    assert foreign.status_code == 404


def test_bundle_verifies_offline_and_a_tampered_bundle_fails(shop, client, offline_cli, tmp_path):
    """`ledger audit verify-bundle` needs only the bundle and the public key; any edit to the bundle fails."""
    seller = make_seller(shop.ledger)
    order_id = shop.ledger.import_order(CTX, seller.accounts[Marketplace.AMAZON], shop.imported()).order_id
    shop.ledger.ship(CTX, order_id, carrier=Carrier.UPS, tracking_number=TRACKING)
    write_checkpoints(shop.conn, shop.trust, size=2)
    bundle = client.get(f"/v1/orders/{order_id}/audit-bundle", headers=seller.auth(Role.AUDITOR)).json()
    public = tmp_path / "auditor.pub"
    public.write_bytes(public_pem(shop.trust.signer.public_key()))
    good, altered, resigned = tmp_path / "good.json", tmp_path / "altered.json", tmp_path / "resigned.json"
    good.write_text(json.dumps(bundle))
    state = base64.b64decode(bundle["events"][1]["state"]).replace(TRACKING.encode(), b"1Z999AA10123456792")
    altered.write_text(
        json.dumps(
            bundle
            | {
                "events": [
                    bundle["events"][0],
                    bundle["events"][1] | {"state": base64.b64encode(state).decode()},
                ]
            }
        )
    )
    forged = dict(bundle["checkpoint"], signature=base64.b64encode(b"\0" * 64).decode())
    resigned.write_text(
        json.dumps(
            bundle
            | {
                "checkpoints": [
                    dict(c, signed=forged) if c["signed"]["seq"] == forged["seq"] else c
                    for c in bundle["checkpoints"]
                ]
            }
        )
    )

    ok = offline_cli("audit", "verify-bundle", str(good), "--public-key", str(public))
    bad_event = offline_cli("audit", "verify-bundle", str(altered), "--public-key", str(public))
    bad_signature = offline_cli("audit", "verify-bundle", str(resigned), "--public-key", str(public))
    other_key = tmp_path / "other.pub"
    other_key.write_bytes(public_pem(Ed25519PrivateKey.generate().public_key()))
    wrong_key = offline_cli("audit", "verify-bundle", str(good), "--public-key", str(other_key))

    assert ok[0] == 0, ok
    assert f"order {order_id}: valid (2 events" in ok[1]
    assert bad_event[0] == 1
    assert f"order {order_id} version 2: its content does not match its digest" in bad_event[1]
    assert bad_signature[0] == 1
    assert "does not match its content" in bad_signature[1]
    assert wrong_key[0] == 1
    assert "not a trusted key" in wrong_key[1]
    assert key_id(shop.trust.signer.public_key()) == bundle["checkpoint"]["key_id"]


def test_cli_verify_against_a_saved_checkpoint(shop, shop_cli, tmp_path):
    """The auditor saves `ledger audit latest-checkpoint`; after the two DELETEs `verify --against` fails
    naming checkpoint, order and version, and `ledger checkpoint` refuses to re-seal."""
    shop.order()
    assert shop_cli("checkpoint")[0] == 0
    order_id = shop.order()
    assert shop_cli("checkpoint")[0] == 0
    saved = tmp_path / "saved.json"
    status, output, _ = shop_cli("audit", "latest-checkpoint")
    saved.write_text(output)
    delete(shop, order_id, 4)
    drop_checkpoint(shop, 2)

    broken = shop_cli("verify", "--all", "--against", str(saved))
    reseal = shop_cli("checkpoint")

    assert status == 0
    assert broken[0] == 1
    assert "the saved checkpoint: checkpoint 2" in broken[1]
    assert f"{order_id} version 4" in broken[1]
    assert reseal[0] == 1
    assert "refusing to seal" in reseal[2]
