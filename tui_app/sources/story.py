"""Story sources: markdown with pages separated by lines holding only ``---``.

Layout::

    # The Tale of Peter Rabbit          <- title: makes the cover, page 0

    By Beatrix Potter (1901 edition).   <- optional byline paragraph, when the first block
    One page per block; ...                has more than one paragraph after the title

    Once upon a time there were ...     <- page 1 (the first block's last paragraphs)

    ---

    They lived with their Mother ...    <- page 2

The byline paragraph's first sentence is the byline: the cover's text, without its
parenthesized remarks and final full stop (``By Beatrix Potter``); the author is the
byline after its ``by`` (``Beatrix Potter``). The rest of that paragraph is a note
about the file (how it is laid out, where it comes from) and is not part of the book.
A full stop after an initial (``J. M. Barrie``) or a title (``Mrs.``) does not end
the sentence.

Within a page, paragraphs are kept (joined by a blank line) and the lines of
one paragraph are joined by spaces. Without a ``# `` title there is no cover
and pages start at 1. Lines end with LF or CRLF; no other control character
(Unicode category Cc) but tab is accepted, and a page's text is at most the
collection's ``max_text_chars`` characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..store.rows import SourceItem
from . import DEFAULT_MAX_TEXT_CHARS, SourceError, control_name, first_control, make_item, read_text


def page_key(number: int) -> str:
    """Item key of page ``number``: ``page_000`` is the cover."""
    return f"page_{number:03d}"


#: Words whose full stop does not end a byline's sentence (besides single-letter initials).
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "mme", "mlle", "dr", "prof", "rev", "st", "sr", "jr"})
#: Initials before a full stop: ``J``, ``A.A``.
_INITIALS = re.compile(r"(?:[A-Z]\.)*[A-Z]")
#: A parenthesized remark with the space before it.
_REMARK = re.compile(r"\s*\([^()]*\)")
#: Everything up to and including the first "by " of a byline ("By ", "Written and illustrated by ").
_BY = re.compile(r"^.*?\bby\s+", re.IGNORECASE)


def _is_abbreviation(before: str) -> bool:
    """True when the word ending ``before`` (just before a full stop) is an initial or a title."""
    words = before.split()
    word = words[-1].lstrip("(\"'\u2018\u201c") if words else ""
    return _INITIALS.fullmatch(word) is not None or word.lower() in _ABBREVIATIONS


def _first_sentence(paragraph: str) -> str:
    """The paragraph up to its first sentence end (``.``, ``!`` or ``?`` before a space or the end,
    outside parentheses, not after an initial or a title); the whole paragraph when it has none."""
    depth = 0
    for index, char in enumerate(paragraph):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char in ".!?" and depth == 0:
            if index + 1 < len(paragraph) and not paragraph[index + 1].isspace():
                continue
            if char == "." and _is_abbreviation(paragraph[:index]):
                continue
            return paragraph[: index + 1]
    return paragraph


def byline_and_author(paragraph: str) -> tuple[str, str]:
    """(byline, author) of a story's byline paragraph (see the module docstring).

    ``"By Beatrix Potter (1901 edition; public domain). One page per block."`` gives
    ``("By Beatrix Potter", "Beatrix Potter")``; a byline without ``by`` is its own author.
    """
    byline = _REMARK.sub("", _first_sentence(paragraph)).strip()
    if byline.endswith(".") and not _is_abbreviation(byline[:-1]):
        byline = byline[:-1].rstrip()
    author = _BY.sub("", byline, count=1) if _BY.match(byline) else byline
    return byline, author.rstrip("!?").strip()


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

    Each page item: key ``page_NNN``, ordinal = page number, text = page text (the cover's:
    its byline), params = {page, prompt (style + text), seed (collection seed + page number),
    title and, with a byline, author (cover)}.

    Raises:
        SourceError: an empty story, no pages, an empty page (with its line), a control character other than
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
    if not text.strip():
        raise SourceError(path, "the story is empty (write its pages, separated by lines holding only ---)")
    limit = int(params.get("max_text_chars", DEFAULT_MAX_TEXT_CHARS))
    style = str(params.get("style", ""))
    base_seed = int(params.get("seed", 0))
    blocks = _blocks(text)
    pages: list[tuple[int, str, str | None]] = []  # (line, text, title)
    title = None
    author = ""
    first_line, first = blocks[0]
    if first and first[0][1].startswith("# "):
        title_line, title = first[0][0], first[0][1][2:].strip()
        rest = first[1:]
        byline = ""
        if len(rest) > 1:
            byline, author = byline_and_author(rest[0][1])
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
            if author:
                item_params["author"] = author
        items.append(make_item(page_key(number), number, page_text, item_params))
    if len(items) <= (1 if title is not None else 0):
        raise SourceError(path, "no pages found (separate pages with a line holding only ---)")
    return items
