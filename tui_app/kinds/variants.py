"""The ``variants`` kind: each photo x each configured slot -> an image; one variant per photo is chosen."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..exports.variants import export_variants
from ..settings import CollectionConfig, TableReader, parse_seed, show
from ..sources.photos import read_photos
from ..store.rows import Item, Row, SourceItem
from .base import Column, Kind, OverrideField
from .columns import TakeParam, error, review

#: The slots every project has; ``preset:NAME`` or ``NAME`` refers to a ``[presets.NAME]`` table.
BUILTIN_SLOTS = ("forensic", "balanced", "creative")


def _temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def _chosen(row: Row) -> str:
    return {1: "chosen", -1: "set aside"}.get(row.chosen, "")


class VariantsKind(Kind):
    """Variants of photos: the forensic slot keeps a pinned seed; a chosen variant is finalized."""

    name = "variants"
    task = "variant"
    choosable = True
    exporters = {"chosen": export_variants}
    columns = (
        Column("photo", 16, lambda r: r.params.get("photo", r.text)),
        Column("slot", 4, lambda r: str(r.params.get("slot", ""))),
        Column("variant", 10, lambda r: str(r.params.get("preset") or r.params.get("variant", ""))),
        # what the current take was made with (a regenerate's override included), not the slot's
        Column("temp", 5, TakeParam("temperature", lambda v: f"{float(v):.2f}", default="0.00")),
        Column(
            "seed", 11, lambda r: str(r.seed if r.seed is not None else (r.params.get("seed") or "random"))
        ),
        Column("status", 10, lambda r: r.status),
        Column("take", 4, lambda r: str(r.take_number or "")),
        Column("rv", 2, review),
        Column("chosen", 9, _chosen),
        Column("error", 40, error),
    )
    override_fields = (
        OverrideField("temperature", "temperature 0..1 (empty = the slot's)", _temperature),
        OverrideField("seed", "seed (empty = new/slot's)", parse_seed),
    )

    def parse_params(self, reader: TableReader, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """``slots`` (built-in or ``[presets.NAME]``), ``extensions``, ``model``, ``size``, ``prompt``."""
        params: dict[str, Any] = {}
        slots = reader.strings("slots", list(BUILTIN_SLOTS), what="slot names")
        for slot in slots or ():
            if slot not in BUILTIN_SLOTS and slot.removeprefix("preset:") not in presets:
                raise reader.error(
                    "slots",
                    f"unknown slot {show(slot)}: use forensic, balanced, creative "
                    "or the name of a [presets.NAME] table",
                )
        params["slots"] = slots
        exts = reader.strings(
            "extensions",
            [".png", ".jpg", ".jpeg", ".webp"],
            pattern=r"\.[^./\\\s]+",
            what='file extensions with their dot (".png")',
        )
        params["extensions"] = [e.lower() for e in exts or ()]
        for key in ("model", "size", "prompt"):
            value = reader.get(key, str, None)
            if value is not None:
                params[key] = value
        return params

    def load_items(
        self, collection: CollectionConfig, presets: Mapping[str, Mapping[str, Any]]
    ) -> list[SourceItem]:
        return read_photos(collection.source, collection.params, presets)

    def seed(self, params: Mapping[str, Any], overrides: Mapping[str, Any], fresh: bool) -> int | None:
        """The forensic slot keeps its pinned seed (42) unless overridden; others follow the base rule."""
        if overrides.get("seed") is None and params.get("variant") == "forensic":
            return int(params["seed"])
        return super().seed(params, overrides, fresh)

    def source_file(self, collection: CollectionConfig, item: Item) -> Path | None:
        """The photo: the item's text is its file name in the source folder."""
        return collection.source / item.text
