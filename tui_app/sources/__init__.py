"""Importers: turn a collection's source into :class:`~tui_app.store.SourceItem` rows.

* ``dataset``: LJSpeech ``metadata.csv`` (``id|text`` or ``id|text|normalized``, optional
  emotion column) or a festvox prompt list (``( id "text" )``), see :mod:`.dataset`.
* ``pages``: a story in markdown, pages separated by ``---`` lines, see :mod:`.story`.
* ``variants``: a folder of photos x the configured slots, see :mod:`.photos`.

Bad input raises :class:`SourceError`, whose text names the file and line. Each
collection kind (:mod:`tui_app.kinds`) picks its reader. Limits every reader applies:
item keys are at most :data:`MAX_KEY_CHARS` characters (dataset ids from the POSIX portable
file-name set), texts hold no control character (Unicode category Cc) but tab (and line
breaks in story pages), and a text is at most the collection's ``max_text_chars`` characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import escape_controls, show
from ..store.rows import SourceItem


class SourceError(Exception):
    """Bad source input: ``str(err)`` is ``FILE:LINE: message`` (or ``FILE: message``), one line:
    control characters in it (a photo named ``a\\x1b[31m.png``, a key quoted from the file) are
    escaped as ``repr`` writes them (:func:`~tui_app.settings.escape_controls`)."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        self.path, self.line, self.message = Path(path), line, message
        where = escape_controls(str(path))
        text = escape_controls(message)
        super().__init__(f"{where}:{line}: {text}" if line else f"{where}: {text}")


def input_hash(text: str, params: Mapping[str, Any]) -> str:
    """sha256 over what determines an item's output (its text and params)."""
    blob = json.dumps([text, dict(params)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_item(key: str, ordinal: int, text: str, params: Mapping[str, Any]) -> SourceItem:
    """A :class:`SourceItem` with its input hash."""
    return SourceItem(key, ordinal, text, dict(params), input_hash(text, params))


#: The longest item key (a dataset id, a photo's ``STEM.sINDEX-SLOT``): take files are named
#: ``KEY.takeN.EXT`` and must stay under the usual 255-byte file-name limit (NAME_MAX).
MAX_KEY_CHARS = 200
#: ``max_text_chars`` when a collection does not set it.
DEFAULT_MAX_TEXT_CHARS = 2000

#: The POSIX portable file-name character set (POSIX.1-2017, 3.282).
_PORTABLE = re.compile(r"[A-Za-z0-9._-]+")
#: Unicode category Cc (C0, DEL, C1) except tab, line feed and carriage return (see _LONE_CR).
_FILE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: A carriage return that does not end a CRLF line.
_LONE_CR = re.compile(r"\r(?!\n)")
#: Unicode category Cc except tab: what a one-line field may not hold.
_FIELD_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {
    0x00: "NUL",
    0x07: "BEL",
    0x08: "BS",
    0x0A: "LF",
    0x0B: "VT",
    0x0C: "FF",
    0x0D: "CR",
    0x1B: "ESC",
    0x7F: "DEL",
    0x85: "NEL",
}


def control_name(char: str) -> str:
    """``U+0000 (NUL)``: a control character's code point and, for the common ones, its name."""
    name = _CONTROL_NAMES.get(ord(char))
    return f"U+{ord(char):04X}" + (f" ({name})" if name else "")


def first_control(text: str) -> tuple[int, str] | None:
    """The line (1-based, counting ``\\n``) and character of the first control character of a
    source file's ``text`` that is not a tab, a line feed or the CR of a CRLF; None when clean."""
    found = [m for m in (_FILE_CONTROL.search(text), "\r" in text and _LONE_CR.search(text)) if m]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    return text.count("\n", 0, first.start()) + 1, first.group()


def field_control(value: str) -> str | None:
    """The first control character (Unicode category Cc) other than tab in ``value``, or None."""
    m = _FIELD_CONTROL.search(value)
    return m.group() if m else None


def check_key(path: Path, line: int | None, key: str) -> None:
    """Reject dataset ids that are unusable as file names on any system.

    An id is at most :data:`MAX_KEY_CHARS` characters from the POSIX portable file-name set
    ``[A-Za-z0-9._-]``, without ``..`` or a leading dot.

    Raises:
        SourceError: empty, too long, a path separator, ``..``, a leading dot, another character.
    """
    if not key:
        raise SourceError(path, "empty id", line)
    if len(key) > MAX_KEY_CHARS:
        raise SourceError(path, f"id is {len(key)} characters long (at most {MAX_KEY_CHARS})", line)
    if "/" in key or "\\" in key or ".." in key or key.startswith("."):
        raise SourceError(
            path,
            f"id {show(key)} is not usable as a file name (no path separators, '..' or leading dot)",
            line,
        )
    if not _PORTABLE.fullmatch(key):
        raise SourceError(
            path, f"id {show(key)} has characters outside A-Z a-z 0-9 . _ - (ids become file names)", line
        )


def check_text(path: Path, line: int, what: str, value: str, limit: int) -> None:
    """Reject a one-line text field (``what``: ``text``, ``normalized text``, ``emotion``)
    holding a control character other than tab, or longer than ``limit`` characters.

    Raises:
        SourceError: naming the line, the field and the code point or the length.
    """
    char = field_control(value)
    if char is not None:
        raise SourceError(
            path, f"{what} has a control character {control_name(char)}; only tab is allowed", line
        )
    if len(value) > limit:
        raise SourceError(path, f"{what} is {len(value)} characters long (max_text_chars = {limit})", line)


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
