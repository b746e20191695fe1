"""Story sources: markdown with pages separated by lines holding only ``---``.

Layout::

    # The Tale of Peter Rabbit          <- title: makes the cover, page 0

    By Beatrix Potter.                  <- optional byline: the cover's text, when the
                                           first block has more than one paragraph
    Once upon a time there were ...     <- page 1 (the first block's last paragraphs)

    ---

    They lived with their Mother ...    <- page 2

Within a page, paragraphs are kept (joined by a blank line) and the lines of
one paragraph are joined by spaces. Without a ``# `` title there is no cover
and pages start at 1. Lines end with LF or CRLF; no other control character
(Unicode category Cc) but tab is accepted, and a page's text is at most the
collection's ``max_text_chars`` characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store.rows import SourceItem
from . import DEFAULT_MAX_TEXT_CHARS, SourceError, control_name, first_control, make_item, read_text


def page_key(number: int) -> str:
    """Item key of page ``number``: ``page_000`` is the cover."""
    return f"page_{number:03d}"


def _blocks(text: str) -> list[tuple[int, list[tuple[int, str]]]]:
    """Split into blocks of (first line number, [(line number, paragraph)])."""
    blocks: list[tuple[int, list[tuple[int, str]]]] = []
    start, current_line = 1, 0
    paragraphs: list[tuple[int, str]] = []
    current: list[str] = []

    def flush_paragraph() -> None:
        nonlocal current
        if current:
            paragraphs.append((current_line, " ".join(current)))
            current = []

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if line == "---":
            flush_paragraph()
            blocks.append((start, paragraphs))
            start, paragraphs = number + 1, []
        elif not line:
            flush_paragraph()
        else:
            if not current:
                current_line = number
            if line.startswith("# ") and not current:
                flush_paragraph()
                paragraphs.append((number, line))
                continue
            current.append(line)
    flush_paragraph()
    blocks.append((start, paragraphs))
    return blocks


def read_story(path: Path, params: Mapping[str, Any]) -> list[SourceItem]:
    """Read pages; params are the collection's (``style``, ``seed``, ``max_text_chars``).

    Each page item: key ``page_NNN``, ordinal = page number, text = page text,
    params = {page, prompt (style + text), seed (collection seed + page number), title (cover)}.

    Raises:
        SourceError: no pages, an empty page (with its line), a control character other than
            tab and line breaks (LF, CRLF), a page text or title longer than ``max_text_chars``,
            not UTF-8.
    """
    text = read_text(path)
    control = first_control(text)
    if control is not None:
        line, char = control
        raise SourceError(
            path, f"control character {control_name(char)}: a story may hold only tab and line breaks", line
        )
    text = text.replace("\r\n", "\n")
    limit = int(params.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS))
    style = str(params.get("style", ""))
    base_seed = int(params.get("seed", 0))
    blocks = _blocks(text)
    pages: list[tuple[int, str, str | None]] = []  # (line, text, title)
    title = None
    first_line, first = blocks[0]
    if first and first[0][1].startswith("# "):
        title_line, title = first[0][0], first[0][1][2:].strip()
        rest = first[1:]
        byline = rest[0][1] if len(rest) > 1 else ""
        pages.append((title_line, byline, title))
        blocks[0] = (first_line, rest[1:] if len(rest) > 1 else rest)
    for number, (line, paragraphs) in enumerate(blocks):
        if not paragraphs:
            if number == 0 and title is not None:
                continue  # a title-only first block
            raise SourceError(path, "empty page between '---' separators", line)
        if any(p.startswith("# ") for _, p in paragraphs):
            bad = next(n for n, p in paragraphs if p.startswith("# "))
            raise SourceError(path, "a '# ' title is only allowed at the top of the story", bad)
        pages.append((paragraphs[0][0], "\n\n".join(p for _, p in paragraphs), None))
    items: list[SourceItem] = []
    offset = 0 if title is not None else 1
    for index, (line, page_text, page_title) in enumerate(pages):
        for what, value in (("text", page_text), ("title", page_title or "")):
            if len(value) > limit:
                raise SourceError(
                    path, f"{what} is {len(value)} characters long (max_text_chars = {limit})", line
                )
        number = index + offset
        subject = page_title if page_title else page_text
        item_params: dict[str, Any] = {
            "page": number,
            "seed": base_seed + number,
            "prompt": f"{style}. {subject}" if style else subject,
        }
        if page_title:
            item_params["title"] = page_title
        items.append(make_item(page_key(number), number, page_text, item_params))
    if len(items) <= (1 if title is not None else 0):
        raise SourceError(path, "no pages found (separate pages with a line holding only ---)")
    return items
