"""The picture book: numbered page PNGs and ``book.pdf`` (see :mod:`tui_app.exports`).

``book.pdf`` is typeset with fpdf2 (a PDF library in pure Python): a cover (the story's
title, its byline and the cover picture), then one page per story page: its picture
above its text, set once, and its page number. The text is real PDF text in Open Sans
(Apache-2.0, shipped by the ``ttf-opensans`` package; subset and embedded), so it can be
selected, searched and copied, with the story's em dashes and curly quotes (straight
quotes in the story are set as curly ones). The document's title and author come from
the story (its ``# `` title and byline).

Page sizes (:attr:`~tui_app.exports.ExportOptions.page_size`): ``a4`` (210 x 297 mm),
``letter`` (8.5 x 11 in) and ``square`` (8.5 x 8.5 in), with 0.75 in margins. Page
pictures are exactly the exported PNGs, embedded losslessly and scaled to fit; a page
whose text is long gets a smaller type size (down to 8 pt) and a smaller picture.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from ..files import atomic_write
from ..settings import CollectionConfig, Config
from ..store import Item, Store
from . import ExportError, ExportOptions, ExportReport, Staging, export_copy, ready

if TYPE_CHECKING:
    from fpdf import FPDF

POINTS_PER_INCH = 72.0
#: (width, height) of each page size, PDF points (1/72 in).
PAGE_SIZES: dict[str, tuple[float, float]] = {
    "a4": (210 / 25.4 * POINTS_PER_INCH, 297 / 25.4 * POINTS_PER_INCH),
    "letter": (8.5 * POINTS_PER_INCH, 11 * POINTS_PER_INCH),
    "square": (8.5 * POINTS_PER_INCH, 8.5 * POINTS_PER_INCH),
}
MARGIN = 0.75 * POINTS_PER_INCH  # pt, every side
TEXT_PT = 16.0  # body type size, pt; shrinks to MIN_TEXT_PT for long pages
MIN_TEXT_PT = 8.0
LEADING = 1.45  # line height / type size
TITLE_PT = 34.0
BYLINE_PT = 17.0
FOLIO_PT = 9.0  # page numbers
GAP = 20.0  # pt between the picture and the text
#: fpdf2 style -> Open Sans file in the ttf-opensans package (body, title, byline).
FONTS = {"": "OpenSans-Regular.ttf", "B": "OpenSans-Bold.ttf", "I": "OpenSans-Italic.ttf"}
INK = (40, 34, 30)  # text colour, RGB

_OPENING = re.compile(r"(^|[\s(\[{\u2014\u2013\"'\u201c\u2018-])(['\"])")


def curly_quotes(text: str) -> str:
    """``text`` with straight quotes set as curly ones: an opening ``‘``/``“`` at the start, after a
    space, a bracket or a dash, else a closing ``’``/``”`` (so ``don't`` gets an apostrophe ``’``)."""
    opened = {"'": "\u2018", '"': "\u201c"}
    previous = None
    while previous != text:  # adjacent quotes ("'Now") need a second pass
        previous = text
        text = _OPENING.sub(lambda m: m.group(1) + opened[m.group(2)], text)
    return text.replace("'", "\u2019").replace('"', "\u201d")


@dataclass(frozen=True)
class _Story:
    """What the book says about its story: the PDF's title and author, the cover's text."""

    title: str
    byline: str
    author: str


def export_pages(
    config: Config, store: Store, coll: CollectionConfig, out: Path, options: ExportOptions
) -> ExportReport:
    """Export numbered page PNGs and ``book.pdf`` (see the module docstring) to the folder ``out``.

    Each exported page (its current, completed, non-stale take) becomes ``page_NNN.png``
    and one PDF page. The cover page is made whenever the story has a title, with the
    cover picture when the cover's take is exported too.

    Raises:
        ExportError: ``out`` exists, nothing completed, an unknown ``options.page_size``, a page
            whose text cannot fit its page, fpdf2 or ttf-opensans missing.
    """
    size = PAGE_SIZES.get(options.page_size)
    if size is None:
        raise ExportError(f"page_size: {options.page_size!r} is not one of {', '.join(PAGE_SIZES)}")
    report = ExportReport(out.resolve())
    found = ready(store, coll, report, options)
    if not found:
        raise ExportError(f"{coll.name}: no completed pages to export")
    items = store.items(coll.name)
    cover = next((item for item in items if item.params.get("title")), None)
    story = _story(cover, coll)
    with Staging(out) as stage:
        pictures: dict[str, Path] = {}
        for item, take in found:
            page = stage.tmp / f"{item.key}{Path(take.path).suffix}"
            export_copy(config, take.path, take.sha256, f"{coll.name}/{item.key} take {take.number}", page)
            pictures[item.key] = page
        pdf = _new_pdf(size, story)
        if cover is not None:
            _cover_page(pdf, story, pictures.get(cover.key))
        for item, _ in found:
            if cover is None or item.key != cover.key:
                _story_page(pdf, item, pictures[item.key], options.page_size)
        atomic_write(stage.tmp / "book.pdf", bytes(pdf.output()))
        report.exported = len(found)
    return report


def _story(cover: Item | None, coll: CollectionConfig) -> _Story:
    """Title, byline and author from the cover item (page 0); the source's name without a cover."""
    if cover is None:
        return _Story(coll.source.stem.replace("_", " "), "", "")
    return _Story(str(cover.params["title"]), cover.text, str(cover.params.get("author") or ""))


def _new_pdf(size: tuple[float, float], story: _Story) -> FPDF:
    """An empty document of ``size`` pt pages with the story's metadata and the book's fonts.

    Raises:
        ExportError: fpdf2 or ttf-opensans is not installed.
    """
    try:
        from fpdf import FPDF

        fonts = importlib.resources.files("ttf_opensans") / "ttf"
    except ModuleNotFoundError as exc:
        raise ExportError(f"book.pdf needs the {exc.name} package: pip install fpdf2 ttf-opensans") from None
    pdf = FPDF(unit="pt", format=size)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(False)
    pdf.set_title(story.title)
    if story.author:
        pdf.set_author(story.author)
    pdf.set_creator("tui_app")
    pdf.set_subject(f"{story.title}, a picture book")
    for style, name in FONTS.items():
        with importlib.resources.as_file(fonts / name) as path:
            pdf.add_font("OpenSans", style, path)
    pdf.set_text_color(*INK)
    return pdf


def _size(path: Path) -> tuple[int, int]:
    """(width, height) of the picture at ``path``, px (reads the header only)."""
    with Image.open(path) as img:
        return img.size


def _fitted_height(path: Path, width: float, height: float) -> float:
    """Height (pt) the picture at ``path`` takes when as large as fits ``width`` x ``height`` pt."""
    if width <= 1 or height <= 1:
        return 0.0
    px_w, px_h = _size(path)
    return min(height, width * px_h / px_w)


def _picture(pdf: FPDF, path: Path, y: float, height: float) -> None:
    """Place the picture at ``path`` ``height`` pt high at ``y`` pt, centred across the page."""
    px_w, px_h = _size(path)
    width = height * px_w / px_h
    pdf.image(str(path), x=(pdf.w - width) / 2, y=y, w=width, h=height)


def _lines(pdf: FPDF, text: str, width: float) -> int:
    """How many lines ``text`` takes in the current font, ``width`` pt wide."""
    lines = pdf.multi_cell(width, text=text, dry_run=True, output="LINES")
    assert isinstance(lines, list)
    return len(lines)


def _text_height(pdf: FPDF, paragraphs: list[str], width: float, size: float) -> float:
    """Height (pt) ``paragraphs`` take in the body font at ``size`` pt, ``width`` pt wide."""
    pdf.set_font("OpenSans", "", size)
    lines = sum(_lines(pdf, p, width) for p in paragraphs)
    return size * LEADING * lines + size * 0.6 * (len(paragraphs) - 1)


def _cover_page(pdf: FPDF, story: _Story, picture: Path | None) -> None:
    """The cover: the title, the byline, then the cover picture (when there is one) below them,
    centred on the page as one block."""
    pdf.add_page()
    width, height = pdf.w - 2 * MARGIN, pdf.h - 2 * MARGIN
    title, byline = curly_quotes(story.title), curly_quotes(story.byline)
    pdf.set_font("OpenSans", "B", TITLE_PT)
    text_h = TITLE_PT * 1.2 * _lines(pdf, title, width)
    if byline:
        pdf.set_font("OpenSans", "I", BYLINE_PT)
        text_h += BYLINE_PT * 0.8 + BYLINE_PT * LEADING * _lines(pdf, byline, width)
    picture_h = _fitted_height(picture, width, height - text_h - 2 * GAP) if picture else 0.0
    top = MARGIN + (height - text_h - (2 * GAP + picture_h if picture_h else 0.0)) / 2
    pdf.set_xy(MARGIN, top)
    pdf.set_font("OpenSans", "B", TITLE_PT)
    pdf.multi_cell(width, TITLE_PT * 1.2, title, align="C", new_x="LMARGIN", new_y="NEXT")
    if byline:
        pdf.set_font("OpenSans", "I", BYLINE_PT)
        pdf.set_y(pdf.get_y() + BYLINE_PT * 0.8)
        pdf.multi_cell(width, BYLINE_PT * LEADING, byline, align="C", new_x="LMARGIN", new_y="NEXT")
    if picture and picture_h:
        _picture(pdf, picture, pdf.get_y() + 2 * GAP, picture_h)


def _story_page(pdf: FPDF, item: Item, picture: Path, page_size: str) -> None:
    """One story page: its picture, then its text (once) below it, centred on the page as one
    block; its page number in the bottom margin.

    Raises:
        ExportError: the text does not fit the page even at :data:`MIN_TEXT_PT`.
    """
    pdf.add_page()
    width, height = pdf.w - 2 * MARGIN, pdf.h - 2 * MARGIN
    paragraphs = [curly_quotes(" ".join(p.split())) for p in item.text.split("\n\n") if p.strip()]
    size = TEXT_PT if page_size != "square" else TEXT_PT - 1
    text_h = _text_height(pdf, paragraphs, width, size)
    while text_h > height * 0.45 and size > MIN_TEXT_PT:
        size = max(MIN_TEXT_PT, size - 0.5)
        text_h = _text_height(pdf, paragraphs, width, size)
    if text_h > height:
        raise ExportError(
            f"{item.key}: its text does not fit a {page_size} page even at {MIN_TEXT_PT:g} pt; "
            "shorten it or choose a larger page size"
        )
    picture_h = _fitted_height(picture, width, height - text_h - GAP)
    top = MARGIN + (height - text_h - (picture_h + GAP if picture_h else 0.0)) / 2
    if picture_h:
        _picture(pdf, picture, top, picture_h)
        top += picture_h + GAP
    pdf.set_xy(MARGIN, top)
    pdf.set_font("OpenSans", "", size)
    for index, paragraph in enumerate(paragraphs):
        if index:
            pdf.set_y(pdf.get_y() + size * 0.6)
        pdf.multi_cell(width, size * LEADING, paragraph, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("OpenSans", "", FOLIO_PT)
    pdf.set_xy(MARGIN, pdf.h - MARGIN / 2 - FOLIO_PT * LEADING / 2)
    pdf.cell(width, FOLIO_PT * LEADING, str(item.params.get("page", item.ordinal)), align="C")
