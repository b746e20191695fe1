"""Dataset exports: LJSpeech, Hugging Face audiofolder and a NeMo manifest (see :mod:`tui_app.exports`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..settings import CollectionConfig, Config
from ..store import Store
from . import ExportError, ExportOptions, ExportReport, Staging, export_copy, ready, write_text

DATASET_FORMATS = ("ljspeech", "audiofolder", "nemo")


def export_dataset(
    config: Config,
    store: Store,
    coll: CollectionConfig,
    out: Path,
    options: ExportOptions,
    *,
    fmt: str = "ljspeech",
) -> ExportReport:
    """Export a dataset collection as LJSpeech, HF audiofolder or a NeMo manifest.

    Raises:
        ExportError: unknown format, ``out`` exists, no such collection, nothing completed.
    """
    if fmt not in DATASET_FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(DATASET_FORMATS)})")
    report = ExportReport(out.resolve())
    found = ready(store, coll, report)
    if not found:
        raise ExportError(f"{coll.name}: no completed entries to export")
    with Staging(out) as stage:
        (stage.tmp / "wavs").mkdir()
        rows = []
        for item, take in found:
            wav = stage.tmp / "wavs" / f"{item.key}.wav"
            export_copy(config, take.path, take.sha256, f"{coll.name}/{item.key} take {take.number}", wav)
            normalized = item.params.get("normalized") or item.text
            rows.append((item.key, item.text, normalized, take))
        if fmt == "ljspeech":
            write_text(
                stage.tmp / "metadata.csv",
                "".join(f"{k}|{_one_line(t)}|{_one_line(n)}\n" for k, t, n, _ in rows),
            )
        elif fmt == "audiofolder":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(["file_name", "transcription"])
            writer.writerows([f"wavs/{k}.wav", t] for k, t, _, _ in rows)
            write_text(stage.tmp / "metadata.csv", buf.getvalue())
        else:
            write_text(
                stage.tmp / "manifest.json",
                "".join(
                    json.dumps(
                        {
                            "audio_filepath": str(stage.out / "wavs" / f"{k}.wav"),
                            "duration": round(take.duration_s or 0.0, 3),
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
