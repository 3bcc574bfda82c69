"""The library's `Application` with the Ledger's persistence: every override of the library's internals.

The Ledger (ledger.application) is built on `EventStoreApplication` and knows nothing of what is here beyond
`_save`, `_existing_ids`, `stored_response`, `store_response` and `personal_data`. What changes, and why:
- the repository: `LedgerRepository` (repository.py), no deep copy of an aggregate loaded for a command, and a
  bounded aggregate cache;
- the recorder: created with a few retries, since processes starting together race on the catalog; in memory,
  `MemoryApplicationRecorder` (idempotency.py), which keeps stored responses as the PostgreSQL one does;
- the transcoder: `LedgerTranscoder` (transcoding.py), the library's JSON written faster, value objects stored
  under names that never change;
- the mapper: `LedgerMapper` (decoding.py), the library's domain events decoded by a typed decoder per event
  class, the library's decoding for anything else;
- saves: on PostgreSQL, grouped with other threads' saves in one transaction (group_commit.py);
- the crypto-shredding key store that matches the recorder (keys_store.py), and the responses stored under
  idempotency keys (idempotency.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application, Repository
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    InternalError,
    JSONTranscoder,
    Mapper,
    Notification,
    ProgrammingError,
    Recording,
    StoredEvent,
    Transcoder,
)
from eventsourcing.popo import POPOFactory
from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.eventstore.database import LedgerApplicationRecorder
from ledger.eventstore.decoding import LedgerMapper
from ledger.eventstore.group_commit import GroupCommitter
from ledger.eventstore.idempotency import MemoryApplicationRecorder, ResponseRecorder, StoredResponse
from ledger.eventstore.keys_store import KeyStore, MemoryKeys, PersonalData, PostgresKeys
from ledger.eventstore.repository import LedgerRepository
from ledger.eventstore.transcoding import VALUE_TRANSCODINGS, DataclassTranscoding, LedgerTranscoder

CREATE_TABLE_ATTEMPTS = 5
READ_ONLY = "LEDGER_READ_ONLY"
"""Set ("y") for an application over a read replica (database.read_only_env): it reads, never writes."""


class EventStoreApplication(Application[UUID]):
    """An eventsourcing Application whose persistence is the Ledger's (see the module's docstring)."""

    # The library reads "0" as an UNBOUNDED cache (every aggregate ever loaded kept for the life of the process);
    # a bounded LRU keeps recently used aggregates, fast-forwarded from the store before each use.
    env: ClassVar[dict[str, str]] = {"AGGREGATE_CACHE_MAXSIZE": "1000"}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self.personal_data = PersonalData(self._key_store())
        # On PostgreSQL, concurrent saves are committed together (see group_commit.py); LEDGER_GROUP_COMMIT=n
        # saves each alone, as the library does.
        grouped = isinstance(self.recorder, PostgresApplicationRecorder) and self.env.get(
            "LEDGER_GROUP_COMMIT", "y"
        ).strip().lower() not in ("n", "no", "0", "false", "off")
        self.committer: GroupCommitter | None = GroupCommitter(self._put_encoded) if grouped else None

    def construct_repository(self) -> Repository[UUID]:
        library = super().construct_repository()
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return LedgerRepository(
            event_store=self.events,
            snapshot_store=self.snapshots,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=library.fastforward,
            fastforward_skipping=library.fastforward_skipping,
            deepcopy_from_cache=library.deepcopy_from_cache,
        )

    def _key_store(self) -> KeyStore:
        if isinstance(self.recorder, PostgresApplicationRecorder):
            return PostgresKeys(self.recorder.datastore, read_only=self.env.get(READ_ONLY, "") == "y")
        return MemoryKeys()

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()
        super().close()

    def _save(self, *aggregates: Any, responses: Sequence[StoredResponse] = ()) -> list[Recording[UUID]]:
        """Save the aggregates' pending events, and `responses` under their idempotency keys, in one
        transaction, grouped with other threads' saves.

        Raises what a lone save would (IntegrityError on a version conflict, or a response already stored under
        one of the keys) and records nothing then. The library's post-save hooks (`_notify`, snapshots) are
        skipped: the Ledger uses neither."""
        if self.committer is None:
            return self.save(*aggregates, stored_responses=responses)
        # Encoded here, in the request's thread: the committer's thread is the one everybody waits for.
        encoded = [
            (event, self.mapper.to_stored_event(event))
            for aggregate in aggregates
            for event in aggregate.collect_events()
        ]
        recordings = self.committer.save(encoded, responses)
        if self.repository.cache is not None:  # as the library's save does (LedgerRepository)
            for aggregate in aggregates:
                self.repository.cache.put(aggregate.id, aggregate)
        return recordings

    def _put_encoded(
        self, encoded: Sequence[tuple[Any, StoredEvent]], responses: Sequence[StoredResponse]
    ) -> list[Recording[UUID]]:
        """The library's `EventStore.put` for events already encoded, with the responses to store beside them:
        one transaction, the recordings in order."""
        ids = self.recorder.insert_events([stored for _, stored in encoded], stored_responses=responses)
        assert ids is not None
        assert len(ids) == len(encoded)
        return [
            Recording(
                event,
                Notification(
                    originator_id=stored.originator_id,
                    originator_version=stored.originator_version,
                    topic=stored.topic,
                    state=stored.state,
                    id=notification_id,
                ),
            )
            for (event, stored), notification_id in zip(encoded, ids, strict=True)
        ]

    def construct_recorder(self) -> ApplicationRecorder:
        """The library creates its tables on start; processes starting together race on the catalog. In
        memory, a recorder that also keeps stored responses."""
        if isinstance(self.factory, POPOFactory):
            return MemoryApplicationRecorder()
        for attempt in range(CREATE_TABLE_ATTEMPTS):
            try:
                return super().construct_recorder()
            except (InternalError, IntegrityError, ProgrammingError):
                if attempt == CREATE_TABLE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def construct_mapper(self) -> Mapper[UUID]:
        """Stored events decoded by typed decoders (decoding.py); a MAPPER_TOPIC setting still wins."""
        if self.env.get(self.factory.MAPPER_TOPIC):
            return super().construct_mapper()
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=LedgerMapper)

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON, written faster (transcoding.py); a TRANSCODER_TOPIC setting still wins."""
        if self.env.get(self.factory.TRANSCODER_TOPIC):
            return super().construct_transcoder()
        transcoder = LedgerTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        for cls, name in VALUE_TRANSCODINGS:
            transcoder.register(DataclassTranscoding(cls, name))

    def _existing_ids(self, originator_ids: list[UUID]) -> set[UUID]:
        """Which of these aggregates have events (on PostgreSQL in one query: a bulk import's existence check)."""
        if isinstance(self.recorder, LedgerApplicationRecorder):
            return self.recorder.existing_originator_ids(originator_ids)
        return {
            originator_id
            for originator_id in originator_ids
            if self.recorder.select_events(originator_id, limit=1)
        }

    def recorded_notifications(self, start: int, limit: int, topics: Sequence[str]) -> Sequence[Notification]:
        """Events after `start` committed as this read begins (`LedgerApplicationRecorder.select_recorded`: above
        the commit horizon too), for a request that reads the log as it stands, never for a follower's cursor. In
        memory every saved event is readable at once."""
        if isinstance(self.recorder, LedgerApplicationRecorder):
            return self.recorder.select_recorded(start, limit, topics)
        return self.recorder.select_notifications(start, limit, topics=topics, inclusive_of_start=False)

    def last_recorded_position(self) -> int | None:
        """The largest position committed (`LedgerApplicationRecorder.max_recorded_id`: above the commit horizon
        too), which covers every event committed before the call; in memory, the last saved."""
        if isinstance(self.recorder, LedgerApplicationRecorder):
            return self.recorder.max_recorded_id()
        return self.recorder.max_notification_id()

    @property
    def _responses(self) -> ResponseRecorder:
        recorder = self.recorder
        assert isinstance(recorder, LedgerApplicationRecorder | MemoryApplicationRecorder), recorder
        return recorder

    def stored_response(self, seller: str, key: str) -> StoredResponse | None:
        """The response stored under this seller's idempotency key, if any (ledger.eventstore.idempotency)."""
        return self._responses.select_response(seller, key)

    def store_response(self, response: StoredResponse) -> None:
        """Keep a response under its key (a no-op if one is there): for effects made of several transactions."""
        self._responses.keep_response(response)
