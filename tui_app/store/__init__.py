"""The project's state store: the interface, its typed rows, and the backends behind it.

Open one with :func:`open_store`; everything else in tui_app talks to the
:class:`Store` protocol and receives the dataclasses of :mod:`.rows`. Backends:
SQLite (:mod:`.sqlite`, the default: one file) and PostgreSQL (:mod:`.postgres`, for
workers on several machines; needs the ``postgres`` extra, psycopg 3), both built on
the shared transitions of :mod:`.sql`.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import Outage, Store, tolerate_outage
from .rows import (
    REVIEW_STATES,
    STATUSES,
    Batch,
    Choice,
    Claim,
    DiskState,
    Event,
    Final,
    FinalFile,
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
from .sql import SqlStore
from .sqlite import SCHEMA_VERSION, SqliteStore

#: What a PostgreSQL state needs when psycopg is missing.
POSTGRES_EXTRA = "pip install 'tui_app[postgres]'"


def is_postgres_uri(location: object) -> bool:
    """True when ``location`` names a PostgreSQL database (``postgresql://`` or ``postgres://`` URI)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def open_store(location: Path | str, *, password_env: str | None = None) -> Store:
    """Open (creating when missing) the store at ``location``.

    Args:
        location: a SQLite file path, or a PostgreSQL URI (``postgresql://USER@HOST:PORT/DB``, or
            libpq's socket form ``postgresql://USER@/DB?host=/path``); the database must exist,
            its tables are created on first use.
        password_env: the name of the environment variable holding the PostgreSQL password
            (None: no password, or libpq's own ``PGPASSWORD`` / ``~/.pgpass``).

    Raises:
        sqlite3.DatabaseError: the file is not a tui_app state file or is newer than this code.
        ModuleNotFoundError: a PostgreSQL URI without psycopg installed (the message says what to install).
        KeyError: ``password_env`` names a variable that is not set.
        psycopg.Error: the PostgreSQL server cannot be reached, refuses the login, or holds a
            database that is not a tui_app state (or a newer one).
    """
    if not is_postgres_uri(location):
        return SqliteStore(location)
    try:
        from .postgres import PostgresStore
    except ModuleNotFoundError as exc:
        if exc.name not in ("psycopg", "psycopg_binary"):
            raise
        raise ModuleNotFoundError(
            f"a postgresql:// state needs psycopg 3: {POSTGRES_EXTRA}", name=exc.name
        ) from None
    password = None
    if password_env:
        if password_env not in os.environ:
            raise KeyError(f"the environment variable {password_env} (state_password_env) is not set")
        password = os.environ[password_env]
    return PostgresStore(str(location), password=password)


def copy_state(source: Store, target: Store) -> dict[str, int]:
    """Copy a project's state into an empty store of either backend (``migrate-state``): items,
    takes, finals, batches, commands, events, pauses and the providers' shared state, verified by
    the row counts of each table and every take's sha256 (see :meth:`.sql.SqlStore.copy_to`).

    Returns:
        ``{table: rows copied}``.

    Raises:
        ValueError: the target is not empty, or the copy does not match its source.
        TypeError: a store that is not one of tui_app's SQL backends.
    """
    if not isinstance(source, SqlStore) or not isinstance(target, SqlStore):
        raise TypeError("copy_state copies between tui_app's SQLite and PostgreSQL stores only")
    return source.copy_to(target)


__all__ = [
    "POSTGRES_EXTRA",
    "SCHEMA_VERSION",
    "REVIEW_STATES",
    "STATUSES",
    "Batch",
    "Choice",
    "Claim",
    "DiskState",
    "Event",
    "Final",
    "FinalFile",
    "ImportReport",
    "Item",
    "Outage",
    "Row",
    "RowFilter",
    "SourceItem",
    "SqliteStore",
    "Store",
    "Take",
    "TakeFile",
    "TakeRecord",
    "Worker",
    "copy_state",
    "is_postgres_uri",
    "open_store",
    "tolerate_outage",
]
