"""Exports of completed current takes: datasets, picture books and chosen variants.

Every export is atomic: it is built in a temp folder beside ``OUT`` and renamed
to ``OUT`` at the end, so ``OUT`` is either complete or absent; an existing
``OUT`` is never overwritten, and of two exports to one ``OUT`` one wins (the
other fails, nothing left behind). Files are independent copies (reflinks where the
file system can), never hard links, checked against their recorded sha256. Each
item's current take is exported unless it is stale; everything else is listed in
the report with the reason.

Formats:

* LJSpeech (keithito.com/LJ-Speech-Dataset): ``wavs/ID.wav`` and ``metadata.csv``
  with ``ID|Transcription|Normalized Transcription``, no header, no quoting.
* Hugging Face ``audiofolder`` (huggingface.co/docs/datasets/audio_load):
  ``metadata.csv`` with a header ``file_name,transcription`` and the audio files
  it names (``wavs/ID.wav``).
* NeMo ASR/TTS manifest (NVIDIA NeMo docs, "Preparing Custom ASR Data"): JSON lines
  ``{"audio_filepath": ABSOLUTE_PATH, "duration": SECONDS, "text": TEXT}`` in
  ``manifest.json``.
* Pages: ``page_000.png`` ... and ``book.pdf`` (fpdf2: a cover, then one page per story
  page with its picture and its text once, in an embedded font; see :mod:`.book`).
* Variants: the chosen variant of each photo as ``STEM.png`` (its final from
  ``OUTPUT/finals/`` when one is recorded for the current take; never an out-of-date one).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ..files import copy_file
from ..settings import CollectionConfig, Config
from ..store import Item, Store, Take


@dataclass(frozen=True)
class ExportOptions:
    """How an export is made (``tui-app export`` options); each exporter uses the ones that apply.

    Attributes:
        only_accepted: only takes whose review state is ``accepted``.
        exclude_flagged: (dataset) leave out takes with a QA flag.
        trim_silence: (dataset) cut leading and trailing silence, keeping ``pad_s`` seconds.
        pad_s: (dataset) silence kept at each end when trimming, seconds.
        loudness_lufs: (dataset) normalize each clip's integrated loudness to this, LUFS.
        sample_rate: (dataset) resample every clip to this, Hz.
        val_ratio: (dataset) the share of clips in the validation set (0: no split).
        seed: (dataset) seed of the deterministic train/validation split.
        page_size: (book) ``a4``, ``letter`` or ``square`` (8.5 x 8.5 in).
    """

    only_accepted: bool = False
    exclude_flagged: bool = False
    trim_silence: bool = False
    pad_s: float = 0.1
    loudness_lufs: float | None = None
    sample_rate: int | None = None
    val_ratio: float = 0.0
    seed: int = 0
    page_size: str = "a4"


class ExportError(Exception):
    """The export cannot be made (``OUT`` exists, nothing to export, wrong collection kind)."""


@dataclass
class ExportReport:
    """What an export wrote and what it skipped, with reasons."""

    out: Path
    exported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # exported, with a remark (``KEY: ...``)

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason.split(":")[0]] = reasons.get(reason.split(":")[0], 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return f"exported {self.exported} to {self.out}; skipped: {skipped}"


#: The name of a staging folder (:class:`Staging`): ``.OUT.tmp-`` and 8 hex digits.
_STAGING = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


class Staging:
    """A temp folder beside ``out`` that becomes ``out`` on commit; one export per folder at a time.

    The parent folder is locked (``flock``, released by the kernel if the process dies)
    from the check that ``out`` does not exist until the rename, so of two exports to
    one ``out`` one wins and the other gets :class:`ExportError`. Every export staging in
    that folder holds this lock, so under it any staging folder there (``.NAME.tmp-HEX``)
    is a killed export's: they are removed, whatever ``OUT`` they were for (an export killed
    on its way to ``exports/v1`` is cleaned up by the next export to ``exports/v2``).

    Raises:
        ExportError: ``out`` exists (or appears before the rename).
    """

    def __init__(self, out: Path):
        self.out = out.resolve()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            for stale in self.out.parent.glob(".*.tmp-*"):
                if _STAGING.match(stale.name) and stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)  # a killed export's: we hold the lock
            if self.out.exists():
                raise ExportError(f"{out}: already exists; choose another folder (exports never overwrite)")
            self.tmp = self.out.parent / f".{self.out.name}.tmp-{secrets.token_hex(4)}"
            self.tmp.mkdir()
        except BaseException:
            os.close(self._lock)
            raise

    def __enter__(self) -> Staging:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc_type is None:
                try:
                    if self.out.exists():
                        raise FileExistsError(self.out)
                    os.rename(self.tmp, self.out)
                except OSError:
                    shutil.rmtree(self.tmp, ignore_errors=True)
                    raise ExportError(
                        f"{self.out}: appeared while exporting; nothing was written to it"
                    ) from None
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            os.close(self._lock)  # closing the descriptor drops the flock


def export_copy(config: Config, path: str, sha256: str, what: str, dst: Path) -> None:
    """Copy the recorded file ``path`` (relative to the project root) to ``dst`` as an independent
    file (see :func:`~tui_app.files.copy_file`), checking that the copy has its recorded ``sha256``.

    Raises:
        ExportError: the file is missing or differs from its sha256 (one line naming ``what``,
            e.g. ``dataset/arctic_a0001 take 3``, the file and the fix).
    """
    try:
        copied: str | None = copy_file(config.root / path, dst)
    except FileNotFoundError:
        copied = None
    if copied != sha256:
        why = "is missing" if copied is None else "differs from its recorded sha256"
        raise ExportError(f"{what}: its file {path} {why}; run `tui-app sync --fix`, then export again")


def write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def ready(
    store: Store, coll: CollectionConfig, report: ExportReport, options: ExportOptions | None = None
) -> list[tuple[Item, Take]]:
    """(item, current take) of exportable items; the others go to ``report.skipped``.

    An item's current take is exported whatever later requests did (a regeneration
    pending, failed or cancelled keeps the last completed take current); an item
    without one is skipped with its status, and a stale take (made from other input
    than the item's now) is skipped as ``stale``. With ``options.only_accepted``, a take
    that is not accepted in review is skipped as ``not accepted``.
    """
    only_accepted = options is not None and options.only_accepted
    takes = dict(store.current_takes(coll.name))
    ready = []
    for item in store.items(coll.name):
        take = takes.get(item.key)
        if take is None:
            why = item.status + (
                f": {item.last_error}" if item.status == "failed" and item.last_error else ""
            )
            report.skipped.append(
                (item.key, why if item.status != "completed" else "missing: no current take")
            )
        elif item.stale:
            report.skipped.append((item.key, f"stale: take {take.number} was made from other input"))
        elif only_accepted and take.review != "accepted":
            report.skipped.append((item.key, f"not accepted: take {take.number} is {take.review}"))
        else:
            ready.append((item, take))
    return ready
