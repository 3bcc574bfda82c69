"""The events table gets its commit-order column: `transaction_id xid8`, the transaction that wrote each row.

From this version on, saves take no table lock, and readers take only rows below the commit horizon (see
`LedgerApplicationRecorder`, "Positions"). A new row's position is (its transaction id << 20) + its place in
the transaction; the rows already here keep their sequence-numbered positions and get transaction 0, below every
horizon. This holds only if every position already given is below the first new one, which is checked here:
the current transaction id << 20 is above the largest position in the table (it would take more than a million
events per transaction, on average over the database's whole life, to break it).

Stop every process of the previous version before this migration runs: the sequence's default is dropped, so
a save of theirs afterwards fails (rather than taking a sequence number below positions already read, which
followers would skip).

On a schema without the events table yet (a new deployment), nothing to do: the recorder creates the table with
the column. Adding a column with a constant default does not rewrite the table; the default then changes for
the rows to come. Both take the table's ACCESS EXCLUSIVE lock for a moment.
"""

from typing import Any

SHIFT = 20


def apply(cur: Any) -> None:
    cur.execute("SELECT to_regclass('ledger_events') IS NOT NULL")
    if not cur.fetchone()[0]:
        return
    cur.execute(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('ledger_events')"
        " AND attname = 'transaction_id' AND NOT attisdropped"
    )
    if cur.fetchone() is not None:
        return
    cur.execute("LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE")
    cur.execute(
        "SELECT coalesce(max(notification_id), 0), pg_current_xact_id()::text::bigint << %s FROM ledger_events",
        (SHIFT,),
    )
    last, first_new = cur.fetchone()
    if last >= first_new:
        msg = (
            f"ledger_events: the last position ({last}) is not below the first position of the new numbering"
            f" ({first_new}); this database cannot be converted in place"
        )
        raise RuntimeError(msg)
    cur.execute("ALTER TABLE ledger_events ADD COLUMN transaction_id xid8 NOT NULL DEFAULT '0'::xid8")
    cur.execute("ALTER TABLE ledger_events ALTER COLUMN transaction_id SET DEFAULT pg_current_xact_id()")
    # A save without a position (a process of the previous version) fails rather than numbering from the sequence
    cur.execute("ALTER TABLE ledger_events ALTER COLUMN notification_id DROP DEFAULT")
