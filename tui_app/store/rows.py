"""The typed rows that leave the store: items, takes, batches, events and table rows.

Every store query returns these frozen dataclasses; no dict or tuple row
leaves the store. JSON columns (``params``, ``overrides``, ``qa``) arrive
decoded. Times are unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Item statuses, in the order the life cycle visits them (see DESIGN.md).
STATUSES = ("pending", "generating", "completed", "failed", "cancelled")
#: A take's review states: every new take starts ``unreviewed``.
REVIEW_STATES = ("unreviewed", "accepted", "rejected")


@dataclass(frozen=True)
class Item:
    """One row of ``items`` (a claim returns the row as it is after the claim).

    Attributes:
        id: row id.
        collection: collection name.
        key: entry id, ``page_007``, ``astronaut.s1-balanced``.
        ordinal: position in the source (0 is the cover of a story).
        text: entry text, page text, or the photo's file name.
        params: the item's parameters from its source (emotion, prompt, slot, seed, ...).
        status: one of :data:`STATUSES`.
        stale: the current take was made from other input than the item's now (derived
            from the take: reverting to a take of older input leaves the item stale).
        priority: higher is served first (regenerations, retries).
        generation: bumped by every claim and every new request (the guard of the final write).
        attempts: failed tries of the current request (each a real provider error; a crash,
            an interruption or a full disk costs none).
        last_error: the last failure's message, or None.
        overrides: regenerate overrides for the next take, or None.
        batch_id: the batch that queued the item, or None.
        current_take: id of the current take, or None.
        chosen: variants: 1 chosen, -1 set aside, 0 undecided.
        next_take: set by a claim: the number the next take will get (0 elsewhere).
        worker_id: the worker holding the item's lease while it is ``generating``, else None.
    """

    id: int
    collection: str
    key: str
    ordinal: int
    text: str
    params: dict[str, Any]
    status: str
    stale: bool
    priority: int
    generation: int
    attempts: int
    last_error: str | None
    overrides: dict[str, Any] | None
    batch_id: int | None
    current_take: int | None
    chosen: int = 0
    next_take: int = 0
    worker_id: str | None = None


@dataclass(frozen=True)
class Take:
    """One row of ``takes``: an immutable file and what made it.

    Attributes:
        id: row id.
        item_id: the item's id.
        number: 1 for the item's first take, then 2, 3, ...
        path: the file, relative to the project root (``KEY.takeN.EXT``).
        sha256: hex digest of the file.
        bytes: file size, bytes.
        duration_s: audio length, seconds (speech takes).
        sample_rate: audio sample rate, Hz (speech takes).
        width, height: image size, pixels (image takes).
        provider: the provider name that made it.
        model: model or voice name, when known.
        params: the generation parameters recorded with the take.
        seed: the seed used, when the generator takes one.
        elapsed_s: seconds from the request to the answer.
        created_at: unix time the take was recorded.
        qa: QA metrics of a speech take (see :mod:`tui_app.qa`), or None.
        qa_flags: ``'; '``-joined QA flags, None when there are none.
        cache_key: sha256 of the request (generation cache), or None.
        cache_uses: how many later takes reused this take's file.
        cache_last_used: unix time of the last reuse, or None.
        review: ``unreviewed`` (every new take), ``accepted`` or ``rejected``.
        review_note: why, as the reviewer wrote it, or None.
        reviewed_at: unix time of the last review, or None.
    """

    id: int
    item_id: int
    number: int
    path: str
    sha256: str
    bytes: int
    duration_s: float | None
    sample_rate: int | None
    width: int | None
    height: int | None
    provider: str
    model: str | None
    params: dict[str, Any]
    seed: int | None
    elapsed_s: float
    created_at: float
    qa: dict[str, Any] | None
    qa_flags: str | None
    cache_key: str | None
    cache_uses: int
    cache_last_used: float | None
    review: str = "unreviewed"
    review_note: str | None = None
    reviewed_at: float | None = None


@dataclass(frozen=True)
class TakeFile:
    """A take with what sync and cleanup need to know about its item.

    Attributes:
        take: the take row.
        collection: its item's collection.
        key: its item's key.
        item_status: its item's status.
        current: True when it is its item's current take.
    """

    take: Take
    collection: str
    key: str
    item_status: str
    current: bool


@dataclass(frozen=True)
class Final:
    """One row of ``finals``: a chosen variant's take, upscaled (see :mod:`tui_app.finalize`).

    A final is current while its take is its item's current take and the item is chosen;
    otherwise it is out of date and is never exported.

    Attributes:
        item_id: the item's id.
        take_id: the take it was made from.
        take_number: that take's number.
        path: the file, relative to the project root (``finals/KEY.takeN.png``).
        sha256: hex digest of the file.
        bytes: file size, bytes.
        width, height: image size, pixels.
        created_at: unix time it was recorded.
    """

    item_id: int
    take_id: int
    take_number: int
    path: str
    sha256: str
    bytes: int
    width: int
    height: int
    created_at: float


@dataclass(frozen=True)
class FinalFile:
    """A final with its item's collection and key, and whether it is current."""

    final: Final
    collection: str
    key: str
    current: bool


