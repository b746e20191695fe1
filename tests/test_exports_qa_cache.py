"""Exports (LJSpeech, audiofolder, NeMo, picture book, chosen variants), QA metrics, generation cache."""

from __future__ import annotations

import csv
import json
import math
import struct
import wave
from pathlib import Path

import anyio
import pytest
from conftest import sql, write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.exports import ExportError
from tui_app.media import wav_bytes
from tui_app.project import Project
from tui_app.qa import audio_metrics, count_words, take_flags


def _engine(tmp_path: Path, names=("dataset",), **kw) -> Engine:
    project = Project.open(load_config(write_project(tmp_path, **kw)))
    project.import_sources(names=list(names))
    return Engine(project)


def _done_dataset(tmp_path: Path) -> Engine:
    engine = _engine(tmp_path, entries=8)
    anyio.run(lambda: engine.run(["dataset"]))
    # leave one entry failed and one pending, neither with a take, to see them skipped
    items = engine.store.items("dataset")
    db = engine.config.state_path
    sql(
        db,
        "UPDATE items SET status='failed', last_error='HTTP 500', current_take=NULL WHERE id=?",
        items[6].id,
    )
    sql(db, "UPDATE items SET status='pending', current_take=NULL WHERE id=?", items[7].id)
    return engine


def test_ljspeech_export(tmp_path):
    engine = _done_dataset(tmp_path)
    out = tmp_path / "exports" / "lj"
    report = engine.project.export("dataset", out, fmt="ljspeech")
    assert report.exported == 6
    assert sorted(report.skipped) == [("arctic_a0007", "failed: HTTP 500"), ("arctic_a0008", "pending")]
    completed = {i.key for i in engine.store.items("dataset", status="completed")}
    lines = (out / "metadata.csv").read_text().splitlines()
    assert {line.split("|")[0] for line in lines} == completed
    assert all(len(line.split("|")) == 3 for line in lines)
    assert lines[0] == (
        "arctic_a0001|Author of the danger trail, Philip Steels, etc."
        "|Author of the danger trail, Philip Steels, etc."
    )
    for key in completed:
        with wave.open(str(out / "wavs" / f"{key}.wav")) as w:
            assert w.getframerate() == 22050 and w.getnchannels() == 1 and w.getsampwidth() == 2
    assert sorted(p.name for p in (out / "wavs").iterdir()) == sorted(f"{k}.wav" for k in completed)
    assert [p.name for p in out.parent.iterdir()] == ["lj"]  # no temp folder left


def test_audiofolder_and_nemo_exports(tmp_path):
    engine = _done_dataset(tmp_path)
    af = tmp_path / "af"
    engine.project.export("dataset", af, fmt="audiofolder")
    rows = list(csv.reader((af / "metadata.csv").open()))
    assert rows[0] == ["file_name", "transcription"] and len(rows) == 7
    assert rows[1] == ["wavs/arctic_a0001.wav", "Author of the danger trail, Philip Steels, etc."]
    assert all((af / r[0]).is_file() for r in rows[1:])
    nemo = tmp_path / "nemo"
    engine.project.export("dataset", nemo, fmt="nemo")
    entries = [json.loads(line) for line in (nemo / "manifest.json").read_text().splitlines()]
    assert len(entries) == 6 and set(entries[0]) == {"audio_filepath", "duration", "text"}
    assert Path(entries[0]["audio_filepath"]).is_file() and entries[0]["duration"] == pytest.approx(
        0.1, abs=0.01
    )


def test_export_never_overwrites(tmp_path):
    engine = _done_dataset(tmp_path)
    out = tmp_path / "lj"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        engine.project.export("dataset", out)
    assert (out / "keep.txt").read_text() == "mine"


def test_pages_book_and_chosen_variants(tmp_path):
    engine = _engine(tmp_path, names=("pages", "variants"), pages=3, photos=2)
    anyio.run(lambda: engine.run(["pages", "variants"]))
    pages = engine.project.export("pages", tmp_path / "book")
    assert pages.exported == 4
    assert sorted(p.name for p in (tmp_path / "book").iterdir()) == [
        "book.pdf",
        "page_000.png",
        "page_001.png",
        "page_002.png",
        "page_003.png",
    ]
    pdf = (tmp_path / "book" / "book.pdf").read_bytes()
    assert (
        pdf.startswith(b"%PDF")
        and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type/Page") >= 4
    )
    with pytest.raises(ExportError, match="no chosen variants"):
        engine.project.export("variants", tmp_path / "v0")
    store = engine.store
    pick = store.find_item("variants", "astronaut.s1-balanced")
    store.choose(pick.id)
    report = engine.project.export("variants", tmp_path / "finals")
    assert report.exported == 1 and [p.name for p in (tmp_path / "finals").iterdir()] == ["astronaut.png"]
    assert [s[0] for s in report.skipped] == ["chelsea.png"]


