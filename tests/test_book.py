"""The picture book export: ``book.pdf`` read back with pypdf, and the numbered page PNGs."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path

import anyio
import pytest
from conftest import write_project
from PIL import Image
from pypdf import PdfReader

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.exports import ExportError, ExportOptions
from tui_app.exports.book import PAGE_SIZES, curly_quotes
from tui_app.project import Project

TITLE = "The Tale of Peter Rabbit"
PAGES = 4  # story pages; the book has these plus the cover
#: page width x height in PDF points (1/72 in): A4 210 x 297 mm, US Letter 8.5 x 11 in, 8.5 in square
SIZES_PT = {"a4": (595.28, 841.89), "letter": (612.0, 792.0), "square": (612.0, 612.0)}


def _pillow_project(root: Path, pages: int = PAGES) -> Path:
    """The demo story's first ``pages`` pages, pictures by the real ``pillow`` provider (128 x 96 px)."""
    config = write_project(root, pages=pages, photos=1, extra='\n[providers.draw]\nkind = "pillow"\n')
    text = config.read_text()
    table = 'source = "data/story.md"\nprovider = "simulated"'
    assert table in text
    config.write_text(text.replace(table, 'source = "data/story.md"\nprovider = "draw"'))
    return config


def _generate(config: Path) -> Project:
    project = Project.open(load_config(config))
    project.import_sources()
    engine = Engine(project)
    anyio.run(lambda: engine.run(["pages"]))
    return project


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """(project, its root) with the cover and the first four pages completed by ``pillow``."""
    root = tmp_path_factory.mktemp("book")
    return _generate(_pillow_project(root)), root


def _fonts(reader: PdfReader) -> dict[str, dict]:
    """Every font used on any page: base name -> font descriptor."""
    fonts = {}
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descriptor = font.get("/FontDescriptor")
            if descriptor is None and "/DescendantFonts" in font:  # Type0 (composite) font
                descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
            fonts[str(font["/BaseFont"])] = descriptor.get_object() if descriptor is not None else {}
    return fonts


def _images(page) -> list:
    return [
        x for x in page["/Resources"].get("/XObject", {}).values() if x.get_object()["/Subtype"] == "/Image"
    ]


@pytest.mark.parametrize("size", ["a4", "letter", "square"])
def test_book_pdf_is_typeset_with_embedded_fonts_and_story_metadata(book, tmp_path, size):
    project, _ = book
    report = project.export("pages", tmp_path / "out", options=ExportOptions(page_size=size))
    assert report.exported == PAGES + 1 and report.skipped == []
    reader = PdfReader(tmp_path / "out" / "book.pdf")
    assert len(reader.pages) == PAGES + 1
    assert reader.metadata.title == TITLE and reader.metadata.author == "Beatrix Potter"
    for page in reader.pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (width, height) == pytest.approx(SIZES_PT[size], abs=0.01)
        assert (width, height) == pytest.approx(PAGE_SIZES[size], abs=0.01)
        assert len(_images(page)) == 1  # the picture
    fonts = _fonts(reader)
    assert fonts and all(
        any(k in d for k in ("/FontFile", "/FontFile2", "/FontFile3")) for d in fonts.values()
    ), fonts
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    cover = texts[0]
    assert TITLE in cover and "By Beatrix Potter" in cover
    assert "One page per block" not in cover and "public domain" not in cover
    items = project.store.items("pages")
    for number, (item, text) in enumerate(zip(items[1:], texts[1:], strict=True), start=1):
        words = " ".join(curly_quotes(item.text).split())
        assert text.count(words) == 1, (number, text)  # the page's text, once
        assert text.endswith(str(number))  # its folio
    assert "their names were\u2014 Flopsy, Mopsy, Cotton-tail, and Peter." in texts[1]
    assert "\u2018Now, my dears,\u2019 said old Mrs. Rabbit" in texts[3]
    assert "don\u2019t go into Mr. McGregor\u2019s garden" in texts[3]


