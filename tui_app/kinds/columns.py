"""Cell formatters shared by the kinds' table columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


#: How a take's review state shows in a table: accepted, rejected; unreviewed is blank.
REVIEW_MARKS = {"accepted": "✓", "rejected": "✗"}


def review(row: Row) -> str:
    """The current take's review state as one mark (blank: unreviewed, or no take)."""
    return REVIEW_MARKS.get(row.review or "", "")


def qa_metric(name: str, digits: int) -> Callable[[Row], str]:
    """A cell showing one QA metric of the current take (``wer``, ``loudness_lufs``), blank when
    the take has none (not measured yet, or no take)."""

    def cell(row: Row) -> str:
        value = (row.take_qa or {}).get(name)
        return "" if value is None else f"{float(value):.{digits}f}"

    return cell


class TakeParam:
    """A cell showing one parameter the row's current take was made with (an override included).

    The parameters come from ``row.take_params``; without a take the item's own parameter is
    shown (what its next take will use unless overridden).

    Args:
        name: the parameter (``temperature``).
        show: turns a present value into the cell text.
        default: the cell when neither the take nor the item has the parameter.
    """

    def __init__(self, name: str, show: Callable[[Any], str] = str, default: str = ""):
        self.name = name
        self.show = show
        self.default = default

    def __call__(self, row: Row) -> str:
        """The cell text for ``row``."""
        if row.take_params is not None and self.name in row.take_params:
            value = row.take_params[self.name]
        else:
            value = row.params.get(self.name)
        return self.default if value is None else self.show(value)
