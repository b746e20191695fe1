"""Dataset QA benchmark (not a test): false alarms on good clips, detection of planted defects, ASR pace.

Speaks the demo's CMU ARCTIC prompts (all 1,132, or the first ``--n``) with Piper's bundled
en_US *joe* voice, then runs the QA of :mod:`tui_app.qa` with the offline ASR round trip of
:mod:`tui_app.asr` (pocketsphinx) and reports:

1. **false alarms**: the share of these good clips with any flag (per-take limits and
   collection outliers), by code; target at most 2 %;
2. **ASR pace**: clips per second of the pocketsphinx step alone (one thread), and of the
   audio metrics;
3. **planted defects**: every ``--every``-th clip is damaged once per defect, measured (with
   ASR) and judged against the good collection; the share flagged with the expected code:

   * ``asr_mismatch``: the clip of another sentence (the prompt after it) under this text;
   * ``truncated``: the first half of the clip's samples;
   * ``lead_silence``: 2 s of digital silence in front;
   * ``clipping``: amplified 4x (12 dB) with 16-bit saturation;
   * ``too_quiet``: attenuated 60 dB;
   * ``low_snr``: white noise added 10 dB below the speech level.

Synthesized clips are kept in ``--cache`` (default ``$TMPDIR/tui_app-qa-bench``) and reused. Timings are
rough on a shared machine. Needs the ``local`` extra and loudness, jiwer, pocketsphinx, soxr,
num2words.

Usage:
    python bench/qa.py                 # 1,132 prompts (about 4 min of synthesis the first time)
    python bench/qa.py --n 200 --every 4
    python bench/qa.py --json
    python bench/qa.py --reuse-transcripts --set max_cer=0.65   # try a threshold on kept transcripts
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tempfile
import time
import wave
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the script's folder holds bench/http.py, which would shadow the standard library's http (httpx needs it)
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from tui_app.asr import PocketsphinxTranscriber, asr_metrics  # noqa: E402
from tui_app.config import ConfigError, read_qa_table  # noqa: E402
from tui_app.media import wav_bytes  # noqa: E402
from tui_app.qa import QAThresholds, audio_metrics, collection_flags  # noqa: E402
from tui_app.sources.dataset import read_dataset  # noqa: E402

PROMPTS = ROOT / "data" / "arctic" / "cmuarctic.data"
CACHE = Path(tempfile.gettempdir()) / "tui_app-qa-bench"
DEFECTS = ("asr_mismatch", "truncated", "lead_silence", "clipping", "too_quiet", "low_snr")


def prompts(n: int) -> list[tuple[str, str]]:
    """The first ``n`` festvox prompts, read as tui_app reads them: ``[(id, text)]``."""
    return [(item.key, item.text) for item in read_dataset(PROMPTS, {"format": "festvox"})[:n]]


def synthesize(items: list[tuple[str, str]], cache: Path) -> dict[str, bytes]:
    """WAV bytes per key, spoken with the project's Piper provider (cached in ``cache``)."""
    from tui_app.providers.piper import PiperProvider, bundled_voice
    from tui_app.settings import ProviderConfig

    cache.mkdir(parents=True, exist_ok=True)
    provider = PiperProvider(ProviderConfig("piper", "piper", options={"workers": 1}), ROOT)
    out = {}
    for key, text in items:
        path = cache / f"{key}.wav"
        if not path.exists():
            path.write_bytes(provider.synthesize(text, bundled_voice()).data)
        out[key] = path.read_bytes()
    return out


def _pcm(wav: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(wav)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float64), w.getframerate()


def _wav(x: np.ndarray, rate: int) -> bytes:
    return wav_bytes(np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes(), rate)


