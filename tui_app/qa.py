"""Dataset QA: metrics of one speech take, stable flag codes, and outliers judged against the dataset.

Metrics (:func:`audio_metrics`, all from the 16-bit PCM of the take, channels averaged to mono;
"frames" are consecutive 10 ms windows, and a frame's level is ``10 log10(mean square)`` in dB
relative to full scale, floored at the 16-bit quantization noise, :data:`NOISE_FLOOR_DBFS`):

* ``duration_s``: samples / sample rate, seconds.
* ``leading_silence_s`` / ``trailing_silence_s``: seconds before the first and after the last
  *speech frame*: a frame louder than the loudest frame minus :data:`SILENCE_BELOW_PEAK_DB`
  (40 dB), and louder than :data:`SILENCE_FLOOR_DBFS` (-90 dBFS). The gate follows the clip's
  own level, so a quiet clip is measured as well as a loud one. A clip without speech frames has
  both equal to its duration.
* ``peak_dbfs``: ``20 log10(max |sample| / 32768)``; 0 dBFS is full scale (-120 for silence).
* ``clipped``: samples at or beyond +/-32767 (the ceiling of 16-bit PCM), every channel.
* ``clip_runs``: runs of at least :data:`CLIP_RUN` (3) consecutive samples of one channel at
  that ceiling: a clipped waveform's flat tops, as Audacity's *Find Clipping* counts them (its
  default start threshold is 3 samples). A single full-scale sample of a peak-normalized clip is
  not a run.
* ``loudness_lufs``: integrated loudness, ITU-R BS.1770-4 (K-weighting, 400 ms blocks with 75 %
  overlap, absolute gate -70 LUFS and relative gate -10 LU), measured by libloudness through the
  ``loudness`` package (see :func:`loudness_lufs` for why not pyloudnorm). BS.1770 needs one
  400 ms block: a shorter clip is measured on itself repeated cyclically to 400 ms, which keeps its
  mean square but for the last, partial repetition. A clip entirely below the absolute gate reads
  the loudness it has once its peak is raised to full scale, less that gain; digital silence reads
  :data:`LOUDNESS_FLOOR_LUFS` (-120).
* ``snr_db``: an energy-based signal-to-noise estimate: ``10 log10(S / N)`` with ``S`` the mean
  power of the speech frames (as above) and ``N`` the mean power of the quietest 2 % of the
  frames (:data:`NOISE_QUANTILE`; at least three, 30 ms), floored at the quantization noise: a
  percentile noise-floor estimate (no VAD, no model), low enough to find the pauses of a clip
  that is mostly speech. It reads low when a clip has no pause at all, and tops out near
  100 dB for digitally silent pauses.
* ``end_db``: level of the clip's last 20 ms relative to ``S``, dB (-120 without speech). Speech
  that ends the way speech ends has decayed into silence (Piper: -82 to -70 dB); a take cut off
  mid-word ends near speech level (half of those cut at half length end above -6 dB).
* ``words_per_s``: words in the text / voiced duration (duration minus leading and trailing
  silence). LJSpeech averages about 2.6 words/s (13,100 clips, 225,715 words, 23.9 h); Piper's
  joe voice reads the CMU ARCTIC prompts at 3.75 (median; 1.8 to 6.3).

With an ASR round trip (:func:`tui_app.asr.asr_metrics`), the metrics also hold ``wer``, ``cer``,
``asr_len_ratio``, ``asr_tail_missing``, ``asr_prefix_cer`` and ``asr_text``.

Flags are stable codes (:data:`CODES`), each with a human message (:func:`describe`):

* per take, from fixed limits (:func:`take_flags`, limits in :class:`QAThresholds`);
* against the collection itself (:func:`dataset_flags`): ``rate_outlier`` and ``loudness_outlier``
  mark takes beyond median +/- k robust standard deviations (1.4826 x the median absolute
  deviation, a consistent estimator of the standard deviation for normal data: Rousseeuw &
  Croux 1993) of the collection's measured takes.

Thresholds come from ``bench/qa.py`` on 1,132 CMU ARCTIC prompts spoken by Piper's joe voice
(false alarms on those good clips, detection of planted defects); see each field of
:class:`QAThresholds`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .media import read_pcm
from .qa_limits import END_ABOVE_NOISE_DB, QAThresholds

#: The stable flag codes, in the order flags are listed.
CODES: tuple[str, ...] = (
    "asr_mismatch",
    "truncated",
    "lead_silence",
    "trail_silence",
    "clipping",
    "too_quiet",
    "low_snr",
    "loudness_outlier",
    "rate_outlier",
    "too_short",
    "too_long",
)
#: Codes judged against the collection (:func:`dataset_flags`); the others come from :func:`take_flags`.
DATASET_CODES = frozenset({"loudness_outlier", "rate_outlier"})

WINDOW_S = 0.010
#: A frame is speech when louder than the loudest frame minus this, dB.
SILENCE_BELOW_PEAK_DB = 40.0
#: ... and louder than this, dBFS (so near-digital silence never counts as speech).
SILENCE_FLOOR_DBFS = -90.0
#: Power of 16-bit quantization noise, (1 LSB)^2 / 12 relative to full scale: about -101 dBFS.
NOISE_FLOOR_DBFS = 10 * math.log10((1 / 32768) ** 2 / 12)
#: Share of the quietest frames whose mean power is the noise floor of ``snr_db`` and ``end_db``.
NOISE_QUANTILE = 0.02
#: Seconds at the end of a clip whose level is ``end_db``.
END_S = 0.020
#: Consecutive full-scale samples that make one clipped run (Audacity's Find Clipping default).
CLIP_RUN = 3
#: BS.1770's gating block, seconds: shorter clips are repeated up to it for ``loudness_lufs``.
LOUDNESS_BLOCK_S = 0.4
#: ``loudness_lufs`` of a clip below BS.1770's absolute gate (-70 LUFS) and ``peak_dbfs`` of silence.
LOUDNESS_FLOOR_LUFS = -120.0

_WORD = re.compile(r"[\w']+")


# --------------------------------------------------------------------------- metrics


def count_words(text: str) -> int:
    """Words in ``text`` (runs of letters, digits, underscores and apostrophes)."""
    return len(_WORD.findall(text))


def loudness_lufs(x: np.ndarray, rate: int) -> float:
    """Integrated loudness of float samples (full scale 1.0), shape ``(frames,)`` or ``(frames,
    channels)`` with BS.1770's channel order, LUFS (ITU-R BS.1770-4), rounded to 0.01.

    Measured by libloudness (C++, MIT) through the ``loudness`` package: it imports in about 0.04 s
    and measures a 3 s clip at 22,050 Hz in about 0.3 ms, where pyloudnorm needs scipy.signal
    (0.6 s of CPU to import, in every worker process) and about 1 ms. On 300 of the joe voice's
    ARCTIC clips (22,050 Hz) the two differ by a median 0.09 LU (this one higher), 96 % within
    0.3 LU, at most 0.74: cut to whole gating blocks, they agree within 0.12 LU on every clip. The
    rest is pyloudnorm 0.2 measuring the last, incomplete block too, which BS.1770 leaves out (its
    reading of a steady tone moves with the tone's length). A steady tone reads within 0.06 LU of
    BS.1770's calibration (a 997 Hz sine at -20 dBFS: -23.01).

    A clip shorter than one 400 ms gating block is measured repeated cyclically to one block (about
    the same mean square). When every block is below the absolute gate (-70 LUFS), BS.1770 leaves
    the loudness undefined: the clip is measured with its peak raised to full scale and the gain
    taken off again (-80 for speech 60 dB too quiet), so a quiet clip keeps its place on the
    scale; digital silence or no samples read :data:`LOUDNESS_FLOOR_LUFS`.

    Raises:
        ValueError: a sample rate outside 16 Hz to 2.8 MHz, or more than 64 channels.
    """
    if x.shape[0] == 0:
        return LOUDNESS_FLOOR_LUFS
    import loudness  # no type hints; loaded with the first measurement (about 0.04 s)

    samples = np.ascontiguousarray(x, dtype=np.float32)
    block = int(math.ceil(LOUDNESS_BLOCK_S * rate)) + 1
    if samples.shape[0] < block:
        samples = np.resize(samples, (block, *samples.shape[1:]))  # whole frames: each row is one
    value = float(loudness.integrated_loudness(samples, rate))
    if math.isfinite(value) and value > -70.0:
        return round(value, 2)
    peak = float(np.max(np.abs(samples)))
    if peak == 0.0:
        return LOUDNESS_FLOOR_LUFS
    value = float(loudness.integrated_loudness(samples / peak, rate))  # every block gated out
    if not math.isfinite(value):
        return LOUDNESS_FLOOR_LUFS
    return round(max(value + 20 * math.log10(peak), LOUDNESS_FLOOR_LUFS), 2)


def _runs_at_rail(channel: np.ndarray) -> int:
    """Runs of at least :data:`CLIP_RUN` consecutive samples at +/-32767 or beyond."""
    at = np.concatenate(([False], (channel >= 32767) | (channel <= -32767), [False]))
    edges = np.flatnonzero(np.diff(at.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    return int(np.count_nonzero(ends - starts >= CLIP_RUN))


def audio_metrics(wav: bytes, text: str) -> dict[str, float]:
    """QA metrics of a mono or multi-channel 16-bit PCM WAV and the text it speaks.

    Returns the metrics of the module docstring: ``duration_s``, ``leading_silence_s``,
    ``trailing_silence_s`` (seconds), ``peak_dbfs`` (dBFS), ``clipped``, ``clip_runs`` (counts),
    ``loudness_lufs`` (LUFS), ``snr_db``, ``end_db`` (dB) and ``words_per_s``. Cheap enough for
    the event loop: about 1 ms for a 3 s clip at 22,050 Hz.

    Raises:
        ValueError: the bytes are not a 16-bit PCM WAV.
    """
    pcm, info = read_pcm(wav, "QA")
    rate = info.sample_rate
    frames = pcm.shape[0]
    mono = pcm.mean(axis=1) if pcm.shape[1] > 1 else pcm[:, 0].astype(np.float64)
    x = mono / 32768.0
    duration = frames / rate
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    window = max(1, int(round(rate * WINDOW_S)))
    n = x.size // window
    floor = 10 ** (NOISE_FLOOR_DBFS / 10)
    lead = trail = duration
    snr, end = 0.0, LOUDNESS_FLOOR_LUFS
    if n:
        power = np.maximum(np.mean(x[: n * window].reshape(n, window) ** 2, axis=1), floor)
        level = 10 * np.log10(power)
        gate = max(float(level.max()) - SILENCE_BELOW_PEAK_DB, SILENCE_FLOOR_DBFS)
        speech = np.flatnonzero(level > gate)
        noise = float(np.mean(np.sort(power)[: max(3, int(n * NOISE_QUANTILE))]))
        tail = power[-max(1, int(round(END_S / WINDOW_S))) :]
        if speech.size:
            end = 10 * math.log10(float(tail.max()) / float(np.mean(power[speech])))
            lead = float(speech[0] * window / rate)
            trail = float(max(0.0, duration - (speech[-1] + 1) * window / rate))
            snr = 10 * math.log10(float(np.mean(power[speech])) / noise)
    voiced = max(duration - lead - trail, 1e-6)
    # most takes never reach the rail: two reductions spare the clipping scans
    railed = pcm.size and (int(pcm.max()) >= 32767 or int(pcm.min()) <= -32767)
    return {
        "duration_s": round(duration, 3),
        "leading_silence_s": round(lead, 3),
        "trailing_silence_s": round(trail, 3),
        "peak_dbfs": round(20 * math.log10(peak), 2) if peak > 0 else LOUDNESS_FLOOR_LUFS,
        # compared as int16, not np.abs: abs(-32768) overflows int16 and would hide full-scale negatives
        "clipped": int(np.count_nonzero((pcm >= 32767) | (pcm <= -32767))) if railed else 0,
        "clip_runs": sum(_runs_at_rail(c) for c in pcm.T) if railed else 0,
        "loudness_lufs": loudness_lufs(pcm / 32768.0 if pcm.shape[1] > 1 else x, rate),
        "snr_db": round(snr, 2),
        "end_db": round(end, 2),
        "words_per_s": round(float(count_words(text) / voiced), 3) if lead < duration else 0.0,
    }


# --------------------------------------------------------------------------- flags


def _asr_truncated(m: Mapping[str, Any], t: QAThresholds) -> bool:
    """The transcript matches the text's beginning but stops short (see :class:`QAThresholds`)."""
    ratio, tail, prefix = m.get("asr_len_ratio"), m.get("asr_tail_missing"), m.get("asr_prefix_cer")
    if ratio is None or tail is None or prefix is None:
        return False
    return ratio < t.truncation_asr_ratio and tail >= t.truncation_asr_tail and prefix <= t.max_cer


def take_flags(metrics: Mapping[str, Any], thresholds: QAThresholds | None = None) -> list[str]:
    """Codes (in :data:`CODES` order) of one take's metrics outside the fixed limits.

    A metric missing from ``metrics`` is not judged (no ASR: no ``asr_mismatch``). A ``truncated``
    take is not also ``asr_mismatch``: its transcript misses the end by definition.
    Silence flags need some speech: a take without any is ``too_quiet`` (and ``too_short`` or
    ``too_long`` by its duration) only. A ``too_quiet`` take is not also ``low_snr`` (near the
    16-bit quantization noise, its SNR is low because it is quiet).

    Args:
        metrics: :func:`audio_metrics`, plus :func:`tui_app.asr.asr_metrics` when ASR ran.
        thresholds: the limits (default :class:`QAThresholds()`).
    """
    t = thresholds or QAThresholds()
    m = metrics
    found: set[str] = set()
    duration = m.get("duration_s")
    lead, trail = m.get("leading_silence_s"), m.get("trailing_silence_s")
    has_speech = duration is None or lead is None or lead < duration
    end, snr = m.get("end_db"), m.get("snr_db")
    abrupt = (
        has_speech
        and end is not None
        and end > t.truncation_end_db
        and end + (snr or 0.0) >= END_ABOVE_NOISE_DB
    )
    asr_cut = _asr_truncated(m, t)
    if asr_cut or abrupt:
        found.add("truncated")
    cer, wer = m.get("cer"), m.get("wer")
    # a cut take's transcript misses its end (and recognizers do poorly on fragments): one problem
    if "truncated" not in found and (
        (cer is not None and cer > t.max_cer) or (wer is not None and t.max_wer > 0 and wer > t.max_wer)
    ):
        found.add("asr_mismatch")
    if has_speech and lead is not None and lead > t.max_lead_silence_s:
        found.add("lead_silence")
    if has_speech and trail is not None and trail > t.max_trail_silence_s:
        found.add("trail_silence")
    if m.get("clip_runs", 0) > t.max_clip_runs:
        found.add("clipping")
    loudness = m.get("loudness_lufs")
    if loudness is not None and loudness < t.min_loudness_lufs:
        found.add("too_quiet")
    if has_speech and snr is not None and snr < t.min_snr_db and "too_quiet" not in found:
        found.add("low_snr")  # a too quiet take's noise floor is the quantization noise: one problem
    if duration is not None and duration < t.min_duration_s:
        found.add("too_short")
    if duration is not None and duration > t.max_duration_s:
        found.add("too_long")
    return [code for code in CODES if code in found]


@dataclass(frozen=True)
class DatasetStats:
    """Robust statistics of a collection's takes, as :func:`dataset_flags` judges them.

    Attributes:
        rate_median, rate_sigma: words/s median and robust standard deviation (1.4826 x MAD,
            floored at ``min_rate_sigma``) over takes whose text has ``rate_min_words`` words or more;
            None when fewer than ``outlier_min_takes`` such takes.
        loudness_median, loudness_sigma: the same for ``loudness_lufs``, LUFS and LU.
        rate_takes, loudness_takes: how many takes each was computed from.
    """

    rate_median: float | None
    rate_sigma: float | None
    loudness_median: float | None
    loudness_sigma: float | None
    rate_takes: int
    loudness_takes: int


def _robust(values: list[float], min_sigma: float, min_count: int) -> tuple[float | None, float | None]:
    if len(values) < min_count:
        return None, None
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    return median, max(1.4826 * mad, min_sigma)


def dataset_stats(
    metrics_by_key: Mapping[str, Mapping[str, Any]],
    texts: Mapping[str, str],
    thresholds: QAThresholds | None = None,
) -> DatasetStats:
    """The medians and robust spreads :func:`dataset_flags` compares each take with.

    Only takes with speech count; words/s only for texts (``texts[key]``) of at least
    ``rate_min_words`` words.
    """
    t = thresholds or QAThresholds()
    rates, levels = [], []
    for key, m in metrics_by_key.items():
        if m.get("duration_s") is not None and m.get("leading_silence_s", 0) >= m["duration_s"]:
            continue  # no speech: nothing to compare
        rate, level = m.get("words_per_s"), m.get("loudness_lufs")
        if rate is not None and count_words(texts.get(key, "")) >= t.rate_min_words:
            rates.append(float(rate))
        if level is not None and level > LOUDNESS_FLOOR_LUFS:
            levels.append(float(level))
    rate_median, rate_sigma = _robust(rates, t.min_rate_sigma, t.outlier_min_takes)
    level_median, level_sigma = _robust(levels, t.min_loudness_sigma, t.outlier_min_takes)
    return DatasetStats(rate_median, rate_sigma, level_median, level_sigma, len(rates), len(levels))


def dataset_flags(
    metrics_by_key: Mapping[str, Mapping[str, Any]],
    texts: Mapping[str, str],
    thresholds: QAThresholds | None = None,
) -> dict[str, list[str]]:
    """Outliers of a collection judged against the collection itself: ``{key: [codes]}`` for the
    flagged keys only (``rate_outlier``, ``loudness_outlier``, in :data:`CODES` order).

    A take is a ``rate_outlier`` when its words/s lies beyond median +/- ``outlier_k`` x sigma of
    the collection (sigma = 1.4826 x MAD, at least ``min_rate_sigma``), judged only for texts of at
    least ``rate_min_words`` words; a ``loudness_outlier`` likewise for ``loudness_lufs``. Neither
    is judged among fewer than ``outlier_min_takes`` measured takes.

    Args:
        metrics_by_key: each take's :func:`audio_metrics`, by item key.
        texts: each item's text, by key (the text the take speaks).
        thresholds: the limits (default :class:`QAThresholds()`).
    """
    t = thresholds or QAThresholds()
    stats = dataset_stats(metrics_by_key, texts, t)
    out: dict[str, list[str]] = {}
    for key, m in metrics_by_key.items():
        codes = []
        level = m.get("loudness_lufs")
        if (
            stats.loudness_median is not None
            and stats.loudness_sigma is not None
            and level is not None
            and abs(level - stats.loudness_median) > t.outlier_k * stats.loudness_sigma
        ):
            codes.append("loudness_outlier")
        rate = m.get("words_per_s")
        if (
            stats.rate_median is not None
            and stats.rate_sigma is not None
            and rate is not None
            and count_words(texts.get(key, "")) >= t.rate_min_words
            and m.get("leading_silence_s", 0) < m.get("duration_s", math.inf)
            and abs(rate - stats.rate_median) > t.outlier_k * stats.rate_sigma
        ):
            codes.append("rate_outlier")
        if codes:
            out[key] = codes
    return out


def collection_flags(
    metrics_by_key: Mapping[str, Mapping[str, Any]],
    texts: Mapping[str, str],
    thresholds: QAThresholds | None = None,
) -> dict[str, list[str]]:
    """Every take's codes, :func:`take_flags` and :func:`dataset_flags` merged in :data:`CODES`
    order: ``{key: [codes]}`` for every key of ``metrics_by_key`` (an empty list = no flag)."""
    t = thresholds or QAThresholds()
    outliers = dataset_flags(metrics_by_key, texts, t)
    out = {}
    for key, m in metrics_by_key.items():
        codes = set(take_flags(m, t)) | set(outliers.get(key, ()))
        out[key] = [code for code in CODES if code in codes]
    return out


def _f(metrics: Mapping[str, Any], key: str, unit: str = "", digits: int = 2) -> str:
    value = metrics.get(key)
    if value is None:
        return "?"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def describe(
    code: str,
    metrics: Mapping[str, Any],
    thresholds: QAThresholds | None = None,
    stats: DatasetStats | None = None,
) -> str:
    """One line saying why a take got ``code``, with its values and the limit, for people.

    Args:
        code: one of :data:`CODES`.
        metrics: the take's metrics (missing values show as ``?``).
        thresholds: the limits in force (default :class:`QAThresholds()`).
        stats: the collection's :func:`dataset_stats`, to show the range an outlier left.

    Raises:
        ValueError: ``code`` is not one of :data:`CODES`.
    """
    t = thresholds or QAThresholds()
    m = metrics
    if code == "asr_mismatch":
        heard = str(m.get("asr_text", ""))
        heard = heard if len(heard) <= 60 else heard[:59] + "…"
        return (
            f"ASR heard something else: CER {_f(m, 'cer')} > {t.max_cer:g}"
            f" (WER {_f(m, 'wer')}); heard {heard!r}"
        )
    if code == "truncated":
        if _asr_truncated(m, t):
            return (
                f"speech stops short: the transcript covers {_f(m, 'asr_len_ratio')} of the text's"
                f" characters and misses its last {_f(m, 'asr_tail_missing')} of words"
            )
        return (
            f"ends abruptly: the last 20 ms are at {_f(m, 'end_db', ' dB', 1)} of the speech level"
            f" (> {t.truncation_end_db:g} dB)"
        )
    if code == "lead_silence":
        return f"leading silence {_f(m, 'leading_silence_s', ' s')} > {t.max_lead_silence_s:g} s"
    if code == "trail_silence":
        return f"trailing silence {_f(m, 'trailing_silence_s', ' s')} > {t.max_trail_silence_s:g} s"
    if code == "clipping":
        return (
            f"clipping: {_f(m, 'clip_runs')} runs of {CLIP_RUN}+ samples at full scale"
            f" ({_f(m, 'clipped')} samples; peak {_f(m, 'peak_dbfs', ' dBFS')})"
        )
    if code == "too_quiet":
        return f"too quiet: {_f(m, 'loudness_lufs', ' LUFS', 1)} < {t.min_loudness_lufs:g} LUFS"
    if code == "low_snr":
        return f"noisy: SNR {_f(m, 'snr_db', ' dB', 1)} < {t.min_snr_db:g} dB"
    if code == "loudness_outlier":
        where = ""
        if stats and stats.loudness_median is not None and stats.loudness_sigma is not None:
            half = t.outlier_k * stats.loudness_sigma
            where = f" outside the collection's {stats.loudness_median:.1f} ± {half:.1f} LUFS"
        return f"loudness {_f(m, 'loudness_lufs', ' LUFS', 1)}{where or ' far from the collection median'}"
    if code == "rate_outlier":
        where = ""
        if stats and stats.rate_median is not None and stats.rate_sigma is not None:
            half = t.outlier_k * stats.rate_sigma
            where = f" outside the collection's {stats.rate_median:.2f} ± {half:.2f}"
        return f"speaking rate {_f(m, 'words_per_s')} words/s{where or ' far from the collection median'}"
    if code == "too_short":
        return f"duration {_f(m, 'duration_s', ' s')} < {t.min_duration_s:g} s"
    if code == "too_long":
        return f"duration {_f(m, 'duration_s', ' s')} > {t.max_duration_s:g} s"
    raise ValueError(f"unknown QA code {code!r} (one of {', '.join(CODES)})")
