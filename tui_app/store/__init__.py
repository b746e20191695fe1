"""The project's state store: the interface, its typed rows, and the backends behind it.

Open one with :func:`open_store`; everything else in tui_app talks to the
:class:`Store` protocol and receives the dataclasses of :mod:`.rows`. Backends:
SQLite (:mod:`.sqlite`, the default: one file) and PostgreSQL (:mod:`.postgres`, for
workers on several machines; needs the ``postgres`` extra, psycopg 3), both built on
the shared transitions of :mod:`.sql`.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..storage_errors import is_postgres_uri
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


#: The name of an environment variable (``state_password_env``, ``--password-env``): letters,
#: digits and ``_``, not starting with a digit.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UriProblem(ValueError):
    """Why a ``postgresql://`` URI cannot name a project's state (:func:`check_postgres_uri`).

    Attributes:
        reason: ``"invalid"`` (it does not parse: ``detail`` says why), ``"password"`` (it holds a
            password), ``"database"`` (it names no database) or ``"driver"`` (psycopg 3 is not
            installed). Each caller words the first two for where the URI came from.
        detail: the parser's message for ``"invalid"``, else empty.
    """

    def __init__(self, reason: str, message: str, detail: str = ""):
        super().__init__(message)
        self.reason = reason
        self.detail = detail


def check_postgres_uri(uri: str) -> None:
    """Check a ``postgresql://`` URI before anything connects: it parses (a port that is a number),
    holds no password (in the user part or as ``?password=``), names a database, and psycopg 3 is
    installed.

    Raises:
        UriProblem: the first of those that fails (see its ``reason``).
    """
    try:
        parts = urlsplit(uri)
        query = parse_qs(parts.query)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise UriProblem("invalid", f"not a valid PostgreSQL URI ({exc})", str(exc)) from None
    if parts.password or "password" in query:
        raise UriProblem("password", "a password does not belong in the URI")
    if not parts.path.strip("/"):
        raise UriProblem("database", "the URI names no database (postgresql://USER@HOST:PORT/DATABASE)")
    if importlib.util.find_spec("psycopg") is None:
        raise UriProblem("driver", f"a postgresql:// state needs psycopg 3: {POSTGRES_EXTRA}")


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
    "ENV_NAME",
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
    "UriProblem",
    "Worker",
    "check_postgres_uri",
    "copy_state",
    "is_postgres_uri",
    "open_store",
    "tolerate_outage",
]
