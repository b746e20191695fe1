"""QA metrics, stable flag codes and dataset outliers (tui_app.qa), on known signals and on
planted defects in real Piper clips (the bundled joe voice, with the pocketsphinx round trip)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tui_app.config import ConfigError, read_qa_table
from tui_app.media import wav_bytes
from tui_app.qa import (
    CODES,
    QAThresholds,
    audio_metrics,
    collection_flags,
    dataset_flags,
    dataset_stats,
    describe,
    loudness_lufs,
    take_flags,
)

ROOT = Path(__file__).resolve().parents[1]
RATE = 22_050
#: Prompts of the demo (CMU ARCTIC): a0001 and a0004 hold commas (pauses), the others run on.
KEYS = ("arctic_a0001", "arctic_a0003", "arctic_a0004", "arctic_a0007", "arctic_a0010", "arctic_a0012")


def _prompts() -> dict[str, str]:
    out = {}
    for line in (ROOT / "data" / "arctic" / "cmuarctic.data").read_text().splitlines():
        key, _, rest = line.strip("( )").partition(" ")
        out[key] = rest.strip().strip('"')
    return out


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[str, bytes]]:
    """``{key: (text, wav)}``: real Piper takes of a few ARCTIC prompts, spoken once per module."""
    pytest.importorskip("piper", reason="the local extra (piper-tts) is not installed")
    from tui_app.providers.piper import PiperProvider, bundled_voice
    from tui_app.settings import ProviderConfig

    provider = PiperProvider(ProviderConfig("piper", "piper", options={"workers": 1}), ROOT)
    texts = _prompts()
    return {key: (texts[key], provider.synthesize(texts[key], bundled_voice()).data) for key in KEYS}


@pytest.fixture(scope="module")
def transcriber():
    pytest.importorskip("pocketsphinx")
    from tui_app.asr import PocketsphinxTranscriber

    return PocketsphinxTranscriber()


def _samples(wav: bytes) -> np.ndarray:
    start = wav.find(b"data") + 8
    return np.frombuffer(wav[start:], dtype="<i2").astype(np.float64)


def _wav(x: np.ndarray, rate: int = RATE) -> bytes:
    return wav_bytes(np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes(), rate)


def _levels(x: np.ndarray) -> np.ndarray:
    """dB levels of consecutive 10 ms frames."""
    n = x.size // 220
    return 10 * np.log10(np.maximum(np.mean(x[: n * 220].reshape(n, 220) ** 2, axis=1), 1e-3))


def _cut_mid_word(x: np.ndarray) -> np.ndarray:
    """``x`` cut at its loudest 10 ms between 40 % and 60 % of its length (Piper's timing varies)."""
    levels = _levels(x)
    low, high = int(levels.size * 0.4), int(levels.size * 0.6)
    return x[: (low + int(np.argmax(levels[low:high]))) * 220 + 110]


def _cut_in_first_pause(x: np.ndarray) -> np.ndarray:
    """``x`` cut in the middle of its first pause (80 ms or more more than 40 dB under its peak)."""
    quiet = _levels(x) < _levels(x).max() - 40
    speech = np.flatnonzero(~quiet)
    run = 0
    for i in range(speech[0], speech[-1]):
        run = run + 1 if quiet[i] else 0
        if run >= 8 and not quiet[i + 1]:
            return x[: (i - run // 2) * 220]
    raise AssertionError("no pause found")


def _judge(wav: bytes, text: str, transcriber=None) -> tuple[dict, list[str]]:
    from tui_app.asr import asr_metrics

    metrics: dict = dict(audio_metrics(wav, text))
    if transcriber is not None:
        metrics.update(asr_metrics(text, transcriber.transcribe(wav)))
    return metrics, take_flags(metrics)


def _tone(seconds: float, amplitude: float, *, lead: float = 0.0, trail: float = 0.0, freq: float = 997.0):
    t = np.arange(int(RATE * seconds)) / RATE
    tone = amplitude * 32768 * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(int(RATE * lead)), tone, np.zeros(int(RATE * trail))])


# --------------------------------------------------------------------------- real clips


def test_good_piper_clips_are_not_flagged(clips, transcriber):
    for key, (text, wav) in clips.items():
        metrics, flags = _judge(wav, text, transcriber)
        assert flags == [], (key, flags, metrics)
        assert -30 < metrics["loudness_lufs"] < -14 and metrics["snr_db"] > 40 and metrics["end_db"] < -60


def test_a_clip_of_another_sentence_is_an_asr_mismatch(clips, transcriber):
    text = clips["arctic_a0003"][0]
    for other in ("arctic_a0007", "arctic_a0012"):
        metrics, flags = _judge(clips[other][1], text, transcriber)
        assert "asr_mismatch" in flags and "truncated" not in flags, (other, flags, metrics)
        assert "ASR heard something else" in describe("asr_mismatch", metrics)


def test_a_clip_cut_mid_word_is_truncated_by_its_abrupt_end(clips, transcriber):
    text, wav = clips["arctic_a0004"]
    cut = _wav(_cut_mid_word(_samples(wav)))
    metrics, flags = _judge(cut, text)  # the level alone, no ASR
    assert flags == ["truncated"], metrics
    assert "ends abruptly" in describe("truncated", metrics)
    metrics, flags = _judge(cut, text, transcriber)
    assert "truncated" in flags and "asr_mismatch" not in flags, metrics


def test_a_clip_cut_in_a_pause_is_truncated_by_the_transcript(clips, transcriber):
    # "Author of the danger trail, | Philip Steels, etc." cut in the comma's pause: the level
    # cannot tell, the transcript misses the end of the text
    text, wav = clips["arctic_a0001"]
    metrics, flags = _judge(_wav(_cut_in_first_pause(_samples(wav))), text, transcriber)
    assert metrics["end_db"] < -40
    assert flags == ["truncated"], metrics
    assert "transcript covers" in describe("truncated", metrics)


def test_two_seconds_of_silence_in_front_is_lead_silence(clips, transcriber):
    text, wav = clips["arctic_a0007"]
    metrics, flags = _judge(_wav(np.concatenate([np.zeros(2 * RATE), _samples(wav)])), text, transcriber)
    assert flags == ["lead_silence"], metrics
    assert metrics["leading_silence_s"] == pytest.approx(2.0, abs=0.1)
    assert "leading silence 2." in describe("lead_silence", metrics)


def test_an_amplified_clip_is_clipping(clips, transcriber):
    text, wav = clips["arctic_a0010"]
    metrics, flags = _judge(_wav(_samples(wav) * 4.0), text, transcriber)
    assert "clipping" in flags and "asr_mismatch" not in flags, metrics
    assert metrics["clip_runs"] > 10 and metrics["peak_dbfs"] == 0.0


def test_a_near_silent_clip_is_too_quiet_and_nothing_else(clips, transcriber):
    text, wav = clips["arctic_a0012"]
    metrics, flags = _judge(_wav(_samples(wav) * 10 ** (-60 / 20)), text)
    assert flags == ["too_quiet"], metrics
    # below BS.1770's absolute gate: measured raised to full scale, so 60 LU under the original's
    original = audio_metrics(wav, text)["loudness_lufs"]
    assert metrics["loudness_lufs"] == pytest.approx(original - 60, abs=0.2)
    assert "too quiet" in describe("too_quiet", metrics)


def test_noise_10_db_below_speech_is_low_snr(clips):
    text, wav = clips["arctic_a0003"]
    x = _samples(wav)
    speech = np.sqrt(np.mean(x[np.abs(x) > 100] ** 2))
    noisy = x + np.random.default_rng(1).normal(0, speech * 10 ** (-10 / 20), x.size)
    metrics, flags = _judge(_wav(noisy), text)
    assert "low_snr" in flags and "truncated" not in flags, metrics
    assert 5 < metrics["snr_db"] < 15


def test_a_truncated_take_is_a_rate_outlier_in_its_collection(clips):
    # a0001 is left out: its commas and "etc." make it slow for so small a collection
    same_pace = {k: v for k, v in clips.items() if k != "arctic_a0001"}
    texts = {k: t for k, (t, _) in same_pace.items()}
    metrics = {k: audio_metrics(w, t) for k, (t, w) in same_pace.items()}
    text, wav = clips["arctic_a0003"]
    metrics["cut"] = audio_metrics(_wav(_cut_mid_word(_samples(wav))), text)
    texts["cut"] = text
    loose = QAThresholds(outlier_min_takes=5)
    assert dataset_flags(metrics, texts, loose) == {"cut": ["rate_outlier"]}
    assert dataset_flags(metrics, texts) == {}  # too few takes to judge by default
    flags = collection_flags(metrics, texts, loose)
    assert flags["cut"] == ["truncated", "rate_outlier"] and flags["arctic_a0003"] == []


# --------------------------------------------------------------------------- known signals


def test_measuring_a_take_loads_neither_scipy_nor_pyloudnorm():
    # every worker process measures its takes: scipy.signal would cost each 0.6 s of CPU to import
    import subprocess
    import sys

    code = (
        "import sys; from tui_app.kinds import get_kind; from tui_app.media import wav_bytes;"
        " assert 'loudness' not in sys.modules, 'eager';"
        " m = get_kind('dataset').measure(wav_bytes(bytes(range(256)) * 200, 22050), 'a b');"
        " assert m and m['loudness_lufs'] > -70, m; assert 'loudness' in sys.modules, 'not loaded';"
        " assert not {'scipy', 'pyloudnorm'} & set(sys.modules), 'scipy loaded'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_loudness_of_a_sine_follows_bs1770():
    # BS.1770: a 997 Hz sine at full scale reads -3.01 LUFS; at -20 dBFS, -23.01
    for seconds in (1.0, 0.2):  # 0.2 s: shorter than one 400 ms gating block
        m = audio_metrics(_wav(_tone(seconds, 0.1)), "a")
        assert m["loudness_lufs"] == pytest.approx(-23.01, abs=0.1), seconds
    assert audio_metrics(_wav(np.zeros(RATE)), "a")["loudness_lufs"] == -120.0
    assert audio_metrics(_wav(_tone(1.0, 10 ** (-80 / 20))), "a")["loudness_lufs"] == pytest.approx(
        -83, abs=0.3
    )


def test_the_loudness_of_a_steady_tone_does_not_move_with_its_length():
    # BS.1770 leaves out the last, incomplete gating block (pyloudnorm 0.2 measures it: 0.47 s, -23.23)
    readings = {
        s: audio_metrics(_wav(_tone(s, 0.1)), "a")["loudness_lufs"] for s in (0.5, 0.55, 0.6, 1.05, 3.0)
    }
    assert max(readings.values()) - min(readings.values()) <= 0.02, readings


@pytest.mark.parametrize("rate", [22_050, 48_000])
def test_the_loudness_meter_agrees_with_pyloudnorm_on_steady_noise(rate):
    # two independent BS.1770 implementations (complete blocks only: 10.0 s is 97 whole blocks)
    import pyloudnorm

    x = np.random.default_rng(3).normal(0, 0.05, rate * 10)
    ours = loudness_lufs(x, rate)
    assert ours == pytest.approx(float(pyloudnorm.Meter(rate).integrated_loudness(x)), abs=0.15)
    assert loudness_lufs(np.stack([x, x], axis=1), rate) == pytest.approx(ours + 3.01, abs=0.05)


def test_snr_of_a_tone_in_white_noise():
    rng = np.random.default_rng(7)
    tone = _tone(2.0, 0.3, lead=0.5, trail=0.5)
    noise_rms = 0.3 * 32768 / math.sqrt(2) * 10 ** (-30 / 20)  # 30 dB below the tone
    m = audio_metrics(_wav(tone + rng.normal(0, noise_rms, tone.size)), "a b c")
    assert m["snr_db"] == pytest.approx(10 * math.log10(1 + 1000), abs=1.0)
    assert take_flags(m) == []
    quiet = audio_metrics(_wav(tone), "a b c")
    assert quiet["snr_db"] == pytest.approx(-13.5 + 101.1, abs=0.3)  # pauses at the quantization floor


def test_silences_duration_and_rate_of_a_tone():
    m = audio_metrics(_wav(_tone(2.0, 0.5, lead=0.5, trail=0.25, freq=220)), "one two three four five")
    assert m["duration_s"] == pytest.approx(2.75, abs=0.001)
    assert m["leading_silence_s"] == pytest.approx(0.5, abs=0.011)
    assert m["trailing_silence_s"] == pytest.approx(0.25, abs=0.011)
    assert m["words_per_s"] == pytest.approx(2.5, rel=0.02)
    assert m["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.01)
    # the gate follows the clip's level: the same clip 50 dB quieter has the same silences
    q = audio_metrics(_wav(_tone(2.0, 0.5 * 10 ** (-50 / 20), lead=0.5, trail=0.25, freq=220)), "a")
    assert (q["leading_silence_s"], q["trailing_silence_s"]) == (
        m["leading_silence_s"],
        m["trailing_silence_s"],
    )


def test_end_level_tells_an_abrupt_end_from_a_decay():
    tone = _tone(1.0, 0.5, lead=0.3, freq=220)
    abrupt = audio_metrics(_wav(tone), "a")
    fade = tone * np.clip(np.linspace(3.0, 0.0, tone.size), 0, 1)
    faded = audio_metrics(_wav(np.concatenate([fade, np.zeros(RATE // 5)])), "a")
    assert abrupt["end_db"] > -3 and "truncated" in take_flags(abrupt)
    assert faded["end_db"] < -80 and "truncated" not in take_flags(faded)


def test_clip_runs_count_flat_tops_not_single_full_scale_samples():
    x = np.zeros(RATE)
    x[1000] = 32767  # a peak normalized to full scale
    x[5000] = -32768
    single = audio_metrics(_wav(x), "a")
    assert single["clipped"] == 2 and single["clip_runs"] == 0 and "clipping" not in take_flags(single)
    x[8000:8003] = 32767  # one flat top of 3 samples
    x[9000:9010] = -32768
    flat = audio_metrics(_wav(x), "a")
    assert flat["clip_runs"] == 2 and flat["clipped"] == 15 and "clipping" in take_flags(flat)
    # stereo: runs are counted per channel
    stereo = np.stack([x, np.zeros_like(x)], axis=1).ravel()
    data = wav_bytes(np.clip(stereo, -32768, 32767).astype("<i2").tobytes(), RATE, channels=2)
    assert audio_metrics(data, "a")["clip_runs"] == 2


def test_short_and_long_takes():
    short = audio_metrics(_wav(_tone(0.2, 0.3, lead=0.03, trail=0.03)), "hi")
    assert take_flags(short) == ["too_short"] and "0.3 s" in describe("too_short", short)
    long = {"duration_s": 25.0, "leading_silence_s": 0.1, "trailing_silence_s": 0.1}
    assert take_flags(long) == ["too_long"]
    assert take_flags(long, QAThresholds(max_duration_s=30)) == []


# --------------------------------------------------------------------------- flags and thresholds


def test_take_flags_judge_only_what_was_measured_and_keep_code_order():
    assert take_flags({}) == []
    m = {
        "duration_s": 3.0,
        "leading_silence_s": 1.5,
        "trailing_silence_s": 1.2,
        "clip_runs": 1,
        "loudness_lufs": -45.0,
        "snr_db": 12.0,
        "end_db": -80.0,
        "cer": 0.9,
        "wer": 1.0,
    }
    assert take_flags(m) == ["asr_mismatch", "lead_silence", "trail_silence", "clipping", "too_quiet"]
    # low_snr is judged for a take loud enough (a too quiet one sits on the quantization noise)
    assert take_flags({**m, "loudness_lufs": -30.0})[-1] == "low_snr"
    # no speech at all: silences and noise mean nothing, the take is just too quiet
    silent = audio_metrics(_wav(np.zeros(2 * RATE)), "some words here")
    assert take_flags(silent) == ["too_quiet"]
    # WER is judged only when asked for
    assert take_flags({"cer": 0.3, "wer": 0.9}) == []
    assert take_flags({"cer": 0.3, "wer": 0.9}, QAThresholds(max_wer=0.5)) == ["asr_mismatch"]


def test_a_transcript_missing_the_end_is_truncated_not_mismatched():
    cut = {"cer": 0.55 + 0.2, "asr_len_ratio": 0.5, "asr_tail_missing": 0.5, "asr_prefix_cer": 0.1}
    assert take_flags(cut) == ["truncated"]
    wrong = {**cut, "asr_prefix_cer": 0.9}  # the beginning does not match either
    assert take_flags(wrong) == ["asr_mismatch"]


def test_dataset_outliers_use_median_and_mad_and_need_enough_words():
    rng = np.random.default_rng(3)
    metrics, texts = {}, {}
    for n in range(40):
        metrics[f"k{n}"] = {
            "duration_s": 3.0,
            "leading_silence_s": 0.1,
            "words_per_s": float(3.75 + rng.normal(0, 0.3)),
            "loudness_lufs": float(-21 + rng.normal(0, 1.0)),
        }
        texts[f"k{n}"] = "one two three four five six seven eight"
    metrics["fast"] = {
        "duration_s": 1.5,
        "leading_silence_s": 0.1,
        "words_per_s": 7.5,
        "loudness_lufs": -21.0,
    }
    texts["fast"] = texts["k0"]
    metrics["short"] = {
        "duration_s": 0.5,
        "leading_silence_s": 0.05,
        "words_per_s": 9.0,
        "loudness_lufs": -21.0,
    }
    texts["short"] = "Yes, sir."  # two words: its rate is not judged
    metrics["loud"] = {"duration_s": 3.0, "leading_silence_s": 0.1, "words_per_s": 3.7, "loudness_lufs": -8.0}
    texts["loud"] = texts["k0"]
    assert dataset_flags(metrics, texts) == {"fast": ["rate_outlier"], "loud": ["loudness_outlier"]}
    stats = dataset_stats(metrics, texts)
    assert stats.rate_median == pytest.approx(3.75, abs=0.15) and stats.rate_takes == 42
    assert describe("rate_outlier", metrics["fast"], stats=stats).startswith(
        "speaking rate 7.50 words/s outside"
    )
    assert "LUFS" in describe("loudness_outlier", metrics["loud"], stats=stats)
    # a very uniform collection: the sigma floor keeps small deviations in
    flat = {f"u{n}": {"words_per_s": 3.0 + 0.001 * n, "loudness_lufs": -20.0} for n in range(30)}
    flat["near"] = {"words_per_s": 3.5, "loudness_lufs": -22.0}
    words = dict.fromkeys(flat, "one two three four five six")
    assert dataset_flags(flat, words) == {}
    assert dataset_flags(flat, words, QAThresholds(min_rate_sigma=0.05, min_loudness_sigma=0.1)) == {
        "near": ["loudness_outlier", "rate_outlier"]
    }


def test_describe_every_code_and_refuse_unknown_ones():
    m = {"duration_s": 1.0, "cer": 0.7, "wer": 0.9, "asr_text": "x " * 50, "clip_runs": 3, "clipped": 9}
    for code in CODES:
        assert isinstance(describe(code, m), str) and describe(code, m)
    assert len(describe("asr_mismatch", m)) < 140
    with pytest.raises(ValueError, match="unknown QA code 'bogus'"):
        describe("bogus", m)


def test_read_qa_table():
    """A ``[qa]`` table from elsewhere than a file (``bench/qa.py --set``) is read as the file's is
    (tests/test_config.py checks the same rules with file and line)."""
    t = read_qa_table(
        {"max_cer": 0.25, "max_lead_silence_s": 2, "rate_min_words": 4, "asr": {"engine": "none"}}
    )
    assert (t.max_cer, t.max_lead_silence_s, t.rate_min_words) == (0.25, 2.0, 4)
    assert isinstance(t.max_lead_silence_s, float) and t.min_snr_db == QAThresholds().min_snr_db
    assert read_qa_table({}) == QAThresholds()
    assert read_qa_table({"enabled": False}).enabled is False and QAThresholds().enabled
    bad = [
        ({"max_ceer": 0.3}, r"qa\.max_ceer: unknown key"),
        ({"max_cer": "0.3"}, r"qa\.max_cer: must be a number, got '0\.3'"),
        ({"max_cer": True}, r"qa\.max_cer: must be a number, got True"),
        ({"rate_min_words": 4.5}, r"qa\.rate_min_words: must be an integer, got 4\.5"),
        ({"max_cer": -0.1}, r"qa\.max_cer: must be a number >= 0, got -0\.1"),
        ({"truncation_asr_ratio": 1.5}, r"qa\.truncation_asr_ratio: must be a number between 0 and 1"),
        ({"outlier_k": 0}, r"qa\.outlier_k: must be a number > 0, got 0"),
        ({"max_duration_s": 0}, r"qa\.max_duration_s: must be a number > 0, got 0"),
        ({"max_cer": math.nan}, r"qa\.max_cer: must be a finite number"),
        ({"max_wer": math.inf}, r"qa\.max_wer: must be a finite number"),
        ({"min_duration_s": 30.0}, r"qa\.min_duration_s: must be below max_duration_s \(20\), got 30"),
        ({"asr": "pocketsphinx"}, r"qa\.asr: must be a table"),
        ({"enabled": "no"}, r"qa\.enabled: must be true or false, got 'no'"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=rf"^--set: {message}") as err:
            read_qa_table(table)
        assert "\n" not in str(err.value)
