"""TTS dataset sources: LJSpeech ``metadata.csv`` and festvox prompt lists.

LJSpeech (keithito.com/LJ-Speech-Dataset): one entry per line, fields separated
by ``|``, no header and no quoting: ``ID|Transcription|Normalized Transcription``.
Accepted here: ``id|text``, ``id|text|normalized``, ``id|text|normalized|emotion``,
or any order named by the collection's ``columns`` key.

festvox (``etc/txt.done.data``, as shipped with CMU ARCTIC): one prompt per line,
``( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )``; a ``\\"``
inside the text is a literal quote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store.rows import SourceItem
from . import SourceError, check_key, make_item, read_text

_FESTVOX = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')
_AUTO_COLUMNS = {
    2: ["id", "text"],
    3: ["id", "text", "normalized"],
    4: ["id", "text", "normalized", "emotion"],
}


def detect_format(path: Path, text: str) -> str:
    """``festvox`` when the first non-blank line starts with ``(``, else ``ljspeech``."""
    for line in text.splitlines():
        if line.strip():
            return "festvox" if line.lstrip().startswith("(") else "ljspeech"
    return "ljspeech"


def read_dataset(path: Path, params: Mapping[str, Any]) -> list[SourceItem]:
    """Read entries; params are the collection's (``format``, ``columns``).

    Each item: key = id, text = transcription, params = {normalized?, emotion?}.

    Raises:
        SourceError: bad line, duplicate id, empty text, unusable id, not UTF-8.
    """
    text = read_text(path)
    fmt = params.get("format", "auto")
    if fmt == "auto":
        fmt = detect_format(path, text)
    rows = _festvox(path, text) if fmt == "festvox" else _ljspeech(path, text, params.get("columns"))
    items: list[SourceItem] = []
    first_line: dict[str, int] = {}
    for ordinal, (line, key, transcript, extra) in enumerate(rows):
        check_key(path, line, key)
        if key in first_line:
            raise SourceError(path, f"duplicate id {key!r} (first on line {first_line[key]})", line)
        first_line[key] = line
        if not transcript.strip():
            raise SourceError(path, f"{key}: empty text", line)
        items.append(make_item(key, ordinal, transcript.strip(), extra))
    if not items:
        raise SourceError(path, "no entries found")
    return items


def _festvox(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        m = _FESTVOX.match(line.strip())
        if not m:
            raise SourceError(path, 'expected ( id "text" ) as in festvox prompt lists', number)
        yield number, m.group(1), m.group(2).replace('\\"', '"'), {}


def _ljspeech(path: Path, text: str, columns: list[str] | None):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        names = columns or _AUTO_COLUMNS.get(len(fields))
        if names is None or len(fields) != len(names):
            want = (
                f"{len(names)} fields ({'|'.join(names)})"
                if names
                else "2 to 4 fields (id|text[|normalized[|emotion]])"
            )
            raise SourceError(path, f"expected {want}, got {len(fields)}", number)
        row = dict(zip(names, fields, strict=True))
        extra = {}
        if row.get("normalized", "").strip():
            extra["normalized"] = row["normalized"].strip()
        if row.get("emotion", "").strip():
            extra["emotion"] = row["emotion"].strip()
        yield number, row["id"].strip(), row["text"], extra
