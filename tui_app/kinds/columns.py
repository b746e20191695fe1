"""Cell formatters shared by the kinds' table columns."""

from __future__ import annotations

from ..store.rows import Row


def kilobytes(n: int | None) -> str:
    """``412`` for 421,888 bytes; empty when there is no file."""
    return f"{n / 1024:.0f}" if n else ""


def seconds(value: float | None) -> str:
    """``2.35``; empty when unknown."""
    return f"{value:.2f}" if value is not None else ""


def error(row: Row) -> str:
    """The last error of a failed row, else empty."""
    return row.last_error if row.status == "failed" and row.last_error else ""


def qa_or_error(row: Row) -> str:
    """The error of a failed row, ``stale`` when the text changed, else the QA flags (``ok`` when none)."""
    if failure := error(row):
        return failure
    if row.stale:
        return "stale: text changed"
    return row.qa_flags or ("ok" if row.take_number else "")
