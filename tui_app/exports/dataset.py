"""Dataset exports for training: LJSpeech, HF audiofolder, NeMo and Piper (see :mod:`tui_app.exports`).

Audio preparation (:class:`~tui_app.exports.ExportOptions`; any of these rewrites the clip, in
this order, else the take file is copied as it is):

1. ``trim_silence``: cut leading and trailing silence, keeping ``pad_s`` seconds at each end (or
   what there is). Silence is the QA rule of :mod:`tui_app.qa`: 10 ms frames more than 40 dB
   below the loudest frame, or below -90 dBFS. A clip without speech is left whole (a note says so).
2. ``sample_rate``: resample with soxr (libsoxr's "HQ" filter, linear phase).
3. ``loudness_lufs``: scale to that integrated loudness (ITU-R BS.1770-4, pyloudnorm; a clip
   shorter than a 400 ms block is measured repeated up to 400 ms). pyloudnorm, not the QA's
   meter (libloudness, :func:`tui_app.qa.loudness_lufs`): it is the meter a dataset is checked
   with in Python, and that check should read the target. The two differ by a median 0.09 LU on
   speech clips, at most about 0.7 (see there). When the gain would lift the
   sample peak above -1 dBFS, the gain stops there (no limiter, no clipping) and a note gives the
   loudness reached. A clip below BS.1770's absolute gate (-70 LUFS) is left as it is, with a note.

The result is 16-bit PCM WAV again (rounded, saturated at full scale), with the take's channels.

``exclude_flagged`` leaves out takes whose ``qa_flags`` is set (skipped as ``flagged: FLAGS``).

Train/validation split (``val_ratio`` > 0): the keys are ordered by sha256 of ``"SEED:KEY"``
and the first ``round(val_ratio x n)`` (at least 1, at most n - 1) go to validation
(:func:`split_keys`): deterministic for a seed, independent of the store's order, disjoint. Per format:

* ``ljspeech``: ``metadata.csv`` (training rows) and ``metadata_val.csv`` (validation), the
  same ``ID|Transcription|Normalized Transcription`` rows; every clip in ``wavs/``.
* ``audiofolder``: Hugging Face's split folders (huggingface.co/docs/datasets/audio_load, "split
  names from the directory"): ``train/metadata.csv`` + ``train/wavs/``, ``validation/metadata.csv``
  + ``validation/wavs/``. Without a split, ``metadata.csv`` + ``wavs/`` as before.
* ``nemo``: ``manifest.json`` (training) and ``manifest_val.json`` (validation; NeMo's
  ``validation_ds.manifest_filepath``), ``duration`` being the exported clip's.
* ``piper``: for piper1-gpl's trainer (docs/TRAINING.md: ``python3 -m piper.train fit
  --data.csv_path OUT/metadata.csv --data.audio_dir OUT/wavs --model.sample_rate RATE ...``):
  ``metadata.csv``, ``|``-delimited, one speaker, no header, ``ID.wav|TEXT`` (the file name in
  ``--data.audio_dir``, then the text espeak-ng will phonemize: the normalized transcription when
  the source has one, as it was spoken), written with Python's csv module as the trainer reads it
  (``csv.reader(f, delimiter="|")``: a text holding ``|`` or ``"`` is quoted); ``wavs/ID.wav``.
  With a split, ``metadata_val.csv`` holds the validation rows (the trainer also holds out its own
  ``--data.validation_split`` from ``metadata.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import math
import os
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from ..settings import CollectionConfig, Config
from ..store import Store
from . import ExportError, ExportOptions, ExportReport, Staging, export_copy, ready, write_text

DATASET_FORMATS = ("ljspeech", "audiofolder", "nemo", "piper")

#: The silence rule of :mod:`tui_app.qa` (exports sit beside qa in the layers, so it is restated):
#: 10 ms frames, speech above the loudest frame minus 40 dB and above -90 dBFS.
_WINDOW_S = 0.010
_BELOW_PEAK_DB = 40.0
_FLOOR_DBFS = -90.0
#: Sample peak a loudness gain may reach, full scale (-1 dBFS).
PEAK_CEILING = 10 ** (-1 / 20)
_BLOCK_S = 0.4


@dataclass(frozen=True)
class PreparedAudio:
    """A clip after :func:`prepare_audio`.

    Attributes:
        wav: 16-bit PCM WAV bytes.
        duration_s: its length, seconds.
        sample_rate: its rate, Hz.
        loudness_lufs: its integrated loudness when it was normalized, LUFS, else None.
        remark: what did not go as asked (peak-limited, silent), or None.
    """

    wav: bytes
    duration_s: float
    sample_rate: int
    loudness_lufs: float | None = None
    remark: str | None = None


def _decode(wav: bytes) -> tuple[np.ndarray, int]:
    """``(float64 samples of shape (frames, channels), full scale 1.0; rate Hz)`` of a 16-bit PCM WAV."""
    import numpy as np  # loaded when audio is processed, not with the config

    try:
        with wave.open(io.BytesIO(wav), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            body = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a valid WAV file: {exc}") from None
    if width != 2:
        raise ValueError(f"training exports need 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(body[: len(body) // (2 * channels) * 2 * channels], dtype="<i2")
    return x.reshape(-1, channels).astype(np.float64) / 32768.0, rate


def _encode(x: np.ndarray, rate: int) -> bytes:
    import numpy as np  # loaded when audio is processed, not with the config

    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def speech_bounds(x: np.ndarray, rate: int) -> tuple[int, int] | None:
    """``(first, end)`` sample indices of the speech in ``x`` (frames, channels; full scale 1.0):
    from the first speech frame's start to the last one's end, or None without speech."""
    import numpy as np  # loaded when audio is processed, not with the config

    window = max(1, int(round(rate * _WINDOW_S)))
    mono = x.mean(axis=1)
    n = mono.size // window
    if not n:
        return None
    tail = mono[n * window :]
    power = np.mean(mono[: n * window].reshape(n, window) ** 2, axis=1)
    if tail.size:  # the last, partial frame counts too
        power = np.append(power, np.mean(tail**2))
    level = 10 * np.log10(np.maximum(power, 1e-12))
    gate = max(float(level.max()) - _BELOW_PEAK_DB, _FLOOR_DBFS)
    speech = np.flatnonzero(level > gate)
    if not speech.size:
        return None
    return int(speech[0] * window), int(min(mono.size, (speech[-1] + 1) * window))


def integrated_loudness(x: np.ndarray, rate: int) -> float:
    """BS.1770-4 integrated loudness of ``x`` (frames, channels; full scale 1.0), LUFS, via pyloudnorm;
    -inf when every block is below the absolute gate. Clips shorter than 400 ms are measured
    repeated up to 400 ms (the same mean square)."""
    import numpy as np  # loaded when audio is processed, not with the config

    pyloudnorm = importlib.import_module("pyloudnorm")  # no type hints

    if not x.shape[0]:
        return -math.inf
    block = int(math.ceil(_BLOCK_S * rate)) + 1
    if x.shape[0] < block:
        x = np.tile(x, (-(-block // x.shape[0]), 1))
    value = float(pyloudnorm.Meter(rate).integrated_loudness(x if x.shape[1] > 1 else x[:, 0]))
    return value if math.isfinite(value) and value > -70.0 else -math.inf


def prepare_audio(
    wav: bytes,
    *,
    trim_silence: bool = False,
    pad_s: float = 0.1,
    sample_rate: int | None = None,
    loudness_lufs: float | None = None,
) -> PreparedAudio:
    """Trim, resample and loudness-normalize one 16-bit PCM WAV (see the module docstring).

    Args:
        wav: the take's WAV bytes.
        trim_silence: cut leading and trailing silence, keeping ``pad_s`` seconds at each end.
        pad_s: seconds of silence kept at each end when trimming (>= 0).
        sample_rate: resample to this rate, Hz (None: keep).
        loudness_lufs: scale to this integrated loudness, LUFS (None: keep).

    Raises:
        ValueError: the bytes are not a 16-bit PCM WAV.
    """
    import numpy as np  # loaded when audio is processed, not with the config

    soxr = importlib.import_module("soxr")  # no type hints

    x, rate = _decode(wav)
    remarks = []
    if trim_silence:
        bounds = speech_bounds(x, rate)
        if bounds is None:
            remarks.append("no speech found: not trimmed")
        else:
            pad = int(round(pad_s * rate))
            x = x[max(0, bounds[0] - pad) : min(x.shape[0], bounds[1] + pad)]
    if sample_rate and sample_rate != rate and x.shape[0]:
        x = np.asarray(soxr.resample(x, rate, sample_rate, quality="HQ"), dtype=np.float64).reshape(
            -1, x.shape[1]
        )
        rate = sample_rate
    elif sample_rate:
        rate = sample_rate
    reached = None
    if loudness_lufs is not None:
        before = integrated_loudness(x, rate)
        if not math.isfinite(before):
            remarks.append("below -70 LUFS: loudness not normalized")
        else:
            gain = 10 ** ((loudness_lufs - before) / 20)
            peak = float(np.max(np.abs(x))) if x.size else 0.0
            if peak * gain > PEAK_CEILING:
                gain = PEAK_CEILING / peak
                reached = round(before + 20 * math.log10(gain), 2)
                remarks.append(f"peak-limited to -1 dBFS: {reached:.1f} LUFS instead of {loudness_lufs:g}")
            else:
                reached = float(loudness_lufs)
            x = x * gain
    return PreparedAudio(
        _encode(x, rate), x.shape[0] / rate, rate, reached, "; ".join(remarks) if remarks else None
    )


def split_keys(keys: Sequence[str], val_ratio: float, seed: int) -> set[str]:
    """The keys of the validation set: deterministic from ``seed``, whatever the order of ``keys``.

    Keys are ranked by sha256 of ``"SEED:KEY"``; the first ``round(val_ratio x n)`` are validation,
    at least 1 and at most n - 1 when ``val_ratio`` > 0 and n >= 2; none when ``val_ratio`` is 0.

    Raises:
        ValueError: ``val_ratio`` outside [0, 1).
    """
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be >= 0 and < 1, got {val_ratio!r}")
    unique = sorted(set(keys))
    if val_ratio == 0 or len(unique) < 2:
        return set()
    count = min(max(1, round(val_ratio * len(unique))), len(unique) - 1)
    ranked = sorted(unique, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    return set(ranked[:count])


def _check_options(options: ExportOptions) -> None:
    if not (math.isfinite(options.pad_s) and options.pad_s >= 0):
        raise ExportError(f"pad_s must be >= 0 seconds, got {options.pad_s!r}")
    if options.loudness_lufs is not None and not -70.0 <= options.loudness_lufs <= 0.0:
        raise ExportError(
            f"loudness must be between -70 and 0 LUFS (e.g. -23), got {options.loudness_lufs!r}"
        )
    if options.sample_rate is not None and not 4_000 <= options.sample_rate <= 384_000:
        raise ExportError(f"sample rate must be 4000 to 384000 Hz (e.g. 22050), got {options.sample_rate!r}")
    if not 0.0 <= options.val_ratio < 1.0:
        raise ExportError(f"val ratio must be >= 0 and < 1, got {options.val_ratio!r}")


@dataclass
class _Row:
    key: str
    text: str
    normalized: str
    wav: str  # relative to its metadata file
    duration_s: float
    val: bool


def export_dataset(
    config: Config,
    store: Store,
    coll: CollectionConfig,
    out: Path,
    options: ExportOptions,
    *,
    fmt: str = "ljspeech",
) -> ExportReport:
    """Export a dataset collection as LJSpeech, HF audiofolder, a NeMo manifest or Piper training data.

    Takes ``trim_silence``, ``pad_s``, ``loudness_lufs``, ``sample_rate``, ``val_ratio``, ``seed``
    and ``exclude_flagged`` from ``options`` (see the module docstring); remarks on single clips
    (peak-limited, silent) go to ``report.notes`` as ``KEY: ...``.

    Raises:
        ExportError: unknown format, an option out of range, ``out`` exists, no such collection,
            nothing completed (or everything excluded), a take file missing, changed or not a
            16-bit PCM WAV when the audio is to be prepared.
    """
    if fmt not in DATASET_FORMATS:
        raise ExportError(f"unknown format {fmt!r} (one of {', '.join(DATASET_FORMATS)})")
    _check_options(options)
    report = ExportReport(out.resolve())
    found = ready(store, coll, report, options)
    if not found:
        raise ExportError(f"{coll.name}: no completed entries to export")
    if options.exclude_flagged:
        kept = []
        for item, take in found:
            if take.qa_flags:
                report.skipped.append((item.key, f"flagged: {take.qa_flags}"))
            else:
                kept.append((item, take))
        if not kept:
            raise ExportError(f"{coll.name}: every completed entry has a QA flag; nothing left to export")
        found = kept
    val = split_keys([item.key for item, _ in found], options.val_ratio, options.seed)
    split_dirs = fmt == "audiofolder" and bool(val)
    prepare = options.trim_silence or options.loudness_lufs is not None or options.sample_rate is not None
    with Staging(out) as stage:
        rows = []
        for item, take in found:
            is_val = item.key in val
            folder = ("validation" if is_val else "train") + "/wavs" if split_dirs else "wavs"
            (stage.tmp / folder).mkdir(parents=True, exist_ok=True)
            dst = stage.tmp / folder / f"{item.key}.wav"
            what = f"{coll.name}/{item.key} take {take.number}"
            export_copy(config, take.path, take.sha256, what, dst)
            duration = take.duration_s or 0.0
            if prepare:
                try:
                    prepared = prepare_audio(
                        dst.read_bytes(),
                        trim_silence=options.trim_silence,
                        pad_s=options.pad_s,
                        sample_rate=options.sample_rate,
                        loudness_lufs=options.loudness_lufs,
                    )
                except ValueError as exc:
                    raise ExportError(f"{what}: {exc}; export it without audio options") from None
                _write_bytes(dst, prepared.wav)
                duration = prepared.duration_s
                if prepared.remark:
                    report.notes.append(f"{item.key}: {prepared.remark}")
            normalized = str(item.params.get("normalized") or item.text)
            rows.append(_Row(item.key, item.text, normalized, f"wavs/{item.key}.wav", duration, is_val))
        train = [r for r in rows if not r.val]
        held = [r for r in rows if r.val]
        if fmt == "ljspeech":
            _write_sets(stage.tmp, "metadata{}.csv", train, held, _ljspeech)
        elif fmt == "piper":
            _write_sets(stage.tmp, "metadata{}.csv", train, held, _piper)
        elif fmt == "nemo":
            wavs = stage.out / "wavs"
            _write_sets(stage.tmp, "manifest{}.json", train, held, lambda rs: _nemo(rs, wavs))
        elif split_dirs:
            write_text(stage.tmp / "train" / "metadata.csv", _audiofolder(train))
            write_text(stage.tmp / "validation" / "metadata.csv", _audiofolder(held))
        else:
            write_text(stage.tmp / "metadata.csv", _audiofolder(rows))
        report.exported = len(rows)
    return report


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_sets(folder: Path, pattern: str, train: list[_Row], held: list[_Row], render) -> None:
    """``pattern`` with ``""`` for the training rows and, when there are any, ``"_val"`` for the others."""
    write_text(folder / pattern.format(""), render(train))
    if held:
        write_text(folder / pattern.format("_val"), render(held))


def _ljspeech(rows: list[_Row]) -> str:
    return "".join(f"{r.key}|{_one_line(r.text)}|{_one_line(r.normalized)}\n" for r in rows)


def _piper(rows: list[_Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="|", lineterminator="\n")
    writer.writerows([f"{r.key}.wav", " ".join(r.normalized.split())] for r in rows)
    return buf.getvalue()


def _audiofolder(rows: list[_Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file_name", "transcription"])
    writer.writerows([r.wav, r.text] for r in rows)
    return buf.getvalue()


def _nemo(rows: list[_Row], wavs: Path) -> str:
    return "".join(
        json.dumps(
            {
                "audio_filepath": str(wavs / f"{r.key}.wav"),
                "duration": round(r.duration_s, 3),
                "text": r.normalized,
            },
            ensure_ascii=False,
        )
        + "\n"
        for r in rows
    )


def _one_line(text: str) -> str:
    return " ".join(text.replace("|", " ").split())
