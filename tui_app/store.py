"""The SQLite state store: the project's single source of truth.

This module is the only code that writes SQL. Every state change is one short
``BEGIN IMMEDIATE`` transaction that touches only the rows it changes; nothing
loads the whole state and saves it back, and counts are ``GROUP BY`` queries,
never stored counters. The database runs in WAL mode so readers (the TUI,
``tui-app status``) never block the writer.

Item life cycle (see DESIGN.md)::

    pending -> generating -> completed | failed       (+ cancelled)

A worker claims an item by bumping its ``generation``; the final write is
guarded by ``WHERE id=? AND generation=? AND status='generating'`` so a stale
completion can never overwrite newer intent (a regenerate, a cancel, a reset).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
STATUSES = ("pending", "generating", "completed", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id           INTEGER PRIMARY KEY,
    collection   TEXT    NOT NULL,
    key          TEXT    NOT NULL,            -- entry id, 'page_007', 'astronaut.s1-balanced'
    ordinal      INTEGER NOT NULL,            -- order in the source
    text         TEXT    NOT NULL DEFAULT '', -- entry text, page text, photo file name
    params       TEXT    NOT NULL DEFAULT '{}',  -- JSON: emotion, normalized, prompt, slot, temperature, seed, ...
    input_hash   TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending','generating','completed','failed','cancelled')),
    stale        INTEGER NOT NULL DEFAULT 0,  -- input changed after the current take
    retired      INTEGER NOT NULL DEFAULT 0,  -- no longer in the source
    priority     INTEGER NOT NULL DEFAULT 0,  -- higher first (regenerations)
    generation   INTEGER NOT NULL DEFAULT 0,  -- bumped by every claim and every new request
    attempts     INTEGER NOT NULL DEFAULT 0,  -- tries of the current request
    last_error   TEXT,
    overrides    TEXT,                        -- JSON overrides for the next take (regenerate dialog)
    not_before   REAL    NOT NULL DEFAULT 0,  -- backoff: do not claim before this unix time
    batch_id     INTEGER,
    current_take INTEGER,
    chosen       INTEGER NOT NULL DEFAULT 0,  -- variants: 1 chosen, -1 set aside, 0 undecided
    updated_at   REAL    NOT NULL,
    UNIQUE (collection, key)
);
CREATE INDEX IF NOT EXISTS items_queue ON items (collection, status, priority DESC, ordinal);
CREATE INDEX IF NOT EXISTS items_order ON items (collection, ordinal);          -- table pages
CREATE INDEX IF NOT EXISTS items_counts ON items (collection, retired, status); -- counts by status
CREATE TABLE IF NOT EXISTS takes (
    id          INTEGER PRIMARY KEY,
    item_id     INTEGER NOT NULL REFERENCES items(id),
    number      INTEGER NOT NULL,
    path        TEXT    NOT NULL,             -- relative to the project root
    sha256      TEXT    NOT NULL,
    bytes       INTEGER NOT NULL,
    duration_s  REAL,
    sample_rate INTEGER,
    width       INTEGER,
    height      INTEGER,
    provider    TEXT    NOT NULL,
    model       TEXT,
    params      TEXT    NOT NULL DEFAULT '{}',
    seed        INTEGER,
    elapsed_s   REAL    NOT NULL,
    created_at  REAL    NOT NULL,
    qa          TEXT,                         -- JSON QA metrics (speech takes)
    qa_flags    TEXT,                         -- '; '-joined flags, NULL when none
    cache_key   TEXT,                         -- sha256 of the request (generation cache)
    cache_uses  INTEGER NOT NULL DEFAULT 0,   -- times this take's file was reused
    cache_last_used REAL,
    UNIQUE (item_id, number)
);
CREATE INDEX IF NOT EXISTS takes_cache ON takes (cache_key);
CREATE TABLE IF NOT EXISTS batches (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,                 -- run, regenerate, retry
    state      TEXT NOT NULL DEFAULT 'queued', -- open (debounce window), queued
    note       TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY,
    ts         REAL NOT NULL,
    level      TEXT NOT NULL,                 -- info, warning, error
    kind       TEXT NOT NULL,                 -- started, completed, retry, failed, recovered, ...
    collection TEXT,
    item_key   TEXT,
    message    TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Item:
    """One row of ``items`` (a claim returns the row as it is after the claim)."""

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
    next_take: int = 0  # set by claim_next: the number the next take will get


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


_ITEM_COLS = (
    "id, collection, key, ordinal, text, params, status, stale, priority, generation, "
    "attempts, last_error, overrides, batch_id, current_take"
)


def _item(row: Sequence[Any]) -> Item:
    return Item(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        json.loads(row[5]),
        row[6],
        bool(row[7]),
        row[8],
        row[9],
        row[10],
        row[11],
        json.loads(row[12]) if row[12] else None,
        row[13],
        row[14],
        row[15] if len(row) > 15 else 0,
    )


class Store:
    """A connection to ``state.sqlite`` with the project's transactions.

    One ``Store`` is used from one thread at a time (the engine's event loop);
    other processes and threads open their own. Methods that change state each
    run one ``BEGIN IMMEDIATE`` transaction.

    Args:
        path: the database file; its folder is created when missing.
        busy_timeout_s: how long a writer waits for another writer's lock, seconds.

    Raises:
        sqlite3.DatabaseError: the file is not a SQLite database or is newer than this code.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        self._lock = threading.RLock()
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit is durable against a process crash; a power
        # loss may drop the last commits but never corrupts the file (sqlite.org/wal.html).
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path}: schema version {version} is newer than this tui_app ({SCHEMA_VERSION})"
            )
        if version < SCHEMA_VERSION:
            # executescript() runs its own transaction: the schema and version land together.
            with self._lock:
                self.conn.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
                )

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when this is the last one)."""
        self.conn.close()

    def schema_version(self) -> int:
        """The ``PRAGMA user_version`` of the open database."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ events

    @staticmethod
    def _event(
        c: sqlite3.Connection,
        level: str,
        kind: str,
        collection: str | None,
        key: str | None,
        message: str,
        ts: float | None = None,
    ) -> None:
        c.execute(
            "INSERT INTO events (ts, level, kind, collection, item_key, message) VALUES (?,?,?,?,?,?)",
            (ts or time.time(), level, kind, collection, key, message),
        )

    def log(
        self, level: str, kind: str, message: str, *, collection: str | None = None, key: str | None = None
    ) -> None:
        """Append one event to the persistent log."""
        with self.transaction() as c:
            self._event(c, level, kind, collection, key, message)

    def events(self, *, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Events with ``id > after_id``, oldest first, at most ``limit``."""
        rows = self.conn.execute(
            "SELECT id, ts, level, kind, collection, item_key, message FROM events "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        keys = ("id", "ts", "level", "kind", "collection", "key", "message")
        return [dict(zip(keys, r)) for r in rows]

    # ------------------------------------------------------------------ import

    def import_items(self, collection: str, items: Iterable[SourceItem]) -> ImportReport:
        """Idempotently bring ``collection`` in line with its source.

        New keys are inserted ``pending``. A key whose ``input_hash`` changed gets
        the new text and params, is flagged ``stale`` and queued again (its takes
        are kept). Unchanged keys are not touched. Keys no longer in the source
        are flagged ``retired`` (kept with their takes, left out of runs and counts).
        """
        now = time.time()
        added = changed = unchanged = 0
        with self.transaction() as c:
            existing = {
                k: (i, h, r)
                for i, k, h, r in c.execute(
                    "SELECT id, key, input_hash, retired FROM items WHERE collection = ?", (collection,)
                )
            }
            seen: set[str] = set()
            for it in items:
                seen.add(it.key)
                old = existing.get(it.key)
                params = json.dumps(dict(it.params), sort_keys=True)
                if old is None:
                    c.execute(
                        "INSERT INTO items (collection, key, ordinal, text, params, input_hash, updated_at)"
                        " VALUES (?,?,?,?,?,?,?)",
                        (collection, it.key, it.ordinal, it.text, params, it.input_hash, now),
                    )
                    added += 1
                elif old[1] != it.input_hash:
                    c.execute(
                        "UPDATE items SET text=?, params=?, input_hash=?, ordinal=?, retired=0,"
                        " stale = (current_take IS NOT NULL),"
                        " status = CASE WHEN status='generating' THEN status ELSE 'pending' END,"
                        " generation = generation + 1, attempts=0, not_before=0, last_error=NULL,"
                        " updated_at=? WHERE id=?",
                        (it.text, params, it.input_hash, it.ordinal, now, old[0]),
                    )
                    self._event(
                        c, "info", "stale", collection, it.key, f"{it.key}: input changed, queued again", now
                    )
                    changed += 1
                else:
                    if (
                        old[2]
                        or c.execute("SELECT ordinal FROM items WHERE id=?", (old[0],)).fetchone()[0]
                        != it.ordinal
                    ):
                        c.execute(
                            "UPDATE items SET retired=0, ordinal=?, updated_at=? WHERE id=?",
                            (it.ordinal, now, old[0]),
                        )
                    unchanged += 1
            gone = [v[0] for k, v in existing.items() if k not in seen and not v[2]]
            c.executemany("UPDATE items SET retired=1, updated_at=? WHERE id=?", [(now, i) for i in gone])
        return ImportReport(added, changed, unchanged, len(gone))

    # ------------------------------------------------------------------ queries

    def counts(self, collections: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """``{collection: {status: count}}`` for non-retired items, every status present (0 when none)."""
        sql = "SELECT collection, status, COUNT(*) FROM items WHERE retired = 0"
        args: list[Any] = []
        if collections is not None:
            sql += f" AND collection IN ({','.join('?' * len(collections))})"
            args = list(collections)
        out: dict[str, dict[str, int]] = {c: dict.fromkeys(STATUSES, 0) for c in (collections or [])}
        for coll, status, n in self.conn.execute(sql + " GROUP BY collection, status", args):
            out.setdefault(coll, dict.fromkeys(STATUSES, 0))[status] = n
        return out

    def get_item(self, item_id: int) -> Item | None:
        """One item by id, or None."""
        row = self.conn.execute(f"SELECT {_ITEM_COLS} FROM items WHERE id=?", (item_id,)).fetchone()
        return _item(row) if row else None

    def find_item(self, collection: str, key: str) -> Item | None:
        """One item by collection and key, or None."""
        row = self.conn.execute(
            f"SELECT {_ITEM_COLS} FROM items WHERE collection=? AND key=?", (collection, key)
        ).fetchone()
        return _item(row) if row else None

    def items(self, collection: str, *, status: str | None = None) -> list[Item]:
        """Non-retired items of ``collection`` in source order, optionally of one status."""
        sql = f"SELECT {_ITEM_COLS} FROM items WHERE collection=? AND retired=0"
        args: list[Any] = [collection]
        if status:
            sql += " AND status=?"
            args.append(status)
        return [_item(r) for r in self.conn.execute(sql + " ORDER BY ordinal", args)]

    def takes(self, item_id: int) -> list[dict[str, Any]]:
        """All takes of one item, oldest first, as dicts (params decoded)."""
        cur = self.conn.execute("SELECT * FROM takes WHERE item_id=? ORDER BY number", (item_id,))
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for r in rows:
            r["params"] = json.loads(r["params"])
        return rows

    def current_takes(self, collection: str) -> list[tuple[str, dict[str, Any]]]:
        """``(key, take)`` for every completed, non-retired item of ``collection`` with a current take."""
        cur = self.conn.execute(
            "SELECT i.key, t.* FROM items i JOIN takes t ON t.id = i.current_take "
            "WHERE i.collection=? AND i.retired=0 AND i.status='completed' ORDER BY i.ordinal",
            (collection,),
        )
        names = [d[0] for d in cur.description][1:]
        return [(r[0], dict(zip(names, r[1:]))) for r in cur.fetchall()]

    def next_take_number(self, item_id: int) -> int:
        """1 + the highest take number of the item (1 for the first take)."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(number), 0) FROM takes WHERE item_id=?", (item_id,)
        ).fetchone()
        return int(row[0]) + 1

    def next_wakeup(self, collections: Sequence[str]) -> float | None:
        """Earliest ``not_before`` (unix time) of pending items still backing off, or None."""
        row = self.conn.execute(
            f"SELECT MIN(not_before) FROM items WHERE status='pending' AND retired=0 AND not_before > ? "
            f"AND collection IN ({','.join('?' * len(collections))})",
            (time.time(), *collections),
        ).fetchone()
        return row[0]

    # ------------------------------------------------------------------ work queue

    def create_batch(self, kind: str, note: str = "", *, open_: bool = False) -> int:
        """Insert a batch row (``open`` while a debounce window is collecting) and return its id."""
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO batches (kind, state, note, created_at) VALUES (?,?,?,?)",
                (kind, "open" if open_ else "queued", note, time.time()),
            )
            return int(cur.lastrowid)

    def close_batch(self, batch_id: int, note: str) -> int:
        """Mark a debounce batch ``queued`` (its items become claimable); returns its item count."""
        with self.transaction() as c:
            c.execute("UPDATE batches SET state='queued', note=? WHERE id=?", (note, batch_id))
            n = c.execute("SELECT COUNT(*) FROM items WHERE batch_id=?", (batch_id,)).fetchone()[0]
            self._event(c, "info", "batch", None, None, note)
        return int(n)

    def request(
        self,
        item_ids: Sequence[int],
        *,
        batch_id: int | None,
        priority: int,
        overrides: Mapping[str, Any] | None = None,
    ) -> list[Item]:
        """Queue items for a new take, durably: status ``pending``, attempts reset.

        The item's generation is bumped, so a completion of an older claim that is
        still in flight can no longer be written (it is discarded). Returns the
        queued items.
        """
        now = time.time()
        ov = json.dumps(dict(overrides)) if overrides is not None else None
        out = []
        with self.transaction() as c:
            for item_id in item_ids:
                row = c.execute(
                    f"UPDATE items SET status='pending', priority=?, batch_id=?, attempts=0, not_before=0,"
                    f" last_error=NULL, overrides=COALESCE(?, overrides), generation=generation+1,"
                    f" updated_at=? WHERE id=? AND retired=0 RETURNING {_ITEM_COLS}",
                    (priority, batch_id, ov, now, item_id),
                ).fetchone()
                if row:
                    out.append(_item(row))
        return out

    def reset_failed(self, collections: Sequence[str], batch_id: int | None, *, priority: int = 0) -> int:
        """Queue every failed item of ``collections`` again (attempts reset); returns how many."""
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                f"UPDATE items SET status='pending', attempts=0, not_before=0, batch_id=?, priority=?,"
                f" generation=generation+1, updated_at=?"
                f" WHERE status='failed' AND retired=0 AND collection IN ({','.join('?' * len(collections))})",
                (batch_id, priority, now, *collections),
            )
            return cur.rowcount

    def claim_next(self, collection: str, *, cover_first: bool = False, min_priority: int = 0) -> Item | None:
        """Atomically take the next claimable item of ``collection`` and mark it ``generating``.

        Order: highest priority first, then source order. Items still backing off
        (``not_before`` in the future), in an open debounce batch, or retired are
        skipped. With ``cover_first``, items with ordinal > 0 wait until ordinal 0
        (the cover) is no longer pending or generating. With ``min_priority`` > 0 only
        explicitly requested items (regenerations, retries) are claimed.

        Returns the claimed item (its ``generation`` and ``attempts`` already
        incremented) or None when nothing is claimable now.
        """
        now = time.time()
        cover_gate = (
            " AND (ordinal = 0 OR NOT EXISTS (SELECT 1 FROM items c WHERE c.collection = ?"
            " AND c.ordinal = 0 AND c.retired = 0 AND c.status IN ('pending','generating')))"
            if cover_first
            else ""
        )
        args: list[Any] = [now, collection, now, min_priority] + ([collection] if cover_first else [])
        with self.transaction() as c:
            row = c.execute(
                f"UPDATE items SET status='generating', generation=generation+1, attempts=attempts+1,"
                f" updated_at=? WHERE id = ("
                f"  SELECT id FROM items WHERE status='pending' AND retired=0 AND collection=?"
                f"  AND not_before <= ? AND priority >= ?"
                f"  AND (batch_id IS NULL OR batch_id NOT IN (SELECT id FROM batches WHERE state='open'))"
                f"  {cover_gate} ORDER BY priority DESC, ordinal LIMIT 1"
                f") RETURNING {_ITEM_COLS},"
                f" (SELECT COALESCE(MAX(number), 0) + 1 FROM takes WHERE item_id = items.id)",
                args,
            ).fetchone()
            if row is None:
                return None
            item = _item(row)
            self._event(c, "info", "started", collection, item.key, f"Generating {item.key}", now)
        return item

    def complete(self, item: Item, take: TakeRecord) -> int | None:
        """Record a finished take and make it current: the guarded final write.

        Only succeeds while the item is still ``generating`` under the same
        ``generation`` as ``item`` (the claim). Returns the new take id, or None when
        the guard failed (the item was regenerated, cancelled or reset meanwhile;
        the caller then deletes the file it wrote).
        """
        now = time.time()
        with self.transaction() as c:
            # the guard and the insert in one statement: no row is inserted unless the claim still holds
            cur = c.execute(
                "INSERT INTO takes (item_id, number, path, sha256, bytes, duration_s, sample_rate, width, height,"
                " provider, model, params, seed, elapsed_s, created_at, qa, qa_flags, cache_key)"
                " SELECT ?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,? FROM items"
                " WHERE id=? AND generation=? AND status='generating'",
                (
                    item.id,
                    take.number,
                    take.path,
                    take.sha256,
                    take.bytes,
                    take.duration_s,
                    take.sample_rate,
                    take.width,
                    take.height,
                    take.provider,
                    take.model,
                    json.dumps(dict(take.params or {})),
                    take.seed,
                    take.elapsed_s,
                    now,
                    json.dumps(dict(take.qa)) if take.qa else None,
                    take.qa_flags,
                    take.cache_key,
                    item.id,
                    item.generation,
                ),
            )
            if not cur.rowcount:
                return None
            take_id = int(cur.lastrowid)
            if take.cached_from is not None:
                c.execute(
                    "UPDATE takes SET cache_uses = cache_uses + 1, cache_last_used=? WHERE id=?",
                    (now, take.cached_from),
                )
            c.execute(
                "UPDATE items SET status='completed', current_take=?, stale=0, last_error=NULL,"
                " overrides=NULL, priority=0, updated_at=? WHERE id=? AND generation=? AND status='generating'",
                (take_id, now, item.id, item.generation),
            )
            how = ", from the generation cache" if take.cached_from is not None else ""
            self._event(
                c,
                "info",
                "completed",
                item.collection,
                item.key,
                f"{item.key} completed ({_describe(take)}, {take.elapsed_s:.2f} s{how})",
                now,
            )
        return take_id

    def fail(self, item: Item, error: str, *, retry_at: float | None = None, max_attempts: int = 1) -> bool:
        """Record a failed try (guarded like :meth:`complete`).

        With ``retry_at`` (unix time) the item goes back to ``pending`` and is not
        claimed before then; otherwise it becomes ``failed``. Returns False when
        the guard failed.
        """
        now = time.time()
        with self.transaction() as c:
            if retry_at is None:
                cur = c.execute(
                    "UPDATE items SET status='failed', last_error=?, updated_at=? "
                    "WHERE id=? AND generation=? AND status='generating'",
                    (error, now, item.id, item.generation),
                )
                msg = f"{item.key} failed: {error}"
                if item.attempts > 1:
                    msg += f" (after {item.attempts} attempts)"
                level, kind = "error", "failed"
            else:
                cur = c.execute(
                    "UPDATE items SET status='pending', last_error=?, not_before=?, updated_at=? "
                    "WHERE id=? AND generation=? AND status='generating'",
                    (error, retry_at, now, item.id, item.generation),
                )
                msg = (
                    f"{item.key} failed: {error}, retry {item.attempts + 1}/{max_attempts} "
                    f"in {max(0.0, retry_at - now):.1f} s"
                )
                level, kind = "warning", "retry"
            if cur.rowcount:
                self._event(c, level, kind, item.collection, item.key, msg, now)
            return bool(cur.rowcount)

    def release(self, item: Item, reason: str) -> bool:
        """Put a claimed item back to ``pending`` (cancelled run); attempts are not counted."""
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE items SET status='pending', attempts=MAX(attempts-1,0), updated_at=? "
                "WHERE id=? AND generation=? AND status='generating'",
                (time.time(), item.id, item.generation),
            )
            if cur.rowcount:
                self._event(c, "warning", "released", item.collection, item.key, f"{item.key}: {reason}")
            return bool(cur.rowcount)

    def cancel(self, item_ids: Sequence[int]) -> int:
        """Mark queued or in-flight items ``cancelled``; an in-flight result is then discarded."""
        with self.transaction() as c:
            n = 0
            for item_id in item_ids:
                row = c.execute(
                    "UPDATE items SET status='cancelled', generation=generation+1, updated_at=? "
                    "WHERE id=? AND status IN ('pending','generating') RETURNING collection, key",
                    (time.time(), item_id),
                ).fetchone()
                if row:
                    n += 1
                    self._event(c, "info", "cancelled", row[0], row[1], f"{row[1]} cancelled")
            return n

    def recover(self) -> list[tuple[str, str]]:
        """Crash recovery: items left ``generating`` go back to ``pending``; open batches are queued.

        Each recovered item gets a log event. Returns ``[(collection, key), ...]``.
        """
        with self.transaction() as c:
            rows = c.execute(
                "UPDATE items SET status='pending', generation=generation+1, updated_at=? "
                "WHERE status='generating' RETURNING collection, key",
                (time.time(),),
            ).fetchall()
            for coll, key in rows:
                self._event(
                    c,
                    "warning",
                    "recovered",
                    coll,
                    key,
                    f"{key} was left generating by an interrupted run -> pending",
                )
            c.execute("UPDATE batches SET state='queued' WHERE state='open'")
        return [(r[0], r[1]) for r in rows]

    # ------------------------------------------------------------------ takes: cache, revert, cleanup

    def cache_lookup(self, cache_key: str) -> dict[str, Any] | None:
        """The newest take made by an identical request (same :func:`cache_key`), or None."""
        cur = self.conn.execute(
            "SELECT * FROM takes WHERE cache_key=? ORDER BY id DESC LIMIT 1", (cache_key,)
        )
        row = cur.fetchone()
        if row is None:
            return None
        take = dict(zip([d[0] for d in cur.description], row))
        take["params"] = json.loads(take["params"])
        return take

    def revert(self, item_id: int, number: int) -> bool:
        """Make take ``number`` the item's current take again (an earlier take).

        In-flight work on the item is superseded (its generation is bumped).
        Returns False when the item has no such take.
        """
        with self.transaction() as c:
            row = c.execute(
                "SELECT t.id, i.collection, i.key FROM takes t JOIN items i ON i.id=t.item_id "
                "WHERE t.item_id=? AND t.number=?",
                (item_id, number),
            ).fetchone()
            if row is None:
                return False
            c.execute(
                "UPDATE items SET current_take=?, status='completed', generation=generation+1, stale=0,"
                " last_error=NULL, updated_at=? WHERE id=?",
                (row[0], time.time(), item_id),
            )
            self._event(c, "info", "reverted", row[1], row[2], f"{row[2]} reverted to take {number}")
        return True

    def all_takes(self, collection: str | None = None) -> list[dict[str, Any]]:
        """Every take (id, item_id, number, path, sha256, bytes, is_current, collection, key, status)."""
        sql = (
            "SELECT t.id, t.item_id, t.number, t.path, t.sha256, t.bytes, (i.current_take = t.id),"
            " i.collection, i.key, i.status FROM takes t JOIN items i ON i.id = t.item_id"
        )
        args: tuple = ()
        if collection:
            sql += " WHERE i.collection=?"
            args = (collection,)
        names = (
            "id",
            "item_id",
            "number",
            "path",
            "sha256",
            "bytes",
            "is_current",
            "collection",
            "key",
            "status",
        )
        return [dict(zip(names, r)) for r in self.conn.execute(sql + " ORDER BY t.item_id, t.number", args)]

    def completed_without_take(self) -> list[tuple[int, str, str]]:
        """``(id, collection, key)`` of completed items whose current take is missing."""
        return self.conn.execute(
            "SELECT i.id, i.collection, i.key FROM items i LEFT JOIN takes t ON t.id = i.current_take "
            "WHERE i.status='completed' AND t.id IS NULL"
        ).fetchall()

    def requeue(self, item_id: int, reason: str) -> bool:
        """Send a completed item back to ``pending`` without a current take (its file is gone or wrong)."""
        with self.transaction() as c:
            row = c.execute(
                "UPDATE items SET status='pending', current_take=NULL, generation=generation+1,"
                " attempts=0, not_before=0, updated_at=? WHERE id=? RETURNING collection, key",
                (time.time(), item_id),
            ).fetchone()
            if row:
                self._event(c, "warning", "sync", row[0], row[1], f"{row[1]}: {reason}")
            return row is not None

    def forget_take(self, take_id: int, reason: str) -> None:
        """Delete a superseded take's row (its file is gone or being deleted); never the current take."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT i.collection, i.key, t.number FROM takes t JOIN items i ON i.id=t.item_id "
                "WHERE t.id=? AND (i.current_take IS NULL OR i.current_take <> t.id)",
                (take_id,),
            ).fetchone()
            if row is None:
                return
            c.execute("DELETE FROM takes WHERE id=?", (take_id,))
            self._event(c, "info", "cleanup", row[0], row[1], f"{row[1]}: take {row[2]} {reason}")

    def choose(self, item_id: int) -> list[int]:
        """Choose one variant: it gets ``chosen = 1``, the other slots of the same photo ``-1`` (set aside).

        Variants of one photo share ``params.photo``. Returns the ids set aside.
        """
        with self.transaction() as c:
            row = c.execute(
                "SELECT collection, key, json_extract(params, '$.photo') FROM items WHERE id=?", (item_id,)
            ).fetchone()
            if row is None:
                return []
            coll, key, photo = row
            others = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM items WHERE collection=? AND json_extract(params, '$.photo')=? AND id<>?",
                    (coll, photo, item_id),
                )
            ]
            now = time.time()
            c.execute("UPDATE items SET chosen=1, updated_at=? WHERE id=?", (now, item_id))
            c.executemany("UPDATE items SET chosen=-1, updated_at=? WHERE id=?", [(now, i) for i in others])
            self._event(
                c, "info", "chosen", coll, key, f"{key} chosen; {len(others)} other variants set aside"
            )
            return others

    def failed_items(self, collections: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """``(collection, key, last_error)`` of every failed, non-retired item."""
        return self.conn.execute(
            f"SELECT collection, key, last_error FROM items WHERE status='failed' AND retired=0 "
            f"AND collection IN ({','.join('?' * len(collections))}) ORDER BY collection, ordinal",
            list(collections),
        ).fetchall()


def _describe(take: TakeRecord) -> str:
    size = f"{take.bytes / 1024:.0f} KB"
    if take.duration_s is not None:
        return f"{take.duration_s:.1f} s audio, {size}"
    if take.width:
        return f"{take.width}x{take.height} px, {size}"
    return size
