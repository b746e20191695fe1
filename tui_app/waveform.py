"""Waveforms drawn with text: the amplitude envelope of a speech take, for the compare screen.

A take's 16-bit PCM is cut into one window per character column; each column shows the window's
peak amplitude (a fraction of full scale) as a bar of Unicode block elements (U+2581..U+2588, eight
heights per row), several rows high. Leading and trailing silence (the part before the first and
after the last 10 ms frame whose RMS level is above ``silence_dbfs``, the same rule as the QA's
silence metrics in :mod:`tui_app.qa`) is reported as column spans, so a front end can mark it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .media import read_pcm

#: Bar heights in eighths of a row: a space, then U+2581 (1/8) .. U+2588 (full block).
BARS = " ▁▂▃▄▅▆▇█"
#: The quietest RMS level, dBFS, that counts as sound (below it: silence).
SILENCE_DBFS = -40.0
FRAME_S = 0.010


@dataclass(frozen=True)
class Waveform:
    """A take's waveform as text.

    Attributes:
        rows: ``height`` strings of ``width`` characters, top row first.
        lead: columns ``[0, lead)`` are leading silence.
        trail: columns ``[trail, width)`` are trailing silence (``trail == width``: none).
        duration_s: the clip's length, seconds.
    """

    rows: tuple[str, ...]
    lead: int
    trail: int
    duration_s: float


def draw(wav: bytes, width: int, height: int = 2, silence_dbfs: float = SILENCE_DBFS) -> Waveform:
    """Draw a 16-bit PCM WAV (mono, or channels averaged) ``width`` columns wide, ``height`` rows high.

    Heights are peak amplitudes on a square-root scale (quiet speech stays visible beside loud
    speech; a full-scale peak fills every row).

    Raises:
        ValueError: not a 16-bit PCM WAV, or ``width``/``height`` below 1.
    """
    if width < 1 or height < 1:
        raise ValueError(f"a waveform needs width and height >= 1, got {width}x{height}")
    pcm, info = read_pcm(wav, "a waveform")
    x = pcm.astype(np.float32) / 32768.0
    x = x.mean(axis=1) if info.channels > 1 else x[:, 0]
    if not x.size:
        return Waveform(tuple(" " * width for _ in range(height)), width, width, 0.0)
    # one window per column: the peak of each (columns may be shorter than a sample: repeat)
    edges = np.linspace(0, x.size, width + 1).astype(int)
    peaks = np.array([np.abs(x[a : max(b, a + 1)]).max() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    levels = np.sqrt(np.clip(peaks, 0.0, 1.0)) * height * 8
    rows = []
    for row in range(height):  # top row first: row r shows the eighths above (height - 1 - r) rows
        floor = (height - 1 - row) * 8
        rows.append("".join(BARS[int(min(8, max(0, round(v - floor))))] for v in levels))
    lead_s, trail_s = _silences(x, info.sample_rate, silence_dbfs)
    duration = x.size / info.sample_rate
    lead = min(width, math.floor(lead_s / duration * width)) if duration else width
    trail = max(lead, width - math.floor(trail_s / duration * width)) if duration else width
    return Waveform(tuple(rows), lead, trail, duration)


def _silences(x: np.ndarray, rate: int, silence_dbfs: float) -> tuple[float, float]:
    """(leading, trailing) silence, seconds: before the first and after the last loud 10 ms frame."""
    frame = max(1, int(rate * FRAME_S))
    n = x.size // frame
    if not n:
        return 0.0, 0.0
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    loud = np.nonzero(rms > 10 ** (silence_dbfs / 20))[0]
    if not loud.size:
        return x.size / rate, 0.0
    return float(loud[0] * frame / rate), float(max(0, x.size - (loud[-1] + 1) * frame) / rate)


__all__ = ["BARS", "SILENCE_DBFS", "Waveform", "draw"]
