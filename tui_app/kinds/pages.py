"""The ``pages`` kind: a story in markdown -> one picture per page (page 0 is the cover)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exports.book import export_pages
from ..settings import MAX_SEED, CollectionConfig, TableReader, parse_seed
from ..sources import DEFAULT_MAX_TEXT_CHARS
from ..sources.story import read_story
from ..store.rows import SourceItem
from .base import Column, Kind, OverrideField
from .columns import error, kilobytes, review


class PagesKind(Kind):
    """The pictures of an illustrated story; the cover is made first so the pages can follow its look."""

    name = "pages"
    task = "picture"
    exporters = {"book": export_pages}
    columns = (
        Column("page", 5, lambda r: str(r.params.get("page", r.ordinal))),
        Column("text", 60, lambda r: r.params.get("title") or r.text),
        Column("status", 10, lambda r: r.status),
        Column("KB", 5, lambda r: kilobytes(r.bytes)),
        Column("take", 4, lambda r: str(r.take_number or "")),
        Column("rv", 2, review),
        Column("seed", 10, lambda r: str(r.seed if r.seed is not None else r.params.get("seed", ""))),
        Column("error", 40, error),
    )
    override_fields = (
        OverrideField("prompt", "prompt (empty = the page's prompt)"),
        OverrideField("seed", "seed (empty = a new random seed)", parse_seed),
    )

    def parse_params(self, reader: TableReader, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """``width``, ``height`` (px, >= 64), ``style``, ``seed`` (0 .. 2**31-1), ``cover_first``,
        ``model``, ``max_text_chars`` (longest page text accepted from the story)."""
        params: dict[str, Any] = {
            "width": reader.number("width", 768, minimum=64, integer=True),
            "height": reader.number("height", 512, minimum=64, integer=True),
            "style": reader.get("style", str, "watercolour picture-book illustration, soft light"),
            "seed": reader.number("seed", 1234, maximum=MAX_SEED, integer=True),
            "cover_first": reader.get("cover_first", bool, True),
            "max_text_chars": reader.number(
                "max_text_chars", DEFAULT_MAX_TEXT_CHARS, minimum=1, integer=True
            ),
        }
        model = reader.get("model", str, None)
        if model is not None:
            params["model"] = model
        return params

    def load_items(
        self, collection: CollectionConfig, presets: Mapping[str, Mapping[str, Any]]
    ) -> list[SourceItem]:
        return read_story(collection.source, collection.params)

    def cover_first(self, params: Mapping[str, Any]) -> bool:
        return bool(params.get("cover_first", True))
