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

from collections import deque
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
        """The current filters as a :class:`RowFilter`."""
        return RowFilter(self.text_filter, self.status_filter, self.qa_only)

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
    """Completions per second of one collection, over every worker, from the store's ``completed`` events.

    Fed with the events' times (unix seconds) as they are read from the store, in id order.
    While the collection has items in flight, the rate is the completions of the last
    ``window_s`` seconds over the time since the first of them (at least 1 s); once
    nothing is in flight, the rate of the finished stretch, so it does not decay with
    idle time.
    """

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self._times: deque[float] = deque()

    def note(self, ts: float) -> None:
        """An item completed at unix time ``ts``."""
        times = self._times
        times.append(ts)
        while times and times[0] < ts - self.window_s:
            times.popleft()

    def rate(self, now: float, *, busy: bool) -> float:
        """Items per second at unix time ``now``; ``busy``: the collection has items in flight."""
        times = self._times
        if busy:
            recent = [t for t in times if t >= now - self.window_s]
            return len(recent) / max(now - recent[0], 1.0) if recent else 0.0
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


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

    def reason(self, *, clock_free: bool = False) -> str:
        """Why the pending items wait, or "" when none wait or they are being served.

        ``clock_free`` leaves out the seconds (stable text for snapshot tests)."""
        if not self.pending:
            return ""
        if self.paused_by:
            what = {"*": "everything", self.provider: f"provider {self.provider}"}.get(self.paused_by, "")
            return "paused" + (f" ({what})" if what else "")
        if not self.workers:
            return "no worker running"
        if self.cooling_s > 0:
            return f"{self.provider} cooling down" + ("" if clock_free else f" {self.cooling_s:.0f} s")
        if self.provider_busy >= self.limit:
            return "all slots busy"
        if self.requests_only:
            return "requests only"
        if self.wake_in_s is not None:
            return "backing off" + ("" if clock_free else f", next in {max(self.wake_in_s, 0.0):.0f} s")
        return ""


__all__ = ["ItemDetails", "QueueView", "Row", "RowSource", "Throughput", "take_details"]
