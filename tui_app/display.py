"""Text helpers shared by the TUI and the headless runner (no Textual, no rich)."""

from __future__ import annotations

import math


def format_eta(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``, or ``-`` when unknown (None, NaN or infinite)."""
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "-"
    whole = int(round(seconds))
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole}s"