@dataclass(frozen=True)
class DiskState:
    """What sync compares with the disk, read in one consistent snapshot.

    Attributes:
        takes: every take, with its item's collection, key, status and whether it is current.
        finals: every recorded final.
        generating: ``(collection, key)`` of items whose claim may still record a take.
        finalizing: ``(collection, key) -> take number`` of chosen items whose final is not
            built for their current take yet (a final of that take may still be recorded).
    """

    takes: list[TakeFile]
    finals: list[FinalFile]
    generating: set[tuple[str, str]]
    finalizing: dict[tuple[str, str], int]


@dataclass(frozen=True)
class Choice:
    """What :meth:`~tui_app.store.base.Store.choose` changed.

    Attributes:
        aside: ids of the other variants of the photo, now set aside.
        dropped_finals: paths (relative to the root) of their finals, forgotten: delete the files.
    """

    aside: list[int]
    dropped_finals: list[str]


@dataclass(frozen=True)
class Worker:
    """One row of ``workers``: a process serving the project (``tui-app worker``, ``--batch``, the TUI).

    Attributes:
        id: the worker id (``HOST-PID-XXXX``).
        host: host name.
        pid: process id on that host.
        started_at: unix time it registered.
        heartbeat_at: unix time of its last heartbeat (a live worker renews every few seconds).
        collections: the collections it serves.
        in_flight: items it holds a lease on now.
    """

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    collections: tuple[str, ...]
    in_flight: int


@dataclass(frozen=True)
class Batch:
    """One row of ``batches``: items queued together.

    Attributes:
        id: row id.
        kind: ``run``, ``regenerate`` or ``retry``.
        state: ``open`` while a debounce window collects requests, then ``queued``.
        note: the line logged when it was queued.
        created_at: unix time.
    """

    id: int
    kind: str
    state: str
    note: str
    created_at: float


@dataclass(frozen=True)
class Event:
    """One row of ``events``: something that happened, in one human-readable line.

    The store writes each event in the transaction of the change it describes and,
    after the commit, hands the same object to its listeners, so the Log tab, the
    ``--batch`` output and the events table always show the same text.

    Attributes:
        id: row id (increasing).
        ts: unix time.
        level: ``info``, ``warning`` or ``error``.
        kind: started, completed, retry, failed, released, discarded, cancelled, recovered,
            batch, cooldown, stale, reverted, chosen, finalized, sync, cleanup.
        collection: collection name, or None for project-wide events.
        key: item key, when about one item.
        message: the line itself.
    """

    id: int
    ts: float
    level: str
    kind: str
    collection: str | None
    key: str | None
    message: str


