"""Training exports of a dataset of real Piper takes: trimming, loudness, resampling, the
train/validation split, --exclude-flagged, and the piper format read the way its trainer reads it."""

from __future__ import annotations

import csv
import io
import json
import textwrap
import wave
from pathlib import Path

import anyio
import numpy as np
import pytest
from conftest import sql

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.exports import ExportError, ExportOptions
from tui_app.exports.dataset import DATASET_FORMATS, prepare_audio, split_keys
from tui_app.media import wav_bytes, wav_info
from tui_app.project import Project
from tui_app.qa import audio_metrics

ROOT = Path(__file__).resolve().parents[1]
SOURCE = """\
p01|Author of the danger trail, Philip Steels, etc.
p02|At sea, Monday, March 16, 1908.|At sea, Monday, March sixteenth, nineteen oh eight.
p03|He said "no" twice, then left.
p04|For the twentieth time that evening the two men shook hands.
p05|Lord, but I'm glad to see you again, Phil.
p06|Will we ever forget it.
p07|And you always want to see it in the superlative degree.
p08|Gad, your letter came just in time.
p09|He turned sharply, and faced Gregson across the table.
p10|I'm playing a single hand in what looks like a losing game.
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project whose ten entries were spoken by Piper (bundled joe voice) through the engine."""
    pytest.importorskip("piper", reason="the local extra (piper-tts) is not installed")
    root = tmp_path_factory.mktemp("training")
    (root / "data").mkdir()
    (root / "data" / "prompts.txt").write_text(SOURCE)
    (root / "config.toml").write_text(
        textwrap.dedent("""\
        [collections.dataset]
        source = "data/prompts.txt"
        provider = "piper"

        [providers.piper]
        kind = "piper"
        concurrency = 1
        workers = 1
        """)
    )
    project = Project.open(load_config(root / "config.toml"))
    project.import_sources()
    anyio.run(lambda: Engine(project).run(["dataset"]))
    assert len(project.store.items("dataset", status="completed")) == 10
    yield project
    project.close()


def _export(project: Project, out: Path, fmt: str = "ljspeech", **options):
    return project.export("dataset", out, fmt=fmt, options=ExportOptions(**options))


