"""Chosen variants: one file per photo, the finalized one when there is one (see :mod:`tui_app.exports`)."""

from __future__ import annotations

from pathlib import Path

from ..files import link_or_copy
from ..settings import CollectionConfig, Config
from ..store import Item, Store, Take
from . import ExportError, ExportReport, Staging, ready


def export_variants(config: Config, store: Store, coll: CollectionConfig, out: Path) -> ExportReport:
    """Export the chosen variant of each photo as ``STEM.png`` (the finalized file when present).

    Raises:
        ExportError: ``out`` exists, no variant chosen.
    """
    report = ExportReport(out.resolve())
    chosen = {item.key: item.chosen for item in store.items(coll.name)}
    photos: dict[str, list[tuple[Item, Take]]] = {}
    for item, take in ready(store, coll, report):
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
            finals = (
                sorted((coll.output / "finals").glob(f"{item.key}*"))
                if (coll.output / "finals").is_dir()
                else []
            )
            src = finals[-1] if finals else config.root / take.path
            link_or_copy(src, stage.tmp / f"{stem}{src.suffix}")
        report.exported = len(picks)
    return report
