"""The picture book: numbered page PNGs and ``book.pdf`` (see :mod:`tui_app.exports`)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..render.pages import wrap
from ..settings import CollectionConfig, Config
from ..store import Store
from . import ExportError, ExportOptions, ExportReport, Staging, export_copy, ready


def export_pages(
    config: Config, store: Store, coll: CollectionConfig, out: Path, options: ExportOptions
) -> ExportReport:
    """Export numbered page PNGs and ``book.pdf`` (each page's image above its text).

    Raises:
        ExportError: ``out`` exists, no pages collection, nothing completed.
    """
    report = ExportReport(out.resolve())
    found = ready(store, coll, report)
    if not found:
        raise ExportError(f"{coll.name}: no completed pages to export")
    with Staging(out) as stage:
        book = []
        for item, take in found:
            page = stage.tmp / f"{item.key}{Path(take.path).suffix}"
            export_copy(config, take.path, take.sha256, f"{coll.name}/{item.key} take {take.number}", page)
            with Image.open(page) as img:
                book.append(book_page(img.convert("RGB"), item.params.get("title") or "", item.text))
        book[0].save(stage.tmp / "book.pdf", "PDF", save_all=True, append_images=book[1:], resolution=150)
        report.exported = len(found)
    return report


def book_page(image: Image.Image, title: str, text: str, width: int = 1240) -> Image.Image:
    """One picture-book page (RGB, ``width`` px wide): the image, then the title and text below it."""
    scale = width / image.width
    picture = image.resize((width, max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    font = ImageFont.load_default(size=30)
    title_font = ImageFont.load_default(size=44)
    margin = 60
    inner = width - 2 * margin  # text width, px
    lines: list[tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]] = []
    if title:
        lines += [(line, title_font) for line in wrap(" ".join(title.split()), title_font, inner)]
    for paragraph in text.split("\n\n"):
        lines += [(line, font) for line in wrap(" ".join(paragraph.split()), font, inner)] + [("", font)]
    line_h = 44
    page = Image.new("RGB", (width, picture.height + margin * 2 + line_h * len(lines)), "white")
    page.paste(picture, (0, 0))
    draw = ImageDraw.Draw(page)
    y = picture.height + margin
    for line, f in lines:
        draw.text((margin, y), line, fill=(30, 30, 30), font=f)
        y += line_h + (16 if f is title_font else 0)
    return page
