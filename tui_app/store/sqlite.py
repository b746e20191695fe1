"""The SQLite store: the project's single source of truth in one file.

Every state change is one short ``BEGIN IMMEDIATE`` transaction that touches
only the rows it changes (the transitions themselves are :class:`~.sql.SqlStore`'s,
shared with PostgreSQL). The database runs in WAL mode so readers (the TUI's tables,
``tui-app status``) never block the writer (sqlite.org/wal.html). ``BEGIN IMMEDIATE``
takes the file's one write lock, so write transactions run one after the other: the
row locks and named locks PostgreSQL needs are no-ops here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .sql import _MIGRATIONS, _SCHEMA, SCHEMA_VERSION, Conn, SqlStore, describe_take

__all__ = ["SCHEMA_VERSION", "SqliteStore", "describe_take"]


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into complete statements (``sqlite3.complete_statement``), trigger bodies whole."""
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                yield buffer
            buffer = ""


class SqliteStore(SqlStore):
    """A connection to ``state.sqlite`` with the project's transactions (see :class:`~.base.Store`).

    One ``SqliteStore`` is used from one thread at a time (the engine's event
    loop); other processes and threads open their own (:meth:`reader` opens a
    second, read-only connection for live views). Methods that change state
    each run one ``BEGIN IMMEDIATE`` transaction.

    Args:
        path: the database file; its folder is created when missing.
        busy_timeout_s: how long a writer waits for another writer's lock, seconds.
        read_only: open a connection that refuses writes (``PRAGMA query_only``).

    Raises:
        sqlite3.DatabaseError: the file is not a SQLite database or is newer than this code.
    """

    _LIKE = "LIKE"  # case-insensitive for ASCII
    _LOCK = ""
    _SKIP = ""
    _SKIP_TAKES = ""
    _SWEEP_NEXT = "json_extract(sweep, '$[0]')"
    _SWEEP_LEN = "json_array_length(sweep)"
    _SWEEP_REST = "json_remove(sweep, '$[0]')"
    _QA_MERGE = "json_patch(COALESCE(qa, '{}'), ?)"
    _PHOTO = "json_extract(params, '$.photo')"

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0, read_only: bool = False):
        super().__init__()
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
        )
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if read_only:
            self._conn.execute("PRAGMA query_only = 1")
            return
        self._use_wal()
        # NORMAL in WAL mode: a commit is durable against a process crash; a power
        # loss may drop the last commits but never corrupts the file (sqlite.org/wal.html).
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    # ------------------------------------------------------------------ the backend hooks

    def _read(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, args)

    @contextmanager
    def _begin(self) -> Iterator[Conn]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def _insert(self, c: Conn, sql: str, args: Sequence[Any]) -> int:
        return int(c.execute(sql, args).lastrowid or 0)

    def _serialize(self, c: Conn, name: str) -> None:
        pass  # BEGIN IMMEDIATE already holds the file's one write lock

    def _lock_items(self, c: Conn, where: str, args: Sequence[Any]) -> None:
        pass  # BEGIN IMMEDIATE already holds the file's one write lock

    def _note(self, collection: str | None, key: str | None, item_id: int | None, kind: str) -> None:
        pass  # watchers see every commit through PRAGMA data_version

    def _after_copy(self, c: Conn) -> None:
        pass  # a new row id is always above the largest one

    # ------------------------------------------------------------------ connection

    def _use_wal(self) -> None:
        """Switch the file to WAL mode (persistent), waiting out another process that creates it.

        SQLite answers ``SQLITE_BUSY`` at once, without calling the busy handler, when the
        journal mode cannot change because another connection holds the file, as happens when
        two processes open a new project together; so this retries until ``busy_timeout_s``.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                if str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                    return
                self._conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"{self.path}: schema version {version} is newer than this tui_app ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        with self._lock:
            # Read the version again under the write lock: another process may have migrated meanwhile.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    self._conn.execute("COMMIT")
                    return
                fresh = not self._conn.execute("SELECT 1 FROM sqlite_master WHERE name='items'").fetchone()
                since = range(max(version, 2), SCHEMA_VERSION)
                steps = "" if fresh else "".join(_MIGRATIONS[v] for v in since)
                # One statement at a time (executescript() would commit the open transaction
                # first): the migrations, the schema and the version land together.
                for statement in _statements(f"{steps}{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};"):
                    self._conn.execute(statement)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def reader(self) -> SqliteStore:
        """A second, read-only connection to the same file, for live views (never blocks the writer)."""
        return SqliteStore(self.path, busy_timeout_s=self._busy_timeout_s, read_only=True)

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when this is the last one)."""
        self._conn.close()

    def schema_version(self) -> int:
        """The ``PRAGMA user_version`` of the open database."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``)."""
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def data_version(self) -> int:
        """A number that changes whenever another connection commits (``PRAGMA data_version``)."""
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def listen(self) -> None:
        """None: SQLite is watched by polling :meth:`data_version` (one read of the file's header)."""
        return None

    def lost_connection(self, exc: BaseException) -> bool:
        """False: a SQLite file has no server whose connection could be lost."""
        return False
