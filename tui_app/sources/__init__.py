"""Importers: turn a collection's source into :class:`~tui_app.store.SourceItem` rows.

* ``dataset``: LJSpeech ``metadata.csv`` (``id|text`` or ``id|text|normalized``, optional
  emotion column) or a festvox prompt list (``( id "text" )``), see :mod:`.dataset`.
* ``pages``: a story in markdown, pages separated by ``---`` lines, see :mod:`.story`.
* ``variants``: a folder of photos x the configured slots, see :mod:`.photos`.

Bad input raises :class:`SourceError`, whose text names the file and line. Each
collection kind (:mod:`tui_app.kinds`) picks its reader.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store.rows import SourceItem


class SourceError(Exception):
    """Bad source input: ``str(err)`` is ``FILE:LINE: message`` (or ``FILE: message``)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        self.path, self.line, self.message = Path(path), line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


def input_hash(text: str, params: Mapping[str, Any]) -> str:
    """sha256 over what determines an item's output (its text and params)."""
    blob = json.dumps([text, dict(params)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_item(key: str, ordinal: int, text: str, params: Mapping[str, Any]) -> SourceItem:
    """A :class:`SourceItem` with its input hash."""
    return SourceItem(key, ordinal, text, dict(params), input_hash(text, params))


def check_key(path: Path, line: int | None, key: str) -> None:
    """Reject ids that are unusable as file names.

    Raises:
        SourceError: empty, ``..``, a path separator, a leading dot or a control character.
    """
    if not key:
        raise SourceError(path, "empty id", line)
    if "/" in key or "\\" in key or ".." in key or key.startswith(".") or any(ord(ch) < 32 for ch in key):
        raise SourceError(
            path,
            f"id {key!r} is not usable as a file name (no path separators, '..', "
            "leading dot or control characters)",
            line,
        )


def read_text(path: Path) -> str:
    """Read a UTF-8 text source (a BOM is accepted).

    Raises:
        SourceError: missing file, or bytes that are not UTF-8 (with the line number).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(path, f"cannot read source: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourceError(path, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})", line) from None
