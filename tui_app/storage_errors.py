"""Storage failures: the disk under the state file or an output folder refuses writes.

A full disk, a quota, a file size limit, a read-only file system, a folder without
write permission or a failing disk is not one item's fault: failing items one by one
would spend the attempts of every item in the queue. So the engine puts the item it
was writing back to ``pending`` (no attempt spent) and stops the run, and every
command ends with **one line** naming the path and the cause, and exit code 74
(``ExitCode.STORAGE``, ``EX_IOERR`` of BSD ``sysexits.h``)::

    tui-app: error: data/state.sqlite: disk full (database or disk is full); free space and run again:
    the state is consistent

The state stays consistent: SQLite rolls back a transaction it could not write, take
files are written to a temp name and renamed (a failed write leaves no file), and a
take file written but not recorded is found by the next start's recovery.

A PostgreSQL state (``[project] state = "postgresql://..."``) fails in two ways, each one
line naming the database, host and port (never the password), as a :class:`DatabaseError`:

- **unreachable or lost** (connection refused, a timeout, a host name that does not resolve,
  the server shut down or the connection cut mid-run, after the store's reconnect with
  backoff gave up): exit 74, like a failing disk: run again when the server is back. The
  state is consistent (the server rolled back what it had not committed; a take file
  written but not recorded is found by the next start's recovery)::

      tui-app: error: postgresql database tui on db.lan:5432: server unreachable (Connection refused);
      start the server or check the network and the host name, then run again: the state is consistent

- **refused** (the server answered and said no: a failed login, no password given, no
  ``pg_hba.conf`` entry, a database or role that does not exist, no permission, a database
  that is not a tui_app state or is newer than this code): exit 2, a configuration error.

:func:`storage_error` is the one classification: an ``OSError`` with one of
:data:`STORAGE_ERRNOS`, a ``sqlite3`` error whose primary result code is one of
:data:`SQLITE_STORAGE_CODES`, a psycopg error (``OperationalError``, or a refusal above),
or a :class:`StorageError` already made, also inside exception groups. psycopg is never
imported here: a psycopg error can only exist once something else imported it.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_FREE = "free space and run again"
_WRITABLE = "make it writable and run again"
_CHECK = "check the disk (space, permissions, file size limit) and run again"

#: errno -> (cause, what to do). ``EFBIG``: past the file size limit (``ulimit -f``) or the largest file.
STORAGE_ERRNOS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk full", _FREE),
    errno.EDQUOT: ("disk quota exceeded", _FREE),
    errno.EFBIG: ("file too large", "free space or raise the file size limit (ulimit -f) and run again"),
    errno.EROFS: ("read-only file system", _WRITABLE),
    errno.EACCES: ("permission denied", "fix its permissions and run again"),
    errno.EIO: ("I/O error", _CHECK),
}

#: SQLite primary result codes (sqlite.org/rescode.html) -> (cause, what to do).
SQLITE_STORAGE_CODES: dict[int, tuple[str, str]] = {
    13: ("disk full", _FREE),  # SQLITE_FULL: "database or disk is full"
    8: ("read-only", _WRITABLE),  # SQLITE_READONLY: "attempt to write a readonly database"
    3: ("not writable", _WRITABLE),  # SQLITE_PERM
    10: ("I/O error", _CHECK),  # SQLITE_IOERR: "disk I/O error" (also EFBIG, EIO under it)
    14: ("cannot open", _CHECK),  # SQLITE_CANTOPEN
}


class StorageError(Exception):
    """A write to the state file or an output folder failed for a reason that concerns the whole disk.

    Attributes:
        exit_code: what the command exits with: 74 (``EX_IOERR``).
        path: the file or folder (as given; :meth:`line` shows it relative to the working folder).
        cause: what is wrong, e.g. ``disk full``.
        detail: the system's message, e.g. ``No space left on device``.
        hint: what to do, e.g. ``free space and run again``.
    """

    exit_code = 74

    def __init__(self, path: Path | str, cause: str, detail: str, hint: str):
        self.path = Path(path)
        self.cause = cause
        self.detail = detail
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """``PATH: CAUSE (DETAIL); HINT: the state is consistent`` (one line)."""
        return f"{_shown(self.path)}: {self.cause} ({self.detail}); {self.hint}: the state is consistent"


class DatabaseError(StorageError):
    """The PostgreSQL state cannot be used: its server is unreachable or the connection was lost
    (``exit_code`` 74: run again when it is back), or it answered and refused (``exit_code`` 2: a
    configuration error). See the module docstring.

    Attributes:
        database: ``postgresql database NAME on HOST:PORT`` (never the password).
        cause: e.g. ``server unreachable``, ``login refused``, ``no such database``.
        detail: the server's or libpq's message, first line, e.g. ``Connection refused``.
        hint: what to do.
        exit_code: 74 (unreachable, lost) or 2 (refused).
        path: ``Path()`` (a database is no path; kept for :class:`StorageError`'s readers).
    """

    def __init__(self, database: str, cause: str, detail: str, hint: str, *, exit_code: int):
        self.database = database
        self.exit_code = exit_code
        super().__init__(Path(), cause, detail, hint)

    def line(self) -> str:
        """``DATABASE: CAUSE (DETAIL); HINT`` (+ ``: the state is consistent`` for exit 74; one line)."""
        consistent = ": the state is consistent" if self.exit_code == StorageError.exit_code else ""
        return f"{self.database}: {self.cause} ({self.detail}); {self.hint}{consistent}"


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, else absolute."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


def _is_temp_name(name: str) -> bool:
    """A temp name of :func:`tui_app.files.temp_name` (``.NAME.tmp-HEX``): show its folder instead."""
    return name.startswith(".") and ".tmp-" in name


def _from_os_error(exc: OSError, path: Path | str | None) -> StorageError | None:
    known = STORAGE_ERRNOS.get(exc.errno or 0)
    if known is None:
        return None
    where: Path | str | None = None
    if isinstance(exc.filename, str | bytes | os.PathLike) and exc.filename:
        name = Path(os.fsdecode(exc.filename))
        where = name.parent if _is_temp_name(name.name) else name
    where = where or path or "(unknown path)"
    return StorageError(where, known[0], exc.strerror or os.strerror(exc.errno or 0), known[1])


def _from_sqlite_error(exc: sqlite3.Error, path: Path | str | None) -> StorageError | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    known = SQLITE_STORAGE_CODES.get(code & 0xFF)
    if known is None:
        return None
    if path is not None and known[1] != _FREE and not _writable_folder(Path(path).parent):
        known = ("folder not writable", _WRITABLE)  # SQLite cannot make its -wal/-shm files there
    return StorageError(path or "the state file", known[0], str(exc), known[1])


def _writable_folder(folder: Path) -> bool:
    """Whether this process may create files in ``folder`` (False on a read-only mount, even as root)."""
    try:
        return os.access(folder, os.W_OK) if folder.is_dir() else True
    except OSError:
        return True


_PG_SCHEMES = ("postgresql://", "postgres://")
_UNREACHABLE = (
    "server unreachable",
    "start the server or check the network and the host name, then run again",
)
_LOST = ("connection lost", "run again when the server is back")
#: A refusal's words in libpq's or the server's message (at connect time psycopg gives no SQLSTATE)
#: or its SQLSTATE -> (cause, what to do). The first match wins.
_PG_REFUSALS: tuple[tuple[str, str, str, str], ...] = (
    # (words in the message, SQLSTATE prefix, cause, what to do)
    ("password authentication failed", "28P01", "login refused", "check the user and state_password_env"),
    (
        "no password supplied",
        "",
        "login refused",
        "set state_password_env (or --password-env) to the "
        "name of an environment variable holding the password",
    ),
    (
        "no pg_hba.conf entry",
        "",
        "login refused",
        "add a host line for this machine to the server's pg_hba.conf and reload it",
    ),
    ("authentication failed", "28", "login refused", "check the user and the server's pg_hba.conf"),
    ("not permitted to log in", "28", "login refused", "ALTER ROLE ... LOGIN on the server"),
    ('database "', "3D000", "no such database", "create it (createdb -O USER NAME) or fix the URI"),
    ('role "', "", "no such role", "create it (CREATE ROLE ... LOGIN) or fix the user in the URI"),
    (
        "permission denied",
        "42501",
        "permission denied",
        "grant the user the database (ALTER DATABASE ... OWNER TO USER)",
    ),
    ("is not a tui_app state", "", "not a tui_app state", "use an empty database"),
    ("is newer than this tui_app", "", "newer schema", "upgrade tui_app on this machine"),
    ("invalid ", "", "invalid connection setting", "fix the URI"),
)


def _first_line(message: str) -> str:
    """libpq's message without its prefixes (``connection failed: connection to server at ...
    failed: FATAL:``) and without the database this module names itself: its first line."""
    line = message.strip().splitlines()[0] if message.strip() else "no message"
    line = re.sub(
        r"^(connection failed|connection is bad|consuming input failed|sending query failed):\s*", "", line
    )
    line = re.sub(
        r'^connection to server (at "[^"]*"( \([^)]*\))?, port \d+|on socket "[^"]*") failed:\s*', "", line
    )
    line = re.sub(r"^(FATAL|ERROR):\s+", "", line)
    return re.sub(r"^postgresql database \S+ on \S+: ", "", line).strip()


def _database_named(location: Path | str | None, exc: BaseException) -> str:
    """``postgresql database NAME on HOST:PORT`` from the configured URI, else from the failed
    connection, else libpq's defaults (``PGHOST``, ``PGPORT``, the local socket, 5432); ``the
    PostgreSQL database`` when nothing names it."""
    given: dict[str, str] = {}
    if is_postgres_uri(location):
        assert isinstance(location, str)
        try:
            from psycopg.conninfo import conninfo_to_dict  # psycopg is loaded: exc is one of its errors

            given = {k: str(v) for k, v in conninfo_to_dict(location).items() if v is not None}
        except Exception:  # noqa: BLE001 - a URI psycopg cannot parse: name what the connection knew
            given = {}
    pgconn = getattr(exc, "pgconn", None)

    def tried(attr: str) -> str | None:
        try:
            value = getattr(pgconn, attr, None)
        except Exception:  # noqa: BLE001 - a connection that is gone may refuse to say
            return None
        return os.fsdecode(value) if isinstance(value, bytes) and value else None

    host = given.get("host") or tried("host") or os.environ.get("PGHOST")
    port = given.get("port") or tried("port") or os.environ.get("PGPORT") or "5432"
    name = given.get("dbname") or tried("db")
    if host is None and name is None:  # an error that carries no connection, and no URI given
        return "the PostgreSQL database"
    where = f"{host or 'the local socket'}:{port}"
    return f"postgresql database {name} on {where}" if name else f"the PostgreSQL server on {where}"


def _from_psycopg_error(exc: BaseException, location: Path | str | None) -> DatabaseError | None:
    pg = sys.modules.get("psycopg")
    if pg is None or not isinstance(exc, pg.DatabaseError):
        return None
    message = str(exc)
    sqlstate = getattr(exc, "sqlstate", None) or ""
    detail = _first_line(message)
    # the words are read in the messages of connecting and of the schema check only (a bug's
    # DataError may say "invalid" too); a SQLSTATE is the server's own word, whatever the class
    connecting = (
        isinstance(exc, pg.OperationalError)
        or type(exc) is pg.DatabaseError  # PostgresStore's schema check
        or (isinstance(exc, pg.ProgrammingError) and not sqlstate)  # libpq's parse of the URI
    )
    for words, state, cause, hint in _PG_REFUSALS:
        if (connecting and words in message) or (state and sqlstate.startswith(state)):
            return DatabaseError(_database_named(location, exc), cause, detail, hint, exit_code=2)
    if not isinstance(exc, pg.OperationalError):
        return None  # another database error: a bug, not the server's state
    lost = (
        sqlstate.startswith(("08", "57P")) or "closed the connection" in message or "terminating" in message
    )
    cause, hint = _LOST if lost else _UNREACHABLE
    return DatabaseError(
        _database_named(location, exc), cause, detail, hint, exit_code=StorageError.exit_code
    )


def find_exception(
    exc: BaseException,
    match: Callable[[BaseException], T | None],
    *,
    chained: bool = False,
    _seen: set[int] | None = None,
) -> T | None:
    """The first non-None ``match(e)`` over ``exc`` and the exceptions inside it (exception groups,
    depth first) and, with ``chained``, behind it (``__cause__``, then ``__context__``); None when
    nothing matches. Loops in ``__context__`` chains are cut."""
    seen = set() if _seen is None else _seen
    if id(exc) in seen:
        return None
    seen.add(id(exc))
    found = match(exc)
    if found is not None:
        return found
    nested: list[BaseException | None] = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else []
    if chained:
        nested += [exc.__cause__, exc.__context__]
    for inner in nested:
        found = find_exception(inner, match, chained=chained, _seen=seen) if inner is not None else None
        if found is not None:
            return found
    return None


def storage_error(exc: BaseException, *, path: Path | str | None = None) -> StorageError | None:
    """The :class:`StorageError` that ``exc`` stands for, or None when it is something else.

    Args:
        exc: any exception; exception groups are searched (the first storage failure wins).
        path: what to name when the error does not: the state file for a ``sqlite3`` error,
            the folder being written for an ``OSError`` without a file name, the state's
            ``postgresql://`` URI (``Config.state_location``) for a psycopg error (a
            :class:`DatabaseError`, whose ``exit_code`` is 74 or 2).
    """

    file = None if is_postgres_uri(path) else path

    def match(e: BaseException) -> StorageError | None:
        if isinstance(e, StorageError):
            return e
        if isinstance(e, OSError):
            return _from_os_error(e, file)
        if isinstance(e, sqlite3.Error):
            return _from_sqlite_error(e, file)
        return _from_psycopg_error(e, path)

    return find_exception(exc, match)


def is_postgres_uri(location: object) -> bool:
    """True when ``location`` names a PostgreSQL database (a ``postgresql://`` or ``postgres://`` URI)."""
    return isinstance(location, str) and location.startswith(_PG_SCHEMES)


__all__ = [
    "SQLITE_STORAGE_CODES",
    "STORAGE_ERRNOS",
    "DatabaseError",
    "StorageError",
    "find_exception",
    "is_postgres_uri",
    "storage_error",
]
