"""The collection-kind registry: one :class:`~.base.Kind` object per kind.

Outside this package, code asks the kind object (``get_kind(collection.kind)``)
instead of comparing kind names; adding a kind means adding one module here
and one line to :data:`KINDS`.
"""

from __future__ import annotations

from ..settings import CollectionConfig, Config
from .base import Column, Kind, OverrideField
from .dataset import DatasetKind
from .pages import PagesKind
from .variants import BUILTIN_SLOTS, VariantsKind

#: Every collection kind by name, in the order the README documents them.
KINDS: dict[str, Kind] = {kind.name: kind for kind in (DatasetKind(), PagesKind(), VariantsKind())}


def get_kind(name: str) -> Kind:
    """The kind called ``name``.

    Raises:
        KeyError: no such kind (the config loader reports it before anything else can ask).
    """
    return KINDS[name]


def collection_of_kind(config: Config, kind: str, name: str | None = None) -> CollectionConfig:
    """The collection ``name`` (which must be of ``kind``), or the first collection of ``kind``.

    Raises:
        LookupError: no such collection; the message says which.
    """
    if name:
        coll = config.collections.get(name)
        if coll is None or coll.kind != kind:
            raise LookupError(f"no {kind} collection named {name!r}")
        return coll
    for coll in config.collections.values():
        if coll.kind == kind:
            return coll
    raise LookupError(f"no {kind} collection in {config.path}")


__all__ = ["BUILTIN_SLOTS", "KINDS", "Column", "Kind", "OverrideField", "collection_of_kind", "get_kind"]
