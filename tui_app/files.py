"""Atomic file writes and temp-file hygiene.

Every take file is written to a temp name in its own directory, flushed and
fsynced, then moved into place with :func:`os.replace` (POSIX ``rename(2)``
is atomic within one file system). A reader therefore sees either no file or
the whole file, never a partial one. Take files are never overwritten:
:func:`free_take_path` picks a number that is not on disk yet.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """A unique temp path beside ``path`` (``.NAME.tmp-<hex>``), recognisable by :func:`is_temp`."""
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")


def is_temp(path: Path) -> bool:
    """True for names made by :func:`temp_name`."""
    return path.name.startswith(".") and TEMP_MARK in path.name


def atomic_write(path: Path, data: bytes, *, overwrite: bool = True) -> str:
    """Write ``data`` to ``path`` atomically and return its sha256 (hex).

    Args:
        path: destination; its folder is created when missing.
        data: the whole content.
        overwrite: with False, raise instead of replacing an existing file.

    Raises:
        FileExistsError: ``overwrite`` is False and ``path`` exists.
        OSError: the write, fsync or rename failed; the temp file is removed and
            whatever was at ``path`` before is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path}: refusing to overwrite an existing file")
    tmp = temp_name(path)
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file, read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class IntegrityError(Exception):
    """A recorded file is missing, or its sha256 differs from the one recorded with it."""


def verify_file(path: Path, sha256: str, what: str, shown: Path | str | None = None) -> None:
    """Check that ``path`` exists and hashes to ``sha256``.

    Args:
        what: names the record in the message, e.g. ``dataset/arctic_a0001 take 3``.
        shown: how to print the path (default: ``path``).

    Raises:
        IntegrityError: one line naming ``what`` and the path, with the fix (``tui-app sync --fix``).
    """
    try:
        actual = sha256_file(path)
    except FileNotFoundError:
        raise IntegrityError(
            f"{what}: its file {shown or path} is missing (run `tui-app sync --fix`)"
        ) from None
    if actual != sha256:
        raise IntegrityError(
            f"{what}: its file {shown or path} differs from its recorded sha256 (run `tui-app sync --fix`)"
        )


#: ``FICLONE`` from linux/fs.h: share the source's extents (a reflink) on btrfs, XFS, bcachefs, ...
_FICLONE = 0x40049409


def copy_file(src: Path, dst: Path) -> str:
    """Copy ``src`` to the new file ``dst`` as an independent file and return the copy's sha256 (hex).

    A reflink (copy-on-write clone: no data written, and editing either file never
    changes the other) where the file system supports it, else ``copy_file_range`` /
    a plain copy. Never a hard link. The copy is fsynced.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: ``src`` cannot be read or ``dst`` written.
    """
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        try:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS):
                raise
            shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    return sha256_file(dst)


def take_path(folder: Path, key: str, number: int, suffix: str) -> Path:
    """The file name of take ``number`` of item ``key``: ``FOLDER/KEY.take3.wav``."""
    return folder / f"{key}.take{number}{suffix}"


def free_take_path(folder: Path, key: str, number: int, suffix: str) -> tuple[Path, int]:
    """First take path at or after ``number`` that does not exist yet, and its number.

    A file can exist without a DB row after a crash between rename and commit;
    skipping it keeps the invariant that a take file is never overwritten.
    """
    while True:
        path = take_path(folder, key, number, suffix)
        if not path.exists():
            return path, number
        number += 1


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold the same bytes as ``src``: a hard link when the file system allows,
    else an atomic copy. Never overwrites ``dst``.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: ``src`` cannot be read.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:
        atomic_write(dst, src.read_bytes(), overwrite=False)


def remove_temp_files(folder: Path, *, older_than_s: float = 0.0) -> list[Path]:
    """Delete leftover temp files (from an interrupted write) under ``folder``; returns them.

    Args:
        older_than_s: only those not modified for this many seconds (a live writer's temp file
            is seconds old; a dead one's stays behind).
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    cutoff = time.time() - older_than_s
    for path in folder.rglob(f".*{TEMP_MARK}*"):
        try:
            old = path.is_file() and is_temp(path) and path.stat().st_mtime <= cutoff
        except OSError:
            continue
        if old:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
