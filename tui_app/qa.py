"""Dataset QA: metrics of one speech take and the checks that flag outliers.

Metrics (all from the 16-bit PCM of the take):

* ``duration_s``: frames / sample rate.
* ``leading_silence_s`` / ``trailing_silence_s``: time before the first and after
  the last 10 ms window whose RMS is above -40 dBFS (relative to full scale).
* ``peak_dbfs``: 20 log10(max |sample| / 32768); 0 dBFS is full scale.
* ``clipped``: samples at or beyond +/-32767 (the ceiling of 16-bit PCM).
* ``words_per_s``: words in the text / voiced duration (duration minus leading and
  trailing silence). LJSpeech averages about 2.6 words/s (13,100 clips, 225,715
  words, 23.9 h); read speech usually lies between 1.5 and 5 (short prompts run faster).

A take is flagged when a metric leaves the ranges in :data:`THRESHOLDS`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .media import wav_info

#: (metric, lowest acceptable, highest acceptable) for flags; None = unbounded.
THRESHOLDS: dict[str, tuple[float | None, float | None]] = {
    "duration_s": (0.3, 20.0),
    "leading_silence_s": (None, 1.0),
    "trailing_silence_s": (None, 1.5),
    "peak_dbfs": (-20.0, None),
    "clipped": (None, 0),
    "words_per_s": (1.5, 5.0),
}
SILENCE_DBFS = -40.0
WINDOW_S = 0.010
_WORD = re.compile(r"[\w']+")


def count_words(text: str) -> int:
    """Words in ``text`` (runs of letters, digits, underscores and apostrophes)."""
    return len(_WORD.findall(text))


def audio_metrics(wav: bytes, text: str) -> dict[str, float]:
    """QA metrics of a mono or multi-channel 16-bit PCM WAV and the text it speaks.

    Raises:
        ValueError: the bytes are not a 16-bit PCM WAV.
    """
    info = wav_info(wav)
    if info.sample_width != 2:
        raise ValueError(f"QA needs 16-bit PCM, got {8 * info.sample_width}-bit")
    data_start = wav.find(b"data") + 8
    samples = np.frombuffer(wav[data_start : data_start + info.frames * info.channels * 2], dtype="<i2")
    if info.channels > 1:
        samples = samples.reshape(-1, info.channels).mean(axis=1)
    x = samples.astype(np.float32)  # float32: exact for 16-bit values, half the memory traffic
    duration = info.frames / info.sample_rate
    peak = float(max(-float(x.min()), float(x.max()))) if x.size else 0.0
    window = max(1, int(info.sample_rate * WINDOW_S))
    n = x.size // window
    lead = trail = duration
    if n:
        rms = np.sqrt(np.mean(x[: n * window].reshape(n, window) ** 2, axis=1))
        loud = np.nonzero(rms > 32768.0 * 10 ** (SILENCE_DBFS / 20))[0]
        if loud.size:
            lead = float(loud[0] * window / info.sample_rate)
            trail = float(max(0.0, duration - (loud[-1] + 1) * window / info.sample_rate))
    voiced = max(duration - lead - trail, 1e-6)
    words = count_words(text)
    return {
        "duration_s": round(duration, 3),
        "leading_silence_s": round(lead, 3),
        "trailing_silence_s": round(trail, 3),
        "peak_dbfs": round(20 * math.log10(peak / 32768.0), 2) if peak > 0 else -120.0,
        # not np.abs(samples): abs(-32768) overflows int16 and would hide full-scale negative samples
        "clipped": int(np.count_nonzero((samples >= 32767) | (samples <= -32767))),
        "words_per_s": round(float(words / voiced), 3) if lead < duration else 0.0,
    }


def flags(metrics: dict[str, Any]) -> list[str]:
    """Human-readable flags for metrics outside :data:`THRESHOLDS` (empty list = OK)."""
    out = []
    names = {
        "duration_s": "duration",
        "leading_silence_s": "leading silence",
        "trailing_silence_s": "trailing silence",
        "peak_dbfs": "peak",
        "clipped": "clipped samples",
        "words_per_s": "words/s",
    }
    for key, (low, high) in THRESHOLDS.items():
        value = metrics.get(key)
        if value is None:
            continue
        if low is not None and value < low:
            out.append(f"{names[key]} {value:g} < {low:g}")
        elif high is not None and value > high:
            out.append(f"{names[key]} {value:g} > {high:g}")
    return out
