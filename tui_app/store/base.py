"""The store interface: every state transition and query the rest of tui_app may use.

The store is the project's single source of truth and the only code that
writes SQL. Implementations: :class:`~tui_app.store.sqlite.SqliteStore` (the
default, one file) and :class:`~tui_app.store.postgres.PostgresStore` (one
database shared by workers on several machines), both built on the shared
transitions of :class:`~tui_app.store.sql.SqlStore`. A backend keeps its
specifics (PRAGMAs, locking, connection handling) inside its implementation;
callers see only this protocol and the typed rows of :mod:`tui_app.store.rows`.

Item life cycle (DESIGN.md)::

    pending -> generating -> completed | failed       (+ cancelled)

Every method that changes state runs one short transaction touching only its
rows and writes its event in that transaction; the final write of a take is
guarded by the claim's ``generation``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from .rows import (
    NO_GATES,
    Batch,
    Choice,
    Claim,
    DiskState,
    Event,
    Final,
    ImportReport,
    Item,
    Row,
    RowFilter,
    SourceItem,
    Take,
    TakeFile,
    TakeRecord,
    Worker,
)


class ChangeListener(Protocol):
    """Wakes a watcher when another connection commits a change (:meth:`Store.listen`).

    It has a connection of its own: :meth:`wait` may block in a thread other than the one using the
    store, one thread at a time; :meth:`close` may be called from any thread.
    """

    def wait(self, timeout_s: float) -> bool:
        """Block until another connection commits a change, or ``timeout_s`` seconds pass, or
        :meth:`close`; True when a change came (or may have come unheard: the connection to the
        server was lost and made again), False on timeout or once closed. Never raises for a lost
        connection: it connects again on a later call."""
        ...

    def close(self) -> None:
        """End a wait in progress (it returns False) and release the connection."""
        ...


class Store(Protocol):
    """A project's state: items, takes, batches and events (see the module docstring)."""

    # -- connection
    def reader(self) -> Store:
        """A second, read-only handle for live views; reads never block the writer."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...

    def schema_version(self) -> int:
        """The schema version of the open database."""
        ...

    # -- events
    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` with every event this handle writes, after its transaction commits."""
        ...

    def log(
        self, level: str, kind: str, message: str, *, collection: str | None = None, key: str | None = None
    ) -> None:
        """Append one event (level ``info``, ``warning`` or ``error``)."""
        ...

    def events(self, *, after_id: int = 0, limit: int = 1000) -> list[Event]:
        """Events with ``id > after_id``, oldest first, at most ``limit``."""
        ...

    def recent_events(self, limit: int = 500) -> list[Event]:
        """The newest ``limit`` events, oldest first."""
        ...

    # -- import
    def import_items(self, collection: str, items: Iterable[SourceItem]) -> ImportReport:
        """Idempotently bring ``collection`` in line with its source (new, changed -> stale, retired)."""
        ...

    # -- queries
    def counts(self, collections: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """``{collection: {status: count}}`` for non-retired items, every status present."""
        ...

    def waiting(self, collections: Sequence[str]) -> set[str]:
        """The ``collections`` with at least one pending item."""
        ...

    def get_item(self, item_id: int) -> Item | None:
        """One item by id."""
        ...

    def find_item(self, collection: str, key: str) -> Item | None:
        """One item by collection and key."""
        ...

    def items(self, collection: str, *, status: str | None = None) -> list[Item]:
        """Non-retired items of ``collection`` in source order."""
        ...

    def takes(self, item_id: int) -> list[Take]:
        """All takes of one item, oldest first."""
        ...

    def get_take(self, take_id: int) -> Take | None:
        """One take by id."""
        ...

    def current_takes(self, collection: str) -> list[tuple[str, Take]]:
        """``(key, take)`` of every completed, non-retired item with a current take, in source order."""
        ...

    def next_take_number(self, item_id: int) -> int:
        """1 + the item's highest take number."""
        ...

    def next_wakeup(self, collections: Sequence[str]) -> float | None:
        """Earliest unix time a backing-off pending item may be claimed, or None."""
        ...

    def failed_items(self, collections: Sequence[str]) -> list[Item]:
        """Failed, non-retired items, by collection and source order."""
        ...

    # -- live tables
    def count_rows(self, collection: str, where: RowFilter) -> int:
        """How many table rows match."""
        ...

    def is_dense(self, collection: str) -> bool:
        """True when row offsets equal ordinals (no gaps, nothing retired)."""
        ...

    def rows(
        self, collection: str, where: RowFilter, offset: int, limit: int, *, dense: bool = False
    ) -> list[Row]:
        """One page of table rows in source order."""
        ...

    def row_ids(self, collection: str, where: RowFilter) -> list[int]:
        """Ids of every matching row, in source order."""
        ...

    # -- work queue
    def create_batch(self, kind: str, note: str = "") -> int:
        """Insert a batch row (``retry``, ``run``); returns its id."""
        ...

    def get_batch(self, batch_id: int) -> Batch | None:
        """One batch by id, or None."""
        ...

    def request(
        self,
        item_ids: Sequence[int],
        *,
        batch_id: int | None,
        priority: int,
        overrides: Mapping[str, Any] | None = None,
    ) -> list[Item]:
        """Queue items for a new take, durably; returns the queued items."""
        ...

    def reset_failed(self, collections: Sequence[str], batch_id: int | None, *, priority: int = 0) -> int:
        """Queue every failed item again; returns how many."""
        ...

    def claim_next(self, collection: str, **gates: Any) -> Item | None:
        """:meth:`claim` of one item (``gates``: the fields of :class:`~.rows.Claim`), or None."""
        ...

    def claim(self, collection: str, count: int, how: Claim = NO_GATES) -> list[Item]:
        """Claim up to ``count`` items in one transaction (``generating``, under ``how.worker_id``'s
        lease), at most ``how.limit`` minus the live leases of other workers on the provider's
        collections; none while paused."""
        ...

    def claim_turn(
        self, collection: str, interval_s: float, how: Claim = NO_GATES
    ) -> tuple[list[Item], float]:
        """A paced provider's claim of one item that is also its next request start across every
        worker: ``(items, 0.0)``, or ``([], seconds to wait)`` when the start is not due yet."""
        ...

    def complete(self, item: Item, take: TakeRecord) -> int | None:
        """The guarded final write: the new take id, or None when the claim no longer holds."""
        ...

    def complete_many(self, done: Sequence[tuple[Item, TakeRecord]]) -> list[int | None]:
        """:meth:`complete` for several takes in one transaction; the take ids (None: refused), in order."""
        ...

    def fail(self, item: Item, error: str, *, retry_at: float | None = None, max_attempts: int = 1) -> bool:
        """Record a failed try, ``attempts`` + 1 (back to pending until ``retry_at``, or failed); guarded."""
        ...

    def release(self, item: Item, reason: str) -> bool:
        """Give a claimed item back (``pending``); no attempt is counted; guarded."""
        ...

    def cancel(self, item_ids: Sequence[int]) -> int:
        """Cancel queued or in-flight items; returns how many."""
        ...

    def recover(self, dead_workers: Sequence[str] = ()) -> list[tuple[str, str]]:
        """Items whose lease expired, or held by ``dead_workers``, go back to ``pending`` (no attempt)."""
        ...

    # -- workers and queue control
    def register_worker(self, worker_id: str, host: str, pid: int, collections: Sequence[str]) -> None:
        """Record a live worker."""
        ...

    def heartbeat(self, worker_id: str, lease_s: float) -> set[int] | None:
        """Renew a worker's heartbeat and leases; returns the ids of the items it still holds, or None
        when the worker is not registered (taken for dead by another)."""
        ...

    def held(self, worker_id: str) -> set[int]:
        """Ids of the items a worker holds now."""
        ...

    def retire_worker(self, worker_id: str) -> list[tuple[str, str]]:
        """A worker stops: its items go back to ``pending``, its row goes."""
        ...

    def workers(self) -> list[Worker]:
        """Every registered worker, with the items it holds."""
        ...

    def pause(self, names: Sequence[str]) -> list[str]:
        """Pause claims for collections or providers (``*``: everything); returns the newly paused."""
        ...

    def resume(self, names: Sequence[str]) -> list[str]:
        """Lift pauses; returns the names resumed."""
        ...

    def paused(self) -> set[str]:
        """The paused names."""
        ...

    def front(self, item_ids: Sequence[int]) -> int:
        """Serve these pending items next; returns how many moved."""
        ...

    def regenerate(
        self,
        item_ids: Sequence[int],
        *,
        debounce_s: float,
        priority: int,
        overrides: Mapping[str, Any] | None = None,
        sweep: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[int, list[Item]]:
        """Queue items for a new take in the open regenerate batch (one per debounce window)."""
        ...

    def reserve_start(self, provider: str, interval_s: float) -> float:
        """Take the provider's next request start across all workers once due: 0.0, else seconds to wait."""
        ...

    def cool_down(self, provider: str, until: float) -> None:
        """Hold every worker's requests to ``provider`` until ``until`` (unix time)."""
        ...

    def learn_pace(self, provider: str, rps: float) -> None:
        """Record the provider's pace learned from 429s (requests/s over all workers)."""
        ...

    def paces(self) -> dict[str, tuple[float, float | None, float | None]]:
        """``{provider: (cooldown_until, learned_rps, learned_at)}``."""
        ...

    def record_command(self, kind: str, args: Mapping[str, Any], origin: str, note: str) -> int:
        """Append to the durable command log."""
        ...

    def data_version(self) -> int:
        """Changes whenever another connection commits (PostgreSQL: once its change notification
        has arrived, a few milliseconds after the commit)."""
        ...

    def listen(self) -> ChangeListener | None:
        """A :class:`ChangeListener` woken by other connections' commits (PostgreSQL: ``LISTEN`` on a
        connection of its own), or None when this backend is watched by polling :meth:`data_version`
        (SQLite, where a poll is one cheap read of the file's header)."""
        ...

    def lost_connection(self, exc: BaseException) -> bool:
        """True when ``exc``, raised by a call of this store, means its server is unreachable or cut
        the connection (PostgreSQL restarted, network down): the same call may succeed later, and a
        write may or may not have been committed. Always False for SQLite."""
        ...

    # -- takes
    def cache_keys(self) -> set[str]:
        """Every request key that has a take."""
        ...

    def cache_lookup(self, cache_key: str) -> Take | None:
        """The newest take of an identical request."""
        ...

    def revert(self, item_id: int, number: int) -> bool:
        """Make an earlier take current again; False when there is no such take."""
        ...

    def review(
        self, item_id: int, state: str, note: str | None = None, *, number: int | None = None
    ) -> int | None:
        """Review an item's current take (or take ``number``; accepting it makes it current);
        the take's number, or None without such a take."""
        ...

    def claim_checks(self, collections: Sequence[str], count: int, hold_s: float) -> list[TakeFile]:
        """Claim up to ``count`` takes whose ASR check has not run, for ``hold_s`` seconds."""
        ...

    def record_check(self, take_id: int, metrics: Mapping[str, Any], flags: str | None) -> bool:
        """Store a take's ASR check (metrics merged into its QA metrics, flags replaced)."""
        ...

    def release_check(self, take_id: int) -> None:
        """Give back a claimed ASR check that was not done."""
        ...

    def checks_left(self, collections: Sequence[str]) -> int:
        """Takes whose ASR check has not finished."""
        ...

    def review_counts(self, collections: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{collection: {review state: count}}`` over current takes."""
        ...

    def all_takes(self, collection: str | None = None) -> list[TakeFile]:
        """Every take with its item's collection, key and status."""
        ...

    def completed_without_take(self) -> list[Item]:
        """Completed items whose current take is missing."""
        ...

    def requeue(self, item_id: int, reason: str, *, take_id: int | None) -> bool:
        """Send an item back to ``pending`` without a current take, while ``take_id`` is still current."""
        ...

    def forget_take(self, take_id: int, reason: str) -> bool:
        """Delete a take's row (never the current take's) and any final made from it; True when deleted."""
        ...

    def choose(self, item_id: int) -> Choice:
        """Choose one variant of a photo; the others are set aside and their finals forgotten."""
        ...

    # -- finals and sync
    def finals_to_build(self, collection: str) -> list[tuple[Item, Take]]:
        """``(item, current take)`` of chosen items whose final is missing or made from another take."""
        ...

    def final(self, item_id: int) -> Final | None:
        """The item's recorded final, or None."""
        ...

    def record_final(
        self, item_id: int, take_id: int, path: str, sha256: str, size: int, width: int, height: int
    ) -> tuple[bool, str | None]:
        """Record a built final (guarded: still chosen, take still current); ``(recorded, replaced path)``."""
        ...

    def forget_final(self, item_id: int, reason: str) -> None:
        """Delete the item's final row, with an event."""
        ...

    def disk_state(self) -> DiskState:
        """Takes, finals, generating items and unbuilt finals in one consistent snapshot."""
        ...


class Outage:
    """What :func:`tolerate_outage` caught: ``error``, the lost-connection exception, or None when
    the block ran through."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


@contextmanager
def tolerate_outage(store: Store) -> Iterator[Outage]:
    """Run the block; an exception that :meth:`Store.lost_connection` says is a lost database
    connection ends it and is kept on the yielded :class:`Outage` (the caller decides what to do
    without the database: wait, skip, use a default); any other exception propagates.

    Usage::

        with tolerate_outage(store) as outage:
            items = store.claim(...)
        if outage.error is not None:
            ...  # the claim may or may not have landed
    """
    caught = Outage()
    try:
        yield caught
    except Exception as exc:
        if not store.lost_connection(exc):
            raise
        caught.error = exc
