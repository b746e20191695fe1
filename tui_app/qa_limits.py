"""The dataset QA's settings: the ``[qa]`` config table (the limits of the flags, see
:mod:`tui_app.qa`) and its ``[qa.asr]`` sub-table (the ASR check, see :mod:`tui_app.asr`).

Kept apart from the measurements (numpy, loudness) and the transcribers so that reading a
config stays light; :mod:`tui_app.config` reads both once, with these defaults and limits, into
the :class:`~tui_app.settings.Config`.
"""

from __future__ import annotations

from dataclasses import dataclass

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


#: (lowest, highest) accepted per numeric field of :class:`QAThresholds` (inclusive; None =
#: unbounded): :func:`tui_app.config.load_config` reads the ``[qa]`` table with these.
QA_RANGES: dict[str, tuple[float, float | None]] = {
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
#: The :class:`QAThresholds` fields that must be integers.
QA_INTEGER_FIELDS = frozenset({"max_clip_runs", "rate_min_words", "outlier_min_takes"})
#: The :class:`QAThresholds` fields that must be above 0, not just at least 0 (0 would make no sense).
QA_POSITIVE_FIELDS = frozenset({"outlier_k", "max_duration_s"})


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ASRSettings:
    """The ``[qa.asr]`` table (see :mod:`tui_app.asr` for each key and its default).

    Read by :func:`tui_app.config.load_config`: the string fields must be strings, ``timeout_s``
    above 0, the integer fields integers >= 1, ``engine`` one of :data:`ENGINES`, and ``engine =
    "http"`` needs an ``http://`` or ``https://`` ``base_url``.
    """

    engine: str = "pocketsphinx"
    base_url: str = ""
    model: str = "whisper-1"
    api_key_env: str = ""
    language: str = ""
    timeout_s: float = 120.0
    concurrency: int = 2
    max_attempts: int = 3


#: The ``[qa.asr] engine`` values.
ENGINES = ("pocketsphinx", "http", "none")


__all__ = [
    "ENGINES",
    "END_ABOVE_NOISE_DB",
    "QA_INTEGER_FIELDS",
    "QA_POSITIVE_FIELDS",
    "QA_RANGES",
    "ASRSettings",
    "QAThresholds",
]
