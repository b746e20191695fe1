"""Read-only row queries for live tables (used by the TUI; no Textual here).

A :class:`RowSource` answers "how many rows match" and "rows ``offset`` to
``offset + limit``" for one collection, with an optional text filter and
status filter, straight from SQLite, so a table shows 100,000 items by
fetching only the rows on screen. Reads never block the engine's writes
(WAL mode).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .store import Store


@dataclass(frozen=True)
class Row:
    """One table row: an item joined with its current take (None fields when there is none)."""

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


_SELECT = (
    "SELECT i.id, i.key, i.ordinal, i.text, i.params, i.status, i.attempts, i.last_error, i.stale, i.chosen,"
    " t.number, t.bytes, t.duration_s, t.seed, t.qa_flags"
    " FROM items i LEFT JOIN takes t ON t.id = i.current_take"
)


class RowSource:
    """Filtered, ordered rows of one collection (source order).

    Args:
        store: an open store (its connection is only read here).
        collection: collection name.
    """

    def __init__(self, store: Store, collection: str):
        self.store = store
        self.collection = collection
        self.text_filter = ""
        self.status_filter = ""
        self.qa_only = False

    def _where(self) -> tuple[str, list[Any]]:
        sql = " WHERE i.collection = ? AND i.retired = 0"
        args: list[Any] = [self.collection]
        if self.status_filter:
            sql += " AND i.status = ?"
            args.append(self.status_filter)
        if self.text_filter:
            sql += " AND (i.text LIKE ? ESCAPE '\\' OR i.key LIKE ? ESCAPE '\\')"
            like = "%" + self.text_filter.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [like, like]
        if self.qa_only:
            sql += " AND t.qa_flags IS NOT NULL"
        return sql, args

    def count(self) -> int:
        """Rows matching the filters."""
        where, args = self._where()
        join = " LEFT JOIN takes t ON t.id = i.current_take" if self.qa_only else ""
        return int(self.store.conn.execute(f"SELECT COUNT(*) FROM items i{join}{where}", args).fetchone()[0])

    def filtered(self) -> bool:
        """True when a text, status or QA filter is set."""
        return bool(self.text_filter or self.status_filter or self.qa_only)

    def dense(self) -> bool:
        """True when the unfiltered rows are exactly ordinals 0..count-1 (offsets are then ordinals)."""
        row = self.store.conn.execute(
            "SELECT COUNT(*), COALESCE(MAX(ordinal), -1), COUNT(*) FILTER (WHERE retired = 1)"
            " FROM items WHERE collection = ?",
            (self.collection,),
        ).fetchone()
        return row[2] == 0 and row[1] == row[0] - 1

    def rows(self, offset: int, limit: int, *, dense: bool = False) -> list[Row]:
        """Rows ``offset`` .. ``offset + limit - 1`` in source order.

        With ``dense`` (see :meth:`dense`) and no filter, the page is found by ordinal
        through the index instead of skipping ``offset`` rows.
        """
        where, args = self._where()
        if dense and not self.filtered():
            cur = self.store.conn.execute(
                f"{_SELECT}{where} AND i.ordinal >= ? ORDER BY i.ordinal LIMIT ?", [*args, offset, limit]
            )
        else:
            cur = self.store.conn.execute(
                f"{_SELECT}{where} ORDER BY i.ordinal LIMIT ? OFFSET ?", [*args, limit, offset]
            )
        return [
            Row(
                r[0],
                r[1],
                r[2],
                r[3],
                json.loads(r[4]),
                r[5],
                r[6],
                r[7],
                bool(r[8]),
                r[9],
                r[10],
                r[11],
                r[12],
                r[13],
                r[14],
            )
            for r in cur.fetchall()
        ]

    def ids(self) -> list[int]:
        """Ids of every matching row (for "mark all visible")."""
        where, args = self._where()
        join = " LEFT JOIN takes t ON t.id = i.current_take" if self.qa_only else ""
        return [
            r[0]
            for r in self.store.conn.execute(
                f"SELECT i.id FROM items i{join}{where} ORDER BY i.ordinal", args
            )
        ]


def take_details(store: Store, item_id: int) -> dict[str, Any]:
    """An item with all its takes (params and QA decoded), for a detail pane."""
    item = store.get_item(item_id)
    takes = store.takes(item_id)
    for take in takes:
        take["qa"] = json.loads(take["qa"]) if take.get("qa") else None
    return {"item": item, "takes": takes}


def recent_events(store: Store, limit: int = 500) -> list[dict[str, Any]]:
    """The newest ``limit`` events, oldest first."""
    rows = store.conn.execute(
        "SELECT id, ts, level, kind, collection, item_key, message FROM events ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    keys = ("id", "ts", "level", "kind", "collection", "key", "message")
    return [dict(zip(keys, r)) for r in reversed(rows)]


__all__ = ["Row", "RowSource", "recent_events", "take_details"]
