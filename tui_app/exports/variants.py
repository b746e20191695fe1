"""Chosen variants: one file per photo, its current final when there is one (see :mod:`tui_app.exports`)."""

from __future__ import annotations

from pathlib import Path

from ..settings import CollectionConfig, Config
from ..store import Item, Store, Take
from . import ExportError, ExportOptions, ExportReport, Staging, export_copy, ready


def export_variants(
    config: Config, store: Store, coll: CollectionConfig, out: Path, options: ExportOptions
) -> ExportReport:
    """Export the chosen variant of each photo as ``STEM.png``: its final when one is recorded for its
    current take (checked against the final's sha256), else the take itself, with a note. An
    out-of-date final (made from an earlier take) is never exported.

    Raises:
        ExportError: ``out`` exists, no variant chosen.
    """
    report = ExportReport(out.resolve())
    chosen = {item.key: item.chosen for item in store.items(coll.name)}
    photos: dict[str, list[tuple[Item, Take]]] = {}
    for item, take in ready(store, coll, report, options):
        photos.setdefault(item.params.get("photo", item.text), []).append((item, take))
    picks = []
    for photo, entries in sorted(photos.items()):
        pick = [(i, t) for i, t in entries if i.chosen == 1]
        if not pick:
            report.skipped.append((photo, "not chosen: no variant of this photo is chosen yet"))
        else:
            picks.append(pick[0])
    report.skipped = [s for s in report.skipped if chosen.get(s[0]) != -1]
    if not picks:
        raise ExportError(
            f"{coll.name}: no chosen variants to export (choose one per photo with `c` in the TUI)"
        )
    with Staging(out) as stage:
        for item, take in picks:
            stem = Path(item.params.get("photo", item.text)).stem
            what = f"{coll.name}/{item.key}"
            final = store.final(item.id)
            if final is not None and final.take_id == take.id:
                dst = stage.tmp / f"{stem}{Path(final.path).suffix}"
                export_copy(config, final.path, final.sha256, f"{what} final of take {take.number}", dst)
            else:
                dst = stage.tmp / f"{stem}{Path(take.path).suffix}"
                export_copy(config, take.path, take.sha256, f"{what} take {take.number}", dst)
                report.notes.append(
                    f"{item.key}: no final of take {take.number} yet, exported the take itself"
                    + (f" (the final of take {final.take_number} is out of date)" if final else "")
                )
        report.exported = len(picks)
    return report
