"""Read-only row sources for live tables (used by the TUI; no Textual here).

A :class:`RowSource` answers "how many rows match" and "rows ``offset`` to
``offset + limit``" for one collection, with an optional text filter and
status filter, through the store's table queries, so a table shows 100,000
items by fetching only the rows on screen. It reads through its own read
connection (:meth:`Store.reader`), which never blocks the engine's writes.

:class:`Throughput` and :class:`QueueView` describe the work of every worker of
the project (not only this process's) from what the store holds: completion
events, counts, pauses, leases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .store import Item, Row, RowFilter, Store, Take


class RowSource:
    """Filtered, ordered rows of one collection (source order).

    Args:
        store: a store handle used only for reading (a :meth:`Store.reader`).
        collection: collection name.

    Attributes:
        text_filter: substring of the text or key; empty = all.
        status_filter: one status; empty = all.
        qa_only: only rows whose current take has QA flags.
    """

    def __init__(self, store: Store, collection: str):
        self.store = store
        self.collection = collection
        self.text_filter = ""
        self.status_filter = ""
        self.qa_only = False

    def where(self) -> RowFilter:
        """The current filters as a :class:`RowFilter`. The text filter ``qa:CODE`` keeps the rows
        whose current take has that QA flag code, ``review:STATE`` those in that review state
        (``review:accepted``); any other text is a substring of the text or key."""
        text, code, review = self.text_filter, "", ""
        field, sep, value = text.strip().partition(":")
        if sep and field.lower() in ("qa", "review") and value.strip():
            text = ""
            code, review = (value.strip(), "") if field.lower() == "qa" else ("", value.strip().lower())
        return RowFilter(text, self.status_filter, self.qa_only, code, review)

    def count(self) -> int:
        """Rows matching the filters."""
        return self.store.count_rows(self.collection, self.where())

    def filtered(self) -> bool:
        """True when a text, status or QA filter is set."""
        return self.where().active()

    def dense(self) -> bool:
        """True when the unfiltered rows are exactly ordinals 0..count-1 (offsets are then ordinals)."""
        return self.store.is_dense(self.collection)

    def rows(self, offset: int, limit: int, *, dense: bool = False) -> list[Row]:
        """Rows ``offset`` .. ``offset + limit - 1`` in source order (see :meth:`Store.rows`)."""
        return self.store.rows(self.collection, self.where(), offset, limit, dense=dense)

    def ids(self) -> list[int]:
        """Ids of every matching row (for "mark all visible")."""
        return self.store.row_ids(self.collection, self.where())


@dataclass(frozen=True)
class ItemDetails:
    """An item with all its takes, oldest first, for a detail pane."""

    item: Item
    takes: list[Take]


def take_details(store: Store, item_id: int) -> ItemDetails | None:
    """The item ``item_id`` with its takes, or None when it is gone."""
    item = store.get_item(item_id)
    if item is None:
        return None
    return ItemDetails(item, store.takes(item_id))


class Throughput:
    """Completions per second of one collection, over every worker, counted per time bucket.

    Fed with completion times (unix seconds, in any order) as they are read, one at a time
    (the store's ``completed`` events) or several at once (a count that grew). Completions
    are kept as counts in ``buckets`` buckets of ``window_s / buckets`` seconds (each with its
    first and last time), never one entry per item: memory and the cost of :meth:`rate` stay
    the same at 1 item/s and at 50,000, and no speed is capped.

    A *stretch* is a spell of work: it starts at :meth:`begin` when the caller knows when
    (``--batch``: its start), else at its first completion after ``window_s`` without any.

    While the collection has items in flight, the rate is the completions of the last
    ``window_s`` seconds of the stretch over that time (at least 1 s). Once nothing is in
    flight it is frozen at the rate of the finished stretch, from its start to its last
    completion: it does not decay with idle time (the TUI hides it then; ``--batch`` shows
    it for a collection that is done).
    """

    def __init__(self, window_s: float = 30.0, buckets: int = 60):
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self._keep = buckets + 2  # the window's buckets, plus the one it cuts at each end
        self._buckets: dict[int, list[float]] = {}  # bucket index -> [count, first ts, last ts]
        self._begun: float | None = None  # the stretch's start, when the caller said (begin)
        self._first: float | None = None  # the stretch's first completion
        self._last: float | None = None  # the newest completion
        self._total = 0  # completions of the stretch

    def begin(self, ts: float) -> None:
        """Work (re)started at unix time ``ts``: a new stretch; earlier completions no longer count."""
        self._buckets.clear()
        self._begun, self._first, self._last, self._total = ts, None, None, 0

    def note(self, ts: float, n: int = 1) -> None:
        """``n`` items completed at unix time ``ts``."""
        if n <= 0:
            return
        if self._last is not None and ts - self._last > self.window_s and self._begun is None:
            self._buckets.clear()  # a new stretch after an idle spell: the old one no longer counts
            self._first, self._total = None, 0
        if self._begun is not None and ts < self._begun:
            ts = self._begun  # counted before begin() by a caller whose clock reads a little late
        index = math.floor(ts / self.bucket_s)
        bucket = self._buckets.get(index)
        if bucket is None:
            self._buckets[index] = [float(n), ts, ts]
        else:
            bucket[0] += n
            bucket[1], bucket[2] = min(bucket[1], ts), max(bucket[2], ts)
        self._first = ts if self._first is None else min(self._first, ts)
        self._last = ts if self._last is None else max(self._last, ts)
        self._total += n
        newest = math.floor(self._last / self.bucket_s)
        if len(self._buckets) > self._keep:
            for old in [i for i in self._buckets if i < newest - self._keep]:
                del self._buckets[old]

    def _since(self, lo: float, hi: float) -> tuple[float, float | None]:
        """Completions in ``(lo, hi]`` (a bucket the bound cuts counts in proportion) and the first time
        among them (None when none)."""
        count, first = 0.0, None
        for n, begin, end in self._buckets.values():
            if end <= lo or begin > hi:
                continue
            if begin > lo or end == begin:
                part, start = n, begin
            else:  # the window starts inside this bucket: its completions are taken as evenly spread
                part, start = n * (end - lo) / (end - begin), lo
            count += part
            first = start if first is None else min(first, start)
        return count, first

    def rate(self, now: float, *, busy: bool) -> float:
        """Items per second at unix time ``now``; ``busy``: the collection has items in flight."""
        if self._last is None:
            return 0.0
        if busy:
            lo = now - self.window_s
            if self._begun is not None:
                lo = max(lo, self._begun)
            count, first = self._since(lo, now)
            if not count or first is None:
                return 0.0
            since = lo if self._begun is not None else max(lo, first)
            return count / max(now - since, 1.0)
        # idle: the finished stretch, from its start to its last completion
        if self._begun is not None:
            return self._total / max(self._last - self._begun, 1e-6)
        if self._total < 2 or self._first is None:
            return 0.0
        return (self._total - 1) / max(self._last - self._first, 1e-6)


def pause_holding(paused: set[str] | frozenset[str], collection: str, provider: str) -> str:
    """The pause that holds ``collection`` (served by ``provider``) among the ``paused`` names
    (``Store.paused``): the collection's own, its provider's, ``*`` (everything); or "" when none."""
    return next((p for p in (collection, provider, "*") if p in paused), "")


def pause_scope(by: str, provider: str) -> str:
    """What the pause ``by`` (see :func:`pause_holding`) covers beyond the collection itself:
    ``everything``, ``provider NAME``, or "" for the collection's own pause."""
    return {"*": "everything", provider: f"provider {provider}"}.get(by, "")


@dataclass(frozen=True)
class QueueView:
    """One collection's queue as the store shows it (every worker), for a status line.

    Attributes:
        pending: items waiting for a worker.
        provider: the collection's provider name.
        provider_busy: items in flight on that provider, over every collection it serves.
        limit: the provider's concurrency.
        paused_by: the pause that holds the collection: its name, the provider's, ``*``; or "".
        cooling_s: seconds the provider still cools down (a server's Retry-After), 0 when not.
        wake_in_s: seconds until a backing-off item may be claimed again, or None.
        workers: live workers serving the collection.
        requests_only: every worker serving it takes only requested items (the TUI's
            own worker before ``g``).
    """

    pending: int
    provider: str
    provider_busy: int
    limit: int
    paused_by: str = ""
    cooling_s: float = 0.0
    wake_in_s: float | None = None
    workers: int = 1
    requests_only: bool = False

    @property
    def slots_in_use(self) -> int:
        """The provider's slots in use, 0 to ``limit``: ``provider_busy`` also counts a take still
        being written after its request ended (its slot already went to the next request), so it
        can pass the limit for a few milliseconds; the requests themselves never do."""
        return min(self.provider_busy, self.limit)

    def reason(self, *, clock_free: bool = False) -> str:
        """Why the pending items wait, or "" when none wait or they are being served.

        ``clock_free`` leaves out the seconds (stable text for snapshot tests)."""
        if not self.pending:
            return ""
        if self.paused_by:
            what = pause_scope(self.paused_by, self.provider)
            return "paused" + (f" ({what})" if what else "")
        if not self.workers:
            return "no worker running"
        if self.cooling_s > 0:
            return f"{self.provider} cooling down" + ("" if clock_free else f" {self.cooling_s:.0f} s")
        if self.slots_in_use >= self.limit:
            return "all slots busy"
        if self.requests_only:
            return "requests only"
        if self.wake_in_s is not None:
            return "backing off" + ("" if clock_free else f", next in {max(self.wake_in_s, 0.0):.0f} s")
        return ""


__all__ = [
    "ItemDetails",
    "QueueView",
    "Row",
    "RowSource",
    "Throughput",
    "pause_holding",
    "pause_scope",
    "take_details",
]
