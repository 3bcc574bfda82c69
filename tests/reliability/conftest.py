"""Fixtures of the reliability suite: the sandbox server and its control client, and a `flow` (a ledger in a
schema of its own with managed accounts at the sandbox; see sync_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))

from sandbox_support import sandbox_fixture, sandbox_url_fixture  # noqa: F401
from sync_support import flow  # noqa: F401