@dataclass(frozen=True)
class Row:
    """One line of a live table: an item joined with its current take (None fields when it has none)."""

    id: int
    key: str
    ordinal: int
    text: str
    params: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    stale: bool
    chosen: int
    take_number: int | None
    bytes: int | None
    duration_s: float | None
    seed: int | None
    qa_flags: str | None
    review: str | None = None  # the current take's review state; None without a take
    take_params: dict[str, Any] | None = None  # the parameters the current take was made with
    take_qa: dict[str, Any] | None = None  # the current take's QA metrics (speech), or None


@dataclass(frozen=True)
class RowFilter:
    """Which items a live table shows.

    Attributes:
        text: substring of the text or the key (case-insensitive, ``%`` and ``_`` literal); empty = all.
        status: one of :data:`STATUSES`; empty = all.
        qa_only: only items whose current take has QA flags.
        qa_code: only items whose current take has this QA flag code (``asr_mismatch``, ...).
        review: only items whose current take has this review state (``accepted``, ...).
    """

    text: str = ""
    status: str = ""
    qa_only: bool = False
    qa_code: str = ""
    review: str = ""

    def active(self) -> bool:
        """True when any filter is set."""
        return bool(self.text or self.status or self.qa_only or self.qa_code or self.review)

    def joins_take(self) -> bool:
        """True when the filter reads the current take (QA flags, review state)."""
        return bool(self.qa_only or self.qa_code or self.review)


@dataclass(frozen=True)
class SourceItem:
    """An item as read from a source file, before it is stored.

    ``input_hash`` covers everything that changes the output (text and params).
    """

    key: str
    ordinal: int
    text: str
    params: Mapping[str, Any]
    input_hash: str


@dataclass(frozen=True)
class Claim:
    """Who claims items and the gates a claim passes (see :meth:`~tui_app.store.base.Store.claim`).

    Attributes:
        worker_id: the claiming worker: the lease's owner.
        lease_s: the lease's length, seconds (renewed by heartbeats).
        provider: the collection's provider (a pause of it holds the claim).
        limit: the provider's concurrency minus this worker's own requests in flight: at most
            ``limit`` minus the live leases of the other workers are claimed (None: no limit).
        shared_with: the collections sharing the provider (the leases counted against ``limit``).
        cover_first: items with ordinal > 0 wait until ordinal 0 is no longer pending or generating.
        min_priority: claim only items of at least this priority (1: requested ones only).
    """

    worker_id: str = ""
    lease_s: float = 30.0
    provider: str = ""
    limit: int | None = None
    shared_with: Sequence[str] = ()
    cover_first: bool = False
    min_priority: int = 0


#: A claim by no particular worker through no gates (tests, tools).
NO_GATES = Claim()


@dataclass(frozen=True)
class TakeRecord:
    """What a finished take stores: the file (relative path, sha256, bytes) and its metadata."""

    path: str
    sha256: str
    bytes: int
    provider: str
    elapsed_s: float
    number: int
    duration_s: float | None = None
    sample_rate: int | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    params: Mapping[str, Any] | None = None
    seed: int | None = None
    qa: Mapping[str, Any] | None = None
    qa_flags: str | None = None
    cache_key: str | None = None
    cached_from: int | None = None  # id of the take whose file was reused (generation cache)


@dataclass(frozen=True)
class ImportReport:
    """Counts of one idempotent source import."""

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    retired: int = 0

    def changed_anything(self) -> bool:
        """True when the import added, changed or retired an item."""
        return bool(self.added or self.changed or self.retired)

    def describe(self, collection: str) -> str:
        """``dataset: imported 3 new, 1 changed, 0 retired, 8 unchanged``."""
        return (
            f"{collection}: imported {self.added} new, {self.changed} changed, "
            f"{self.retired} retired, {self.unchanged} unchanged"
        )
