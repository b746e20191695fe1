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

:func:`storage_error` is the one classification: an ``OSError`` with one of
:data:`STORAGE_ERRNOS`, a ``sqlite3`` error whose primary result code is one of
:data:`SQLITE_STORAGE_CODES`, or a :class:`StorageError` already made, also inside
exception groups.
"""

from __future__ import annotations

import errno
import os
import sqlite3
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
        path: the file or folder (as given; :meth:`line` shows it relative to the working folder).
        cause: what is wrong, e.g. ``disk full``.
        detail: the system's message, e.g. ``No space left on device``.
        hint: what to do, e.g. ``free space and run again``.
    """

    def __init__(self, path: Path | str, cause: str, detail: str, hint: str):
        self.path = Path(path)
        self.cause = cause
        self.detail = detail
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        """``PATH: CAUSE (DETAIL); HINT: the state is consistent`` (one line)."""
        return f"{_shown(self.path)}: {self.cause} ({self.detail}); {self.hint}: the state is consistent"


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
            the folder being written for an ``OSError`` without a file name.
    """

    def match(e: BaseException) -> StorageError | None:
        if isinstance(e, StorageError):
            return e
        if isinstance(e, OSError):
            return _from_os_error(e, path)
        if isinstance(e, sqlite3.Error):
            return _from_sqlite_error(e, path)
        return None

    return find_exception(exc, match)


__all__ = ["SQLITE_STORAGE_CODES", "STORAGE_ERRNOS", "StorageError", "find_exception", "storage_error"]