def _tone_wav(
    seconds: float, amplitude: float, lead: float = 0.0, trail: float = 0.0, rate: int = 22050
) -> bytes:
    frames = []
    for n in range(int(rate * (lead + seconds + trail))):
        t = n / rate
        on = lead <= t < lead + seconds
        value = int(amplitude * 32767 * math.sin(2 * math.pi * 220 * t)) if on else 0
        frames.append(struct.pack("<h", max(-32768, min(32767, value))))
    return wav_bytes(b"".join(frames), rate)


def test_qa_metrics_on_known_signals():
    m = audio_metrics(_tone_wav(2.0, 0.5, lead=0.5, trail=0.25), "one two three four five")
    assert m["duration_s"] == pytest.approx(2.75, abs=0.01)
    assert m["leading_silence_s"] == pytest.approx(0.5, abs=0.02)
    assert m["trailing_silence_s"] == pytest.approx(0.25, abs=0.02)
    assert m["peak_dbfs"] == pytest.approx(20 * math.log10(0.5), abs=0.1)
    assert m["clipped"] == 0
    assert m["words_per_s"] == pytest.approx(5 / 2.0, rel=0.03)
    assert take_flags(m) == []
    loud = audio_metrics(_tone_wav(1.0, 1.2), "a b c")  # overdriven: flat tops at full scale
    assert loud["clipped"] > 0 and "clipping" in take_flags(loud)
    slow = audio_metrics(_tone_wav(3.0, 0.5, lead=1.5), "hi")
    assert "lead_silence" in take_flags(slow)
    assert count_words("Lord, but I'm glad to see you again, Phil.") == 9


def test_qa_enabled_false_records_takes_without_metrics_or_flags(tmp_path):
    measured = _engine(tmp_path / "on", entries=3)
    anyio.run(lambda: measured.run(["dataset"]))
    assert all(take.qa and "loudness_lufs" in take.qa for _, take in measured.store.current_takes("dataset"))
    engine = _engine(tmp_path / "off", entries=3, extra="[qa]\nenabled = false\n")
    anyio.run(lambda: engine.run(["dataset"]))
    takes = engine.store.current_takes("dataset")
    assert len(takes) == 3 and all(t.qa is None and t.qa_flags is None for _, t in takes)


def test_generation_cache_reuses_identical_requests(tmp_path):
    engine = _engine(tmp_path, entries=3)
    store = engine.store
    anyio.run(lambda: engine.run(["dataset"]))
    src = engine.config.collections["dataset"].source
    src.write_text(src.read_text() + '( arctic_copy "Author of the danger trail, Philip Steels, etc." )\n')
    engine.project.import_sources(names=["dataset"])
    calls = []
    engine.subscribe(lambda e: calls.append(e.message) if e.kind == "completed" else None)
    anyio.run(lambda: engine.run(["dataset"]))
    copy = store.find_item("dataset", "arctic_copy")
    original = store.find_item("dataset", "arctic_a0001")
    copy_take, orig_take = store.takes(copy.id)[0], store.takes(original.id)[0]
    assert copy_take.sha256 == orig_take.sha256 and copy_take.path != orig_take.path
    assert store.takes(original.id)[0].cache_uses == 1
    assert any("arctic_copy completed" in m and "generation cache" in m for m in calls)
    # an explicit regenerate never uses the cache
    engine.regenerate("dataset", [copy.id])
    anyio.run(lambda: engine.run(["dataset"]))
    newest = store.takes(copy.id)[-1]
    assert newest.number == 2 and newest.cache_key is not None
    assert store.takes(original.id)[0].cache_uses == 1


def test_full_scale_negative_samples_count_as_clipped():
    import struct

    from tui_app.media import wav_bytes

    pcm = struct.pack("<4h", 0, -32768, -32768, 1000) * 2205
    m = audio_metrics(wav_bytes(pcm, 22_050), "a b")
    assert m["clipped"] == 2 * 2205 and m["peak_dbfs"] == 0.0
