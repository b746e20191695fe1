"""The dataset QA's settings: the ``[qa]`` config table (the limits of the flags, see
:mod:`tui_app.qa`) and its ``[qa.asr]`` sub-table (the ASR check, see :mod:`tui_app.asr`).

Kept apart from the measurements (numpy, pyloudnorm) and the transcribers so that reading a
config stays light; :mod:`tui_app.config` parses both once, into the :class:`~tui_app.settings.Config`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: ``truncated`` by level needs the end this far above the noise floor, dB (a noisy take ends on noise).
END_ABOVE_NOISE_DB = 10.0


@dataclass(frozen=True)
class QAThresholds:
    """Limits of the QA flags; the defaults were calibrated with ``bench/qa.py`` (see the module doc).

    Attributes:
        enabled: measure speech takes at all (true). False: no QA metrics, flags or ASR check,
            for audio that is not speech, or the fastest runs (QA takes about 0.4 ms of CPU
            per short clip, on the engine's event loop; ``bench/workers.py`` shows both).
        min_duration_s: ``too_short`` below this many seconds (0.3).
        max_duration_s: ``too_long`` above this many seconds (20.0; Piper's trainer and most TTS
            recipes drop clips longer than 15 to 20 s).
        max_lead_silence_s: ``lead_silence`` above this many seconds (1.0; Piper: at most 0.5).
        max_trail_silence_s: ``trail_silence`` above this many seconds (1.0; Piper: at most 0.4).
        max_clip_runs: ``clipping`` above this many clipped runs (0: any flat top at full scale).
        min_loudness_lufs: ``too_quiet`` below this integrated loudness, LUFS (-40; Piper reads
            -25 to -16, EBU R 128 broadcast targets -23).
        min_snr_db: ``low_snr`` below this ``snr_db``, dB (20).
        truncation_end_db: ``truncated`` when the last 20 ms are louder than this, dB relative
            to the speech level (``end_db``; -40; Piper's good clips end below -70) and at least
            :data:`END_ABOVE_NOISE_DB` above the noise floor (``end_db + snr_db``): the take
            stops mid-sound.
        max_cer: ``asr_mismatch`` when the character error rate of the ASR transcript against
            the text exceeds this (0.6: pocketsphinx on good Piper clips stays at or below it;
            another sentence scores 0.63 and more). With a Whisper-class server use about 0.2.
        max_wer: also ``asr_mismatch`` when the word error rate exceeds this (0 = off, the
            default: pocketsphinx's word errors are too frequent to judge by).
        truncation_asr_ratio: ``truncated`` (ASR) when the transcript has fewer than this share of
            the text's characters (0.7; good clips: 0.76 and more) ...
        truncation_asr_tail: ... and at least this share of the text's words come after the last
            word the transcript recognized (0.25) ... and the text's beginning matches the
            transcript (character error rate at most ``max_cer``).
        outlier_k: dataset outliers lie beyond median +/- k x 1.4826 x MAD (4.0).
        rate_min_words: ``rate_outlier`` only for texts of at least this many words (5): the rate
            of a three-word prompt is mostly its onset and release.
        min_rate_sigma: floor of the robust standard deviation of words/s (0.25 words/s), so a
            very uniform collection does not make every small deviation an outlier.
        min_loudness_sigma: floor of the robust standard deviation of loudness (1.0 LU).
        outlier_min_takes: dataset outliers are judged only among at least this many takes (20).
    """

    enabled: bool = True
    min_duration_s: float = 0.3
    max_duration_s: float = 20.0
    max_lead_silence_s: float = 1.0
    max_trail_silence_s: float = 1.0
    max_clip_runs: int = 0
    min_loudness_lufs: float = -40.0
    min_snr_db: float = 20.0
    truncation_end_db: float = -40.0
    max_cer: float = 0.6
    max_wer: float = 0.0
    truncation_asr_ratio: float = 0.7
    truncation_asr_tail: float = 0.25
    outlier_k: float = 4.0
    rate_min_words: int = 5
    min_rate_sigma: float = 0.25
    min_loudness_sigma: float = 1.0
    outlier_min_takes: int = 20


#: (lowest, highest) accepted by :func:`parse_qa_table`, per field; None = unbounded.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "min_duration_s": (0.0, None),
    "max_duration_s": (0.0, None),
    "max_lead_silence_s": (0.0, None),
    "max_trail_silence_s": (0.0, None),
    "max_clip_runs": (0, None),
    "min_loudness_lufs": (-120.0, 0.0),
    "min_snr_db": (0.0, 120.0),
    "truncation_end_db": (-120.0, 0.0),
    "max_cer": (0.0, None),
    "max_wer": (0.0, None),
    "truncation_asr_ratio": (0.0, 1.0),
    "truncation_asr_tail": (0.0, 1.0),
    "outlier_k": (0.0, None),
    "rate_min_words": (1, None),
    "min_rate_sigma": (0.0, None),
    "min_loudness_sigma": (0.0, None),
    "outlier_min_takes": (3, None),
}
_INTEGER_FIELDS = frozenset({"max_clip_runs", "rate_min_words", "outlier_min_takes"})
_POSITIVE_FIELDS = frozenset({"outlier_k", "max_duration_s"})  # 0 would make no sense


def parse_qa_table(table: Mapping[str, Any]) -> QAThresholds:
    """:class:`QAThresholds` from a ``[qa]`` config table: its keys are the field names; omitted
    keys keep their defaults. A sub-table ``asr`` is left to :func:`parse_asr_table`.

    Raises:
        ValueError: ``"KEY: what is wrong"`` for an unknown key, a value of the wrong type (a
            boolean for ``enabled``, else a number; an integer for ``max_clip_runs``, ``rate_min_words`` and
            ``outlier_min_takes``), out of range, or ``min_duration_s >= max_duration_s``.
    """
    known = {f.name for f in fields(QAThresholds)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "asr" and isinstance(value, Mapping):
            continue
        if key not in known:
            raise ValueError(f"{key}: unknown QA setting (known: {', '.join(sorted(known))})")
        if key == "enabled":
            if not isinstance(value, bool):
                raise ValueError(f"enabled: must be true or false, got {value!r}")
            values[key] = value
            continue
        integer = key in _INTEGER_FIELDS
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not isinstance(value, int))
        ):
            raise ValueError(f"{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key}: must be a finite number, got {value!r}")
        low, high = _RANGES[key]
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f">= {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise ValueError(f"{key}: must be {bounds}, got {value!r}")
        if key in _POSITIVE_FIELDS and value <= 0:
            raise ValueError(f"{key}: must be > 0, got {value!r}")
        values[key] = int(value) if integer else float(value)
    thresholds = QAThresholds(**values)
    if thresholds.min_duration_s >= thresholds.max_duration_s:
        raise ValueError(
            f"min_duration_s: must be below max_duration_s ({thresholds.max_duration_s:g}), "
            f"got {thresholds.min_duration_s:g}"
        )
    return thresholds


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ASRSettings:
    """The ``[qa.asr]`` table (see the module docstring for each key and its default)."""

    engine: str = "pocketsphinx"
    base_url: str = ""
    model: str = "whisper-1"
    api_key_env: str = ""
    language: str = ""
    timeout_s: float = 120.0
    concurrency: int = 2
    max_attempts: int = 3


ENGINES = ("pocketsphinx", "http", "none")


def parse_asr_table(table: Mapping[str, Any]) -> ASRSettings:
    """:class:`ASRSettings` from a ``[qa.asr]`` table.

    Raises:
        ValueError: ``"KEY: what is wrong"``: unknown key, wrong type, an unknown ``engine``,
            ``engine = "http"`` without an ``http(s)://`` ``base_url``, a number out of range.
    """
    known = {f.name: f for f in fields(ASRSettings)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ValueError(f"{key}: unknown ASR setting (known: {', '.join(sorted(known))})")
        default = getattr(ASRSettings, key)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{key}: must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: must be a number, got {value!r}")
        elif isinstance(default, int) and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{key}: must be an integer >= 1, got {value!r}")
        elif not value > 0:
            raise ValueError(f"{key}: must be > 0, got {value!r}")
        values[key] = value
    settings = ASRSettings(**values)
    if settings.engine not in ENGINES:
        raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {settings.engine!r}")
    if settings.engine == "http" and not re.match(r"https?://[^/\s]+", settings.base_url):
        raise ValueError(f"base_url: engine http needs an http:// or https:// URL, got {settings.base_url!r}")
    return settings


__all__ = [
    "ENGINES",
    "END_ABOVE_NOISE_DB",
    "ASRSettings",
    "QAThresholds",
    "parse_asr_table",
    "parse_qa_table",
]