def _pcm(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        assert (w.getsampwidth(), w.getnchannels()) == (2, 1)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(
            np.float64
        ) / 32768, w.getframerate()


def _lufs(path: Path) -> float:
    import pyloudnorm

    x, rate = _pcm(path)
    return float(pyloudnorm.Meter(rate).integrated_loudness(x))


def _originals(project: Project) -> dict[str, bytes]:
    takes = dict(project.store.current_takes("dataset"))
    return {key: (project.config.root / take.path).read_bytes() for key, take in takes.items()}


# --------------------------------------------------------------------------- audio preparation


def test_trimmed_clips_keep_pad_s_of_silence(project, tmp_path):
    out = tmp_path / "trim"
    report = _export(project, out, trim_silence=True, pad_s=0.05)
    assert report.exported == 10 and not report.notes
    for key, original in _originals(project).items():
        before = audio_metrics(original, "x")
        after = audio_metrics((out / "wavs" / f"{key}.wav").read_bytes(), "x")
        voiced = before["duration_s"] - before["leading_silence_s"] - before["trailing_silence_s"]
        kept = min(0.05, before["leading_silence_s"]) + min(0.05, before["trailing_silence_s"])
        assert after["duration_s"] == pytest.approx(voiced + kept, abs=0.012), key
        assert after["leading_silence_s"] <= 0.05 + 0.011 and after["trailing_silence_s"] <= 0.05 + 0.011
        assert after["duration_s"] < before["duration_s"]
    lines = (out / "metadata.csv").read_text().splitlines()
    assert len(lines) == 10 and not (out / "metadata_val.csv").exists()


def test_two_seconds_of_planted_silence_are_trimmed_away(project):
    wav = _originals(project)["p04"]
    info = wav_info(wav)
    x = np.frombuffer(wav[44:], dtype="<i2")
    padded = wav_bytes(np.concatenate([np.zeros(2 * info.sample_rate, dtype="<i2"), x]).tobytes(), 22_050)
    before = audio_metrics(padded, "x")
    assert before["leading_silence_s"] > 2.0
    prepared = prepare_audio(padded, trim_silence=True, pad_s=0.1)
    after = audio_metrics(prepared.wav, "x")
    assert after["leading_silence_s"] == pytest.approx(0.1, abs=0.011)
    assert prepared.duration_s == pytest.approx(after["duration_s"], abs=0.001)
    own = audio_metrics(wav, "x")  # the take as Piper made it
    voiced = own["duration_s"] - own["leading_silence_s"] - own["trailing_silence_s"]
    assert prepared.duration_s == pytest.approx(voiced + 0.1 + min(0.1, own["trailing_silence_s"]), abs=0.012)
    silent = prepare_audio(wav_bytes(bytes(22_050 * 2), 22_050), trim_silence=True, loudness_lufs=-23)
    assert silent.duration_s == pytest.approx(1.0) and "no speech found" in (silent.remark or "")
    assert "not normalized" in (silent.remark or "")


def test_loudness_is_normalized_within_half_a_lu(project, tmp_path):
    out = tmp_path / "loud"
    report = _export(project, out, loudness_lufs=-23.0, trim_silence=True)
    assert report.exported == 10 and not report.notes
    levels = {p.stem: _lufs(p) for p in (out / "wavs").glob("*.wav")}
    assert len(levels) == 10
    assert all(abs(level + 23.0) <= 0.5 for level in levels.values()), levels
    originals = [audio_metrics(w, "x")["loudness_lufs"] for w in _originals(project).values()]
    assert max(originals) - min(originals) > 1.0  # they did differ before


def test_a_loud_target_stops_at_minus_one_dbfs_peak_with_a_note(project, tmp_path):
    out = tmp_path / "hot"
    report = _export(project, out, loudness_lufs=-10.0)
    assert report.exported == 10 and len(report.notes) == 10  # Piper peaks at -1 dBFS around -21 LUFS
    assert all("peak-limited to -1 dBFS" in note for note in report.notes)
    for path in (out / "wavs").glob("*.wav"):
        x, _ = _pcm(path)
        assert np.max(np.abs(x)) <= 10 ** (-1 / 20) + 1e-4  # no clipping
        reached = float(next(n for n in report.notes if n.startswith(path.stem)).split(": ")[2].split()[0])
        assert _lufs(path) == pytest.approx(reached, abs=0.1)


def test_resampled_clips_keep_their_length(project, tmp_path):
    out = tmp_path / "16k"
    _export(project, out, fmt="nemo", sample_rate=16_000)
    originals = _originals(project)
    manifest = [json.loads(line) for line in (out / "manifest.json").read_text().splitlines()]
    assert len(manifest) == 10
    for row in manifest:
        path = Path(row["audio_filepath"])
        info = wav_info(path.read_bytes())
        assert (info.sample_rate, info.sample_width, info.channels) == (16_000, 2, 1)
        assert row["duration"] == pytest.approx(info.duration_s, abs=0.001)
        original = wav_info(originals[path.stem]).duration_s
        assert info.duration_s == pytest.approx(original, abs=0.001)
    # the same sound, not just the same length: 10 ms loudness envelopes agree
    x, rate = _pcm(out / "wavs" / "p04.wav")
    y = np.frombuffer(originals["p04"][44:], dtype="<i2").astype(np.float64) / 32768

    def envelope(s: np.ndarray, r: int) -> np.ndarray:  # RMS of each 10 ms, exact at any rate
        starts = np.round(np.arange(int(s.size * 100 / r)) * r / 100).astype(int)
        return np.sqrt(np.add.reduceat(s**2, starts) / np.diff(np.append(starts, s.size)))

    a, b = envelope(x, rate), envelope(y, 22_050)
    assert abs(a.size - b.size) <= 1
    assert np.corrcoef(a[: min(a.size, b.size)], b[: min(a.size, b.size)])[0, 1] > 0.98


def test_unprocessed_exports_are_byte_copies(project, tmp_path):
    out = tmp_path / "plain"
    _export(project, out)
    for key, data in _originals(project).items():
        assert (out / "wavs" / f"{key}.wav").read_bytes() == data


# --------------------------------------------------------------------------- split


def test_split_is_deterministic_and_disjoint(project, tmp_path):
    def sets(out: Path) -> tuple[set[str], set[str]]:
        train = {line.split("|")[0] for line in (out / "metadata.csv").read_text().splitlines()}
        val = {line.split("|")[0] for line in (out / "metadata_val.csv").read_text().splitlines()}
        return train, val

    _export(project, tmp_path / "a", val_ratio=0.3, seed=7)
    _export(project, tmp_path / "b", val_ratio=0.3, seed=7)
    train, val = sets(tmp_path / "a")
    assert (train, val) == sets(tmp_path / "b")
    assert len(val) == 3 and len(train) == 7 and not train & val
    assert train | val == {f"p{n:02d}" for n in range(1, 11)}
    assert len(list((tmp_path / "a" / "wavs").glob("*.wav"))) == 10
    others = [split_keys(sorted(train | val), 0.3, seed) for seed in range(8, 14)]
    assert any(other != val for other in others)  # another seed, another split


def test_split_keys_ignores_order_and_bounds_the_count():
    keys = [f"k{n}" for n in range(100)]
    val = split_keys(keys, 0.1, 3)
    assert len(val) == 10 and val == split_keys(list(reversed(keys)), 0.1, 3)
    assert split_keys(keys, 0.0, 3) == set()
    assert len(split_keys(["a", "b"], 0.01, 0)) == 1 and len(split_keys(["a", "b"], 0.99, 0)) == 1
    assert split_keys(["a"], 0.5, 0) == set()
    # growing the collection keeps most of the old validation keys
    assert len(val & split_keys(keys + [f"new{n}" for n in range(10)], 0.1, 3)) >= 8
    with pytest.raises(ValueError, match="val_ratio"):
        split_keys(keys, 1.0, 0)


def test_audiofolder_split_uses_huggingface_split_folders(project, tmp_path):
    out = tmp_path / "hf"
    _export(project, out, fmt="audiofolder", val_ratio=0.2, seed=1)
    assert not (out / "metadata.csv").exists()
    seen = {}
    for split in ("train", "validation"):
        with open(out / split / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            assert (out / split / row["file_name"]).is_file()
            seen[Path(row["file_name"]).stem] = split
    assert sorted(seen) == [f"p{n:02d}" for n in range(1, 11)]
    assert list(seen.values()).count("validation") == 2


def test_nemo_split_writes_a_validation_manifest(project, tmp_path):
    out = tmp_path / "nemo"
    _export(project, out, fmt="nemo", val_ratio=0.2, seed=1)
    train = [json.loads(line) for line in (out / "manifest.json").read_text().splitlines()]
    val = [json.loads(line) for line in (out / "manifest_val.json").read_text().splitlines()]
    assert (len(train), len(val)) == (8, 2)
    assert all(Path(r["audio_filepath"]).is_file() for r in train + val)


# --------------------------------------------------------------------------- piper


def test_piper_format_reads_as_piper_trainer_reads_it(project, tmp_path):
    out = tmp_path / "piper"
    report = _export(project, out, fmt="piper", trim_silence=True, loudness_lufs=-20.0, sample_rate=22_050)
    assert report.exported == 10 and "piper" in DATASET_FORMATS
    audio_dir = out / "wavs"  # --data.audio_dir
    rows = {}
    # piper1-gpl src/piper/train/vits/dataset.py: csv.reader(delimiter="|"), row[0] is the audio
    # file (audio_dir / id, else audio_dir / f"{id}.wav"), row[-1] the text for espeak-ng
    with open(out / "metadata.csv", encoding="utf-8") as csv_file:
        for row in csv.reader(csv_file, delimiter="|"):
            assert len(row) == 2, row  # one speaker: id|text
            utt_id, text = row[0], row[-1]
            audio_path = audio_dir / utt_id
            if not audio_path.exists():
                audio_path = audio_dir / f"{utt_id}.wav"
            assert audio_path.exists(), utt_id
            rows[audio_path.stem] = text
            x, rate = _pcm(audio_path)
            assert rate == 22_050 and x.size > 0
    assert sorted(rows) == [f"p{n:02d}" for n in range(1, 11)]
    assert rows["p03"] == 'He said "no" twice, then left.'  # quoted in the file, read back whole
    assert rows["p02"] == "At sea, Monday, March sixteenth, nineteen oh eight."  # what was spoken
    assert '"He said ""no"" twice, then left."' in (out / "metadata.csv").read_text()


def test_piper_split_holds_out_validation_rows(project, tmp_path):
    out = tmp_path / "piper-split"
    _export(project, out, fmt="piper", val_ratio=0.2, seed=5)
    read = lambda name: [r[0] for r in csv.reader(io.StringIO((out / name).read_text()), delimiter="|")]  # noqa: E731
    train, val = read("metadata.csv"), read("metadata_val.csv")
    assert (len(train), len(val)) == (8, 2) and not set(train) & set(val)
    assert {f"{k}.wav" for k in split_keys([f"p{n:02d}" for n in range(1, 11)], 0.2, 5)} == set(val)


# --------------------------------------------------------------------------- flags and options


def test_exclude_flagged_skips_flagged_takes_with_the_reason(project, tmp_path):
    db = project.config.state_path
    sql(db, "UPDATE takes SET qa_flags = NULL")
    sql(
        db,
        "UPDATE takes SET qa_flags = 'truncated; rate_outlier' WHERE id = "
        "(SELECT current_take FROM items WHERE key = 'p05')",
    )
    try:
        report = _export(project, tmp_path / "clean", fmt="piper", exclude_flagged=True)
        assert report.exported == 9
        assert report.skipped == [("p05", "flagged: truncated; rate_outlier")]
        assert "1 flagged" in report.summary()
        assert "p05.wav" not in (tmp_path / "clean" / "metadata.csv").read_text()
        assert not (tmp_path / "clean" / "wavs" / "p05.wav").exists()
        assert _export(project, tmp_path / "all", fmt="piper").exported == 10  # without the option
        sql(db, "UPDATE takes SET qa_flags = 'clipping'")
        with pytest.raises(ExportError, match="every completed entry has a QA flag"):
            _export(project, tmp_path / "none", exclude_flagged=True)
        assert not (tmp_path / "none").exists()
    finally:
        sql(db, "UPDATE takes SET qa_flags = NULL")


def test_bad_options_are_refused_before_anything_is_written(project, tmp_path):
    for options, message in [
        ({"loudness_lufs": 5.0}, "loudness must be between -70 and 0 LUFS"),
        ({"sample_rate": 100}, "sample rate must be 4000 to 384000 Hz"),
        ({"val_ratio": 1.0}, "val ratio must be >= 0 and < 1"),
        ({"pad_s": -0.1}, "pad_s must be >= 0"),
    ]:
        with pytest.raises(ExportError, match=message):
            _export(project, tmp_path / "bad", **options)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ExportError, match="ljspeech or audiofolder or nemo or piper, not 'coqui'"):
        _export(project, tmp_path / "bad", fmt="coqui")
