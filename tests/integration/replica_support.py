"""A PostgreSQL primary and a streaming replica of it, started by a test with the machine's own PostgreSQL
binaries (initdb, pg_ctl, pg_basebackup), in a temporary directory, on free ports.

initdb and pg_ctl refuse to run as root: as root, every server command runs as the `postgres` system user
(`runuser`), which owns the directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from ledger.eventstore.database import PostgresTarget

SERVER_USER = "postgres"
START_TIMEOUT_SECONDS = 60


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb, pg_ctl and pg_basebackup."""
    found = [
        d / "bin"
        for d in Path("/usr/lib/postgresql").glob("*")
        if all((d / "bin" / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup"))
    ]
    if not found:
        msg = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        raise RuntimeError(msg)
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Pair:
    primary: PostgresTarget
    replica: PostgresTarget


class _Servers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = postgres_bin()
        self.as_root = os.geteuid() == 0

    def run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            msg = f"{tool} failed ({result.returncode}): {result.stdout}\n{result.stderr}"
            raise RuntimeError(msg)

    def start(self, pgdata: Path) -> None:
        self.run("pg_ctl", "-D", str(pgdata), "-l", str(self.root / f"{pgdata.name}.log"), "-w", "start")

    def stop(self, pgdata: Path) -> None:
        if (pgdata / "postmaster.pid").exists():
            self.run("pg_ctl", "-D", str(pgdata), "-m", "immediate", "-w", "stop")


def _target(port: int, schema: str) -> PostgresTarget:
    return PostgresTarget(host="127.0.0.1", port=port, dbname="postgres", user="postgres", schema=schema)


@contextmanager
def primary_and_replica(schema: str) -> Iterator[Pair]:
    """A primary (wal_level=replica, a replication line in pg_hba.conf) and a hot standby made from it with
    `pg_basebackup -R`; both stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="ledger-replica-"))
    servers = _Servers(root)
    if servers.as_root:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(root, user.pw_uid, user.pw_gid)
    primary, replica = root / "primary", root / "replica"
    primary_port, replica_port = free_port(), free_port()
    try:
        servers.run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (primary / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {primary_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n"
            )
        with (primary / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        servers.start(primary)
        servers.run(
            "pg_basebackup",
            *("-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres"),
            *("-D", str(replica), "-R", "-X", "stream", "--checkpoint=fast"),
        )
        with (replica / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {replica_port}\n")
        servers.start(replica)
        pair = Pair(_target(primary_port, schema), _target(replica_port, schema))
        with psycopg.connect(pair.replica.conninfo(), autocommit=True) as conn:
            row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            assert row is not None
            assert row[0], "the replica is not a standby"
        yield pair
    finally:
        for pgdata in (replica, primary):
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                servers.stop(pgdata)
        shutil.rmtree(root, ignore_errors=True)
