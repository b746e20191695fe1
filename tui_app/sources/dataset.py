"""TTS dataset sources: LJSpeech ``metadata.csv`` and festvox prompt lists.

LJSpeech (keithito.com/LJ-Speech-Dataset): one entry per line, fields separated
by ``|``, no header and no quoting: ``ID|Transcription|Normalized Transcription``.
Accepted here: ``id|text``, ``id|text|normalized``, ``id|text|normalized|emotion``,
or any order named by the collection's ``columns`` key.

A first line whose fields are all column names (``id|text``, ``file_name|transcription``)
is refused as a header row: LJSpeech files have none, and importing it would make an
entry called ``id``.

festvox (``etc/txt.done.data``, as shipped with CMU ARCTIC): one prompt per line,
``( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )``; a ``\\"``
inside the text is a literal quote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..settings import show
from ..store.rows import SourceItem
from . import (
    DEFAULT_MAX_TEXT_CHARS,
    SourceError,
    check_key,
    check_text,
    control_name,
    field_control,
    make_item,
    read_text,
)

_FESTVOX = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')
_AUTO_COLUMNS = {
    2: ["id", "text"],
    3: ["id", "text", "normalized"],
    4: ["id", "text", "normalized", "emotion"],
}


#: Names a header row's fields use (lower case, spaces and hyphens as ``_``), and the column
#: each stands for; LJSpeech's own README describes its columns as ID, Transcription and
#: Normalized Transcription, and other corpora use file/file_name/path and text/sentence.
_HEADER_NAMES = {
    **dict.fromkeys(
        ("id", "file", "file_id", "file_name", "filename", "path", "audio", "audio_file", "wav", "wav_file"),
        "id",
    ),
    **dict.fromkeys(("utt", "utt_id", "utterance_id", "key", "name"), "id"),
    **dict.fromkeys(("text", "transcription", "transcript", "sentence", "raw_text"), "text"),
    **dict.fromkeys(("normalized", "normalized_text", "normalized_transcription", "norm_text"), "normalized"),
    **dict.fromkeys(("emotion", "style"), "emotion"),
    **dict.fromkeys(("ignore", "speaker", "speaker_id", "duration", "label"), "ignore"),
}


def detect_format(path: Path, text: str) -> str:
    """``festvox`` when the first line that is neither blank nor a ``;`` comment starts with
    ``(``, else ``ljspeech`` (an LJSpeech id never starts with ``;``)."""
    for line in text.split("\n"):
        if line.strip() and not line.lstrip().startswith(";"):
            return "festvox" if line.lstrip().startswith("(") else "ljspeech"
    return "ljspeech"


def read_dataset(path: Path, params: Mapping[str, Any]) -> list[SourceItem]:
    """Read entries; params are the collection's (``format``, ``columns``, ``max_text_chars``).

    Each item: key = id, text = transcription, params = {normalized?, emotion?}. Lines end
    with LF or CRLF.

    Raises:
        SourceError: bad line, header row, duplicate id, empty text, an id that is not a short
            portable file name (see :func:`~tui_app.sources.check_key`), a control character
            (Unicode category Cc) other than tab anywhere on a line, a text, normalized text or
            emotion longer than ``max_text_chars``, not UTF-8.
    """
    text = read_text(path)
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # a CR left is a control character
    limit = int(params.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS))
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
        transcript = transcript.strip()
        if not transcript:
            raise SourceError(path, f"{key}: empty text", line)
        if len(transcript) > limit:
            check_text(path, line, "text", transcript, limit)
        for field, value in extra.items():
            if len(value) > limit:
                check_text(path, line, _LABELS[field], value, limit)
        items.append(make_item(key, ordinal, transcript, extra))
    if not items:
        raise SourceError(path, "no entries found")
    return items


#: How messages name an LJSpeech column.
_LABELS = {
    "id": "id",
    "text": "text",
    "normalized": "normalized text",
    "emotion": "emotion",
    "ignore": "ignored field",
}


def _has_control(line: str) -> bool:
    """Whether ``line`` holds a control character other than tab; ``isprintable`` (a C loop that
    is true for almost every line) keeps the regular expression off the usual clean line."""
    return not line.isprintable() and field_control(line) is not None


def _control_error(path: Path, number: int, what: str, value: str) -> SourceError:
    char = field_control(value) or ""
    return SourceError(
        path, f"{what} has a control character {control_name(char)}; only tab is allowed", number
    )


def _festvox(path: Path, text: str) -> Iterator[tuple[int, str, str, dict[str, str]]]:
    for number, line in enumerate(text.split("\n"), start=1):
        dirty = _has_control(line)
        if not line.strip() or line.lstrip().startswith(";"):
            if dirty:
                raise _control_error(path, number, "the line", line)
            continue
        m = _FESTVOX.match(line.strip())
        if dirty:
            if m and field_control(m.group(2)):
                raise _control_error(path, number, "text", m.group(2))
            raise _control_error(path, number, "the line", line)
        if not m:
            raise SourceError(path, 'expected ( id "text" ) as in festvox prompt lists', number)
        yield number, m.group(1), m.group(2).replace('\\"', '"'), {}


def _ljspeech(
    path: Path, text: str, columns: list[str] | None
) -> Iterator[tuple[int, str, str, dict[str, str]]]:
    first = True
    for number, line in enumerate(text.split("\n"), start=1):
        dirty = _has_control(line)
        if not line.strip():
            if dirty:
                raise _control_error(path, number, "the line", line)
            continue
        fields = line.split("|")
        if first:
            first = False
            _refuse_header(path, number, line, fields, columns)
        names = columns or _AUTO_COLUMNS.get(len(fields))
        if dirty:
            labels = [_LABELS[n] for n in names] if names and len(names) == len(fields) else []
            for index, value in enumerate(fields):
                if field_control(value):
                    label = labels[index] if labels else "the line"
                    raise _control_error(path, number, label, value)
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


def _refuse_header(path: Path, number: int, line: str, fields: list[str], columns: list[str] | None) -> None:
    """Refuse a first line whose fields are all column names (``id|text``): LJSpeech has no header."""
    names = [_HEADER_NAMES.get(re.sub(r"[\s-]+", "_", f.strip().lower())) for f in fields]
    if len(fields) < 2 or None in names:
        return
    if columns:
        hint = "delete this line"
    else:
        named = [n for n in names if n != "ignore"]
        suggest = (
            "[" + ", ".join(f'"{n}"' for n in names) + "]"
            if "id" in named and "text" in named and len(named) == len(set(named))
            else "[...]"
        )
        hint = f"delete this line (set columns = {suggest} to name the columns)"
    shown = line.strip() if line.isprintable() else show(line.strip())
    raise SourceError(
        path, f"looks like a header row ({shown}); LJSpeech metadata.csv has none: {hint}", number
    )