def test_the_numbered_pngs_are_the_takes_and_hold_no_text(book, tmp_path):
    project, root = book
    project.export("pages", tmp_path / "out")
    takes = dict(project.store.current_takes("pages"))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["book.pdf"] + [f"page_{n:03d}.png" for n in range(PAGES + 1)]
    for key, take in takes.items():
        data = (tmp_path / "out" / f"{key}.png").read_bytes()
        assert hashlib.sha256(data).hexdigest() == take.sha256
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")
        # a captioned draft's bottom 28 % is a flat cream panel (250, 244, 228) behind dark text:
        # these pictures carry no caption, the book sets the text once
        bottom = rgb.crop((0, int(rgb.height * 0.8), rgb.width, rgb.height))
        assert (250, 244, 228) not in {c for _, c in bottom.getcolors(1 << 16)}, key


def test_a_cover_without_its_picture_still_has_title_and_byline(tmp_path):
    project = _generate(_pillow_project(tmp_path, pages=2))
    store = project.store
    for item in store.items("pages")[1:]:
        store.review(item.id, "accepted")
    project.export("pages", tmp_path / "out", options=ExportOptions(only_accepted=True, page_size="square"))
    reader = PdfReader(tmp_path / "out" / "book.pdf")
    assert len(reader.pages) == 3
    cover = reader.pages[0]
    assert _images(cover) == [] and TITLE in cover.extract_text()
    assert not (tmp_path / "out" / "page_000.png").exists()


def test_untitled_story_has_no_cover_and_a_title_from_its_file(tmp_path):
    config = write_project(tmp_path, pages=1, photos=1)
    (tmp_path / "data" / "story.md").write_text("First page.\n\n---\n\nSecond \u201cpage\u201d.\n")
    project = _generate(config)
    project.export("pages", tmp_path / "out")
    reader = PdfReader(tmp_path / "out" / "book.pdf")
    assert len(reader.pages) == 2 and reader.metadata.title == "story" and reader.metadata.author is None
    assert "Second \u201cpage\u201d." in reader.pages[1].extract_text()


def test_unknown_page_size_and_text_too_long_are_one_line_errors(tmp_path):
    config = write_project(tmp_path, pages=1, photos=1)
    text = config.read_text().replace("width = 128\n", "width = 128\nmax_text_chars = 30000\n", 1)
    config.write_text(text)
    (tmp_path / "data" / "story.md").write_text("# T\n\n---\n\n" + "All work and no play. " * 1000 + "\n")
    project = _generate(config)
    with pytest.raises(ExportError, match=r"page_size: 'a5' is not one of a4, letter, square"):
        project.export("pages", tmp_path / "a5", options=ExportOptions(page_size="a5"))
    with pytest.raises(ExportError, match=r"^page_001: its text does not fit a square page even at 8 pt"):
        project.export("pages", tmp_path / "sq", options=ExportOptions(page_size="square"))
    assert not (tmp_path / "sq").exists() and not (tmp_path / "a5").exists()


def test_curly_quotes():
    assert (
        curly_quotes("'Now, my dears,' said old Mrs. Rabbit")
        == "\u2018Now, my dears,\u2019 said old Mrs. Rabbit"
    )
    assert curly_quotes("don't go to Mr. McGregor's") == "don\u2019t go to Mr. McGregor\u2019s"
    assert curly_quotes("sneezed\u2014'Kertyschoo!'") == "sneezed\u2014\u2018Kertyschoo!\u2019"
    assert curly_quotes("\"'Hi,' he said,\" she wrote") == "\u201c\u2018Hi,\u2019 he said,\u201d she wrote"
    assert curly_quotes('("quoted")') == "(\u201cquoted\u201d)"


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="pdftoppm (poppler-utils) is not installed")
def test_a_page_renders(book, tmp_path):
    project, _ = book
    project.export("pages", tmp_path / "out", options=ExportOptions(page_size="letter"))
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "50",
            "-png",
            "-f",
            "2",
            "-l",
            "2",
            str(tmp_path / "out" / "book.pdf"),
            str(tmp_path / "p"),
        ],
        check=True,
    )
    [png] = tmp_path.glob("p*.png")
    with Image.open(png) as img:
        assert img.size == (425, 550)  # 8.5 x 11 in at 50 dpi
