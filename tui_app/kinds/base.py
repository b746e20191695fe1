"""What every collection kind provides: the :class:`Kind` interface and its small value types.

A kind owns everything that differs between a TTS dataset, a picture book and
photo variants: the config keys of its collections, how its source is read,
how an item becomes a provider request (text and seed rules), how its take is
measured, which columns its table shows, which overrides its regenerate
dialog offers, and how it is exported. Code outside :mod:`tui_app.kinds` asks
the kind object and never compares kind names.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..exports import ExportError, ExportOptions, ExportReport
from ..providers.base import Request
from ..settings import CollectionConfig, TableReader
from ..store.rows import Item, Row, SourceItem

if TYPE_CHECKING:
    from ..settings import Config
    from ..store import Store

#: ``exporter(config, store, collection, out)``: writes the new folder ``out``, returns what it did.
Exporter = Callable[["Config", "Store", CollectionConfig, Path, ExportOptions], ExportReport]


@dataclass(frozen=True)
class Column:
    """A table column: title, width in cells, and how to get the cell text from a row."""

    title: str
    width: int
    value: Callable[[Row], str]


@dataclass(frozen=True)
class OverrideField:
    """One field of the regenerate dialog.

    Attributes:
        name: the parameter it overrides (``emotion``, ``seed``, ``temperature``, ``prompt``).
        placeholder: the hint shown in the empty field.
        parse: turns the typed text into the value; raises ValueError for a bad one.
    """

    name: str
    placeholder: str
    parse: Callable[[str], Any] = str


def random_seed() -> int:
    """A fresh random 31-bit seed (fits every generator's seed field)."""
    return secrets.randbelow(2**31)


class Kind:
    """One collection kind. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the kind's name in ``[collections.NAME] kind``.
        task: what its provider makes (``speech``, ``picture``, ``variant``: see
            :data:`tui_app.providers.base.TASKS`); it decides which providers can serve it.
        media: ``audio`` or ``image``: how a take is played or previewed.
        choosable: one item per group is chosen and finalized (variants of a photo).
        measured: takes get QA metrics (speech).
        exporters: its exports by ``--format`` value, the default first; each is called as
            ``exporter(config, store, collection, out, options)``.
        columns: the columns of its table in the TUI.
        override_fields: the fields of its regenerate dialog.
        config_keys: its collection-table keys besides kind, source, output and provider.
    """

    name: ClassVar[str]
    task: ClassVar[str]
    media: ClassVar[str] = "image"
    choosable: ClassVar[bool] = False
    measured: ClassVar[bool] = False
    exporters: ClassVar[Mapping[str, Exporter]]
    columns: ClassVar[tuple[Column, ...]]
    override_fields: ClassVar[tuple[OverrideField, ...]]

    # -- configuration and sources
    def parse_params(self, reader: TableReader, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Read and check the kind's keys of one ``[collections.NAME]`` table.

        Raises:
            ConfigError: a key has a wrong type or value (through ``reader``).
        """
        raise NotImplementedError

    def load_items(
        self, collection: CollectionConfig, presets: Mapping[str, Mapping[str, Any]]
    ) -> list[SourceItem]:
        """Read the collection's source into items, in source order.

        Raises:
            SourceError: the source is missing or malformed (file and line in the message).
        """
        raise NotImplementedError

    # -- generation
    def seed(self, params: Mapping[str, Any], overrides: Mapping[str, Any], fresh: bool) -> int | None:
        """The seed of the next take.

        An override wins; an explicit regeneration (``fresh``) or an item without a
        seed gets a new random 31-bit seed; otherwise the item's seed is reused.
        """
        if overrides.get("seed") is not None:
            return int(overrides["seed"])
        if fresh or params.get("seed") is None:
            return random_seed()
        return int(params["seed"])

    def request_text(self, item: Item, params: Mapping[str, Any]) -> str:
        """The text the provider receives (the item's text unless the kind says otherwise)."""
        return item.text

    def source_file(self, collection: CollectionConfig, item: Item) -> Path | None:
        """The input file of an item (the photo of a variant), or None."""
        return None

    def build_request(self, collection: CollectionConfig, item: Item, take_number: int) -> Request:
        """The provider request for the next take of ``item``: params merged with the item's
        overrides, the seed rule applied, the kind's text and input file."""
        overrides = item.overrides or {}
        params = {**item.params, **{k: v for k, v in overrides.items() if v is not None}}
        fresh = item.overrides is not None
        params["seed"] = self.seed(item.params, overrides, fresh)
        return Request(
            collection=collection.name,
            task=self.task,
            key=item.key,
            text=self.request_text(item, params),
            params=params,
            options=collection.params,
            source=self.source_file(collection, item),
            take_number=take_number,
            fresh=fresh,
        )

    def cover_first(self, params: Mapping[str, Any]) -> bool:
        """Whether the item with ordinal 0 must finish before the others start."""
        return False

    def measure(self, data: bytes, text: str) -> dict[str, Any] | None:
        """QA metrics of a new take's file, or None when the kind measures nothing."""
        return None

    # -- exports
    @property
    def export_formats(self) -> tuple[str, ...]:
        """The ``--format`` values of its export; the first is the default."""
        return tuple(self.exporters)

    def export(
        self,
        config: Config,
        store: Store,
        collection: CollectionConfig,
        out: Path,
        fmt: str | None = None,
        options: ExportOptions | None = None,
    ) -> ExportReport:
        """Export the collection's current takes into the new folder ``out`` as ``fmt`` (default: the first).

        Raises:
            ExportError: an unknown format, ``out`` exists, or nothing to export.
        """
        fmt = fmt or self.export_formats[0]
        exporter = self.exporters.get(fmt)
        if exporter is None:
            raise ExportError(f"{self.name} exports as {' or '.join(self.exporters)}, not {fmt!r}")
        return exporter(config, store, collection, out, options or ExportOptions())