def plant(defect: str, wav: bytes, other: bytes, seed: int) -> bytes:
    """``wav`` damaged by ``defect`` (``other``: the clip of another sentence, for asr_mismatch)."""
    x, rate = _pcm(wav)
    if defect == "asr_mismatch":
        return other
    if defect == "truncated":
        return _wav(x[: x.size // 2], rate)
    if defect == "lead_silence":
        return _wav(np.concatenate([np.zeros(2 * rate), x]), rate)
    if defect == "clipping":
        return _wav(x * 4.0, rate)
    if defect == "too_quiet":
        return _wav(x * 10 ** (-60 / 20), rate)
    if defect == "low_snr":
        speech = np.sqrt(np.mean(x[np.abs(x) > 100] ** 2))
        noise = np.random.default_rng(seed).normal(0.0, speech * 10 ** (-10 / 20), x.size)
        return _wav(x + noise, rate)
    raise ValueError(defect)


def thresholds_from(settings: list[str]) -> QAThresholds:
    """The ``[qa]`` limits with ``--set KEY=VALUE`` overrides, read as a config file's ``[qa]`` is
    (:func:`tui_app.config.read_qa_table`). A VALUE is JSON (``0.65``, ``true``), else a string.

    Raises:
        ConfigError: one line naming ``--set`` and the key: a setting without ``=``, an unknown
            key, a bad value.
    """
    table: dict[str, object] = {}
    for setting in settings:
        key, equals, value = setting.partition("=")
        if not equals or not key.strip():
            raise ConfigError("--set", "", f"expected KEY=VALUE, got {setting!r}")
        try:
            table[key.strip()] = json.loads(value)
        except ValueError:
            table[key.strip()] = value  # not JSON: a string, which the reader names in its error
    return read_qa_table(table, "--set")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1132, help="prompts (default: all 1,132)")
    parser.add_argument("--every", type=int, default=10, help="plant defects in every N-th clip (10)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"synthesized clips ({CACHE})")
    parser.add_argument("--no-asr", action="store_true", help="skip the ASR round trip")
    parser.add_argument(
        "--reuse-transcripts",
        action="store_true",
        help="reuse transcripts kept in --cache by an earlier run (to tune thresholds; no ASR pace)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [qa] threshold to try instead of its default (repeatable), e.g. --set max_cer=0.65",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--show", type=int, default=10, help="false alarms to list (10)")
    args = parser.parse_args()

    try:
        thresholds = thresholds_from(args.set)
    except ConfigError as exc:
        parser.error(str(exc))
    items = prompts(args.n)
    texts = dict(items)
    started = time.perf_counter()
    wavs = synthesize(items, args.cache)
    synth_s = time.perf_counter() - started
    transcriber = None if args.no_asr else PocketsphinxTranscriber()

    metrics_s = asr_s = 0.0
    asr_clips = 0

    kept_path = args.cache / "transcripts-pocketsphinx-v3.json"  # v3: per-take state, CMN_START
    kept: dict[str, str] = json.loads(kept_path.read_text()) if kept_path.exists() else {}

    def measure(wav: bytes, text: str) -> dict:
        nonlocal metrics_s, asr_s, asr_clips
        t0 = time.perf_counter()
        m = audio_metrics(wav, text)
        t1 = time.perf_counter()
        metrics_s += t1 - t0
        if transcriber is not None:
            digest = hashlib.sha256(wav).hexdigest()
            if not (args.reuse_transcripts and digest in kept):
                kept[digest] = transcriber.transcribe(wav)
                asr_s += time.perf_counter() - t1
                asr_clips += 1
            m.update(asr_metrics(text, kept[digest]))
        return m

    good = {key: measure(wavs[key], text) for key, text in items}
    flagged = {k: v for k, v in collection_flags(good, texts, thresholds).items() if v}
    by_code = Counter(code for codes in flagged.values() for code in codes)

    keys = [key for key, _ in items]
    planted: dict[str, dict] = {}
    expected: dict[str, str] = {}
    planted_texts: dict[str, str] = {}
    for i in range(0, len(keys), args.every):
        key, other = keys[i], keys[(i + 1) % len(keys)]
        for defect in DEFECTS:
            name = f"{key}~{defect}"
            planted[name] = measure(plant(defect, wavs[key], wavs[other], i), texts[key])
            expected[name] = defect
            planted_texts[name] = texts[key]
    # judged inside the good collection, as they would be in a real one
    judged = collection_flags({**good, **planted}, {**texts, **planted_texts}, thresholds)
    detection = {d: [0, 0] for d in DEFECTS}
    misses: dict[str, list[str]] = {d: [] for d in DEFECTS}
    for name, defect in expected.items():
        detection[defect][1] += 1
        if defect in judged[name]:
            detection[defect][0] += 1
        else:
            misses[defect].append(f"{name} {judged[name]}")

    if transcriber is not None:
        kept_path.write_text(json.dumps(kept))
    report = {
        "clips": len(items),
        "synthesis_s": round(synth_s, 1),
        "false_alarms": len(flagged),
        "false_alarm_rate": round(len(flagged) / len(items), 4),
        "false_alarms_by_code": dict(by_code.most_common()),
        "metrics_clips_per_s": round((len(good) + len(planted)) / metrics_s, 1),
        "asr_clips_per_s": round(asr_clips / asr_s, 2) if asr_s else None,
        "mean_wer": round(float(np.mean([m["wer"] for m in good.values()])), 3) if transcriber else None,
        "mean_cer": round(float(np.mean([m["cer"] for m in good.values()])), 3) if transcriber else None,
        "detection": {d: f"{hit}/{total}" for d, (hit, total) in detection.items()},
        "detection_rate": round(
            sum(h for h, _ in detection.values()) / sum(t for _, t in detection.values()), 4
        ),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"clips: {len(items)} (synthesis {synth_s:.0f} s; cached in {args.cache})")
    print(
        f"false alarms on good clips: {len(flagged)} = {100 * report['false_alarm_rate']:.2f} %"
        f"  by code: {dict(by_code.most_common()) or '-'}"
    )
    for key, codes in list(flagged.items())[: args.show]:
        m = good[key]
        extra = f" cer {m['cer']:.2f} heard {m['asr_text']!r}" if "cer" in m else ""
        print(f"  {key} {codes}: {texts[key]!r}{extra}")
    print(f"audio metrics: {report['metrics_clips_per_s']} clips/s")
    if transcriber is not None:
        pace = f"{report['asr_clips_per_s']} clips/s" if asr_clips else "transcripts reused"
        print(
            f"ASR (pocketsphinx, one thread): {pace};"
            f" mean WER {report['mean_wer']:.3f}, mean CER {report['mean_cer']:.3f} on good clips"
        )
    print(f"planted defects detected: {100 * report['detection_rate']:.1f} %")
    for defect, (hit, total) in detection.items():
        print(
            f"  {defect:13s} {hit}/{total}" + (f"   missed: {misses[defect][:3]}" if misses[defect] else "")
        )


if __name__ == "__main__":
    main()
