"""Exports of completed current takes: datasets, picture books and chosen variants.

Every export is atomic: it is built in a temp folder beside ``OUT`` and renamed
to ``OUT`` at the end, so ``OUT`` is either complete or absent; an existing
``OUT`` is never overwritten. Only completed, non-stale current takes are
exported; everything else is listed in the report with the reason.

Formats:

* LJSpeech (keithito.com/LJ-Speech-Dataset): ``wavs/ID.wav`` and ``metadata.csv``
  with ``ID|Transcription|Normalized Transcription``, no header, no quoting.
* Hugging Face ``audiofolder`` (huggingface.co/docs/datasets/audio_load):
  ``metadata.csv`` with a header ``file_name,transcription`` and the audio files
  it names (``wavs/ID.wav``).
* NeMo ASR/TTS manifest (NVIDIA NeMo docs, "Preparing Custom ASR Data"): JSON lines
  ``{"audio_filepath": ABSOLUTE_PATH, "duration": SECONDS, "text": TEXT}`` in
  ``manifest.json``.
* Pages: ``page_000.png`` ... and ``book.pdf`` (one page per story page, the image
  above its text).
* Variants: the chosen variant of each photo as ``STEM.png`` (its finalized file
  from ``OUTPUT/finals/`` when there is one).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CollectionConfig, Config
from ..files import link_or_copy
from ..store import Store

DATASET_FORMATS = ("ljspeech", "audiofolder", "nemo")


class ExportError(Exception):
    """The export cannot be made (``OUT`` exists, nothing to export, wrong collection kind)."""


@dataclass
class ExportReport:
    """What an export wrote and what it skipped, with reasons."""

    out: Path
    exported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return f"exported {self.exported} to {self.out}; skipped: {skipped}"


class _Staging:
    """A temp folder beside ``out`` that becomes ``out`` on commit."""

    def __init__(self, out: Path):
        self.out = out.resolve()
        if self.out.exists():
            raise ExportError(f"{out}: already exists; choose another folder (exports never overwrite)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{secrets.token_hex(4)}"
        self.tmp.mkdir()

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.rename(self.tmp, self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _collection(config: Config, kind: str, name: str | None) -> CollectionConfig:
    if name:
        coll = config.collections.get(name)
        if coll is None or coll.kind != kind:
            raise ExportError(f"no {kind} collection named {name!r}")
        return coll
    for coll in config.collections.values():
        if coll.kind == kind:
            return coll
    raise ExportError(f"no {kind} collection in {config.path}")


def _ready(store: Store, coll: CollectionConfig, report: ExportReport) -> list[tuple[object, dict]]:
    """(item, current take) of exportable items; the others go to ``report.skipped``."""
    takes = dict(store.current_takes(coll.name))
    ready = []
    for item in store.items(coll.name):
        if item.status != "completed":
            why = item.status + (
                f": {item.last_error}" if item.status == "failed" and item.last_error else ""
            )
            report.skipped.append((item.key, why))
        elif item.stale:
            report.skipped.append((item.key, "stale: its text changed after the take"))
        elif item.key not in takes:
            report.skipped.append((item.key, "missing: no current take"))
        else:
            ready.append((item, takes[item.key]))
    return ready


def export_dataset(
    config: Config, store: Store, out: Path, *, fmt: str = "ljspeech", collection: str | None = None
) -> ExportReport:
    """Export a dataset collection as LJSpeech, HF audiofolder or a NeMo manifest.

    Raises:
        ExportError: unknown format, ``out`` exists, no such collection, nothing completed.
    """
    if fmt not in DATASET_FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(DATASET_FORMATS)})")
    coll = _collection(config, "dataset", collection)
    report = ExportReport(out.resolve())
    ready = _ready(store, coll, report)
    if not ready:
        raise ExportError(f"{coll.name}: no completed entries to export")
    with _Staging(out) as stage:
        (stage.tmp / "wavs").mkdir()
        rows = []
        for item, take in ready:
            link_or_copy(config.root / take["path"], stage.tmp / "wavs" / f"{item.key}.wav")
            normalized = item.params.get("normalized") or item.text
            rows.append((item.key, item.text, normalized, take))
        if fmt == "ljspeech":
            _write(
                stage.tmp / "metadata.csv",
                "".join(f"{k}|{_one_line(t)}|{_one_line(n)}\n" for k, t, n, _ in rows),
            )
        elif fmt == "audiofolder":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["file_name", "transcription"])
            writer.writerows([f"wavs/{k}.wav", t] for k, t, _, _ in rows)
            _write(stage.tmp / "metadata.csv", buf.getvalue())
        else:
            _write(
                stage.tmp / "manifest.json",
                "".join(
                    json.dumps(
                        {
                            "audio_filepath": str(stage.out / "wavs" / f"{k}.wav"),
                            "duration": round(take["duration_s"] or 0.0, 3),
                            "text": n,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                    for k, _, n, take in rows
                ),
            )
        report.exported = len(rows)
    return report


def _one_line(text: str) -> str:
    return " ".join(text.replace("|", " ").split())


def export_pages(config: Config, store: Store, out: Path, *, collection: str | None = None) -> ExportReport:
    """Export numbered page PNGs and ``book.pdf`` (each page's image above its text).

    Raises:
        ExportError: ``out`` exists, no pages collection, nothing completed.
    """
    from PIL import Image

    coll = _collection(config, "pages", collection)
    report = ExportReport(out.resolve())
    ready = _ready(store, coll, report)
    if not ready:
        raise ExportError(f"{coll.name}: no completed pages to export")
    with _Staging(out) as stage:
        book = []
        for item, take in ready:
            src = config.root / take["path"]
            link_or_copy(src, stage.tmp / f"{item.key}{src.suffix}")
            with Image.open(src) as img:
                book.append(book_page(img.convert("RGB"), item.params.get("title") or "", item.text))
        book[0].save(stage.tmp / "book.pdf", "PDF", save_all=True, append_images=book[1:], resolution=150)
        report.exported = len(ready)
    return report


def book_page(image, title: str, text: str, width: int = 1240):
    """One picture-book page (RGB, ``width`` px wide): the image, then the title and text below it."""
    from PIL import Image, ImageDraw, ImageFont

    scale = width / image.width
    picture = image.resize((width, max(1, round(image.height * scale))), Image.Resampling.LANCZOS)
    font = ImageFont.load_default(size=30)
    title_font = ImageFont.load_default(size=44)
    margin = 60
    lines: list[tuple[str, object]] = []
    if title:
        lines += [(line, title_font) for line in _wrap(title, title_font, width - 2 * margin)]
    for paragraph in text.split("\n\n"):
        lines += [(line, font) for line in _wrap(paragraph, font, width - 2 * margin)] + [("", font)]
    line_h = 44
    page = Image.new("RGB", (width, picture.height + margin * 2 + line_h * len(lines)), "white")
    page.paste(picture, (0, 0))
    draw = ImageDraw.Draw(page)
    y = picture.height + margin
    for line, f in lines:
        draw.text((margin, y), line, fill=(30, 30, 30), font=f)
        y += line_h + (16 if f is title_font else 0)
    return page


def _wrap(text: str, font, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def export_variants(
    config: Config, store: Store, out: Path, *, collection: str | None = None
) -> ExportReport:
    """Export the chosen variant of each photo as ``STEM.png`` (the finalized file when present).

    Raises:
        ExportError: ``out`` exists, no variants collection, no variant chosen.
    """
    coll = _collection(config, "variants", collection)
    report = ExportReport(out.resolve())
    chosen = dict(
        store.conn.execute(
            "SELECT key, chosen FROM items WHERE collection=? AND retired=0", (coll.name,)
        ).fetchall()
    )
    ready = _ready(store, coll, report)
    photos: dict[str, list] = {}
    for item, take in ready:
        photos.setdefault(item.params.get("photo", item.text), []).append((item, take))
    picks = []
    for photo, entries in sorted(photos.items()):
        pick = [(i, t) for i, t in entries if chosen.get(i.key) == 1]
        if not pick:
            report.skipped.append((photo, "not chosen: no variant of this photo is chosen yet"))
        else:
            picks.append(pick[0])
    report.skipped = [s for s in report.skipped if chosen.get(s[0]) != -1]
    if not picks:
        raise ExportError(
            f"{coll.name}: no chosen variants to export (choose one per photo with `c` in the TUI)"
        )
    with _Staging(out) as stage:
        for item, take in picks:
            stem = Path(item.params.get("photo", item.text)).stem
            finals = (
                sorted((coll.output / "finals").glob(f"{item.key}*"))
                if (coll.output / "finals").is_dir()
                else []
            )
            src = finals[-1] if finals else config.root / take["path"]
            link_or_copy(src, stage.tmp / f"{stem}{src.suffix}")
        report.exported = len(picks)
    return report
