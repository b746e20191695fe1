"""Read-only row sources for live tables (used by the TUI; no Textual here).

A :class:`RowSource` answers "how many rows match" and "rows ``offset`` to
``offset + limit``" for one collection, with an optional text filter and
status filter, through the store's table queries, so a table shows 100,000
items by fetching only the rows on screen. It reads through its own read
connection (:meth:`Store.reader`), which never blocks the engine's writes.
"""

from __future__ import annotations

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


__all__ = ["ItemDetails", "Row", "RowSource", "take_details"]
