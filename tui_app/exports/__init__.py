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

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ..settings import CollectionConfig
from ..store import Item, Store, Take


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


class Staging:
    """A temp folder beside ``out`` that becomes ``out`` on commit."""

    def __init__(self, out: Path):
        self.out = out.resolve()
        if self.out.exists():
            raise ExportError(f"{out}: already exists; choose another folder (exports never overwrite)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{secrets.token_hex(4)}"
        self.tmp.mkdir()

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            os.rename(self.tmp, self.out)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def ready(store: Store, coll: CollectionConfig, report: ExportReport) -> list[tuple[Item, Take]]:
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
