"""The project's state store: the interface, its typed rows, and the backends behind it.

Open one with :func:`open_store`; everything else in tui_app talks to the
:class:`Store` protocol and receives the dataclasses of :mod:`.rows`.
"""

from __future__ import annotations

from pathlib import Path

from .base import Store
from .rows import (
    REVIEW_STATES,
    STATUSES,
    Batch,
    Choice,
    Claim,
    DiskState,
    Event,
    Final,
    FinalFile,
    ImportReport,
    Item,
    Row,
    RowFilter,
    SourceItem,
    Take,
    TakeFile,
    TakeRecord,
    Worker,
)
from .sqlite import SCHEMA_VERSION, SqliteStore


def open_store(location: Path | str) -> Store:
    """Open (creating when missing) the store at ``location``: a SQLite file path.

    Raises:
        sqlite3.DatabaseError: the file is not a tui_app state file or is newer than this code.
    """
    return SqliteStore(location)


__all__ = [
    "SCHEMA_VERSION",
    "REVIEW_STATES",
    "STATUSES",
    "Batch",
    "Choice",
    "Claim",
    "DiskState",
    "Event",
    "Final",
    "FinalFile",
    "ImportReport",
    "Item",
    "Row",
    "RowFilter",
    "SourceItem",
    "SqliteStore",
    "Store",
    "Take",
    "TakeFile",
    "TakeRecord",
    "Worker",
    "open_store",
]
