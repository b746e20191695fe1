"""Disk and database in step: kill -9 recovery, sync's findings and fixes, cleanup, revert."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from pathlib import Path

import anyio
from conftest import sql, write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.files import sha256_file
from tui_app.project import Project
from tui_app.store import open_store
from tui_app.sync import cleanup, reconcile


def tui_app(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_kill_9_at_random_moments_then_finish(tmp_path):
    """SIGKILL a headless run at random moments (10 rounds), restart, finish: the state is consistent."""
    write_project(tmp_path, entries=150, pages=1, photos=1, latency_ms=20, jitter_ms=40, concurrency=8)
    rng = random.Random(1234)
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    final = tui_app("--batch", "--collection", "dataset", "--json", cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["collections"]["dataset"]["completed"] == 150
    db = tmp_path / "data" / "state.sqlite"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM items WHERE status='generating'").fetchone()[0] == 0
    rows = conn.execute(
        "SELECT t.path, t.sha256 FROM items i JOIN takes t ON t.id = i.current_take "
        "WHERE i.status='completed'"
    ).fetchall()
    assert len(rows) == 150
    for path, sha in rows:
        assert sha256_file(tmp_path / path) == sha
        with wave.open(str(tmp_path / path)) as w:
            assert w.getnframes() > 0
    check = tui_app("sync", "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def _completed_engine(tmp_path: Path) -> Engine:
    project = Project.open(load_config(write_project(tmp_path, entries=6, pages=1, photos=1)))
    project.import_sources(names=["dataset"])
    engine = Engine(project)
    anyio.run(lambda: engine.run(["dataset"]))
    return engine


def test_sync_finds_and_fixes_each_kind_of_mismatch(tmp_path):
    engine = _completed_engine(tmp_path)
    config, store = engine.config, engine.store
    out = config.collections["dataset"].output
    takes = dict(store.current_takes("dataset"))
    # 1. a current take's file missing
    (config.root / takes["arctic_a0001"].path).unlink()
    # 2. a file whose sha256 differs from its take
    (config.root / takes["arctic_a0002"].path).write_bytes(b"corrupted")
    # 3. a completed item without a current take
    sql(config.state_path, "UPDATE items SET current_take=NULL WHERE key='arctic_a0003'")
    # 4. a file no take references
    (out / "stray.wav").write_bytes(b"stray")
    # 5. a superseded take whose file is missing
    item = store.find_item("dataset", "arctic_a0004")
    engine.regenerate("dataset", [item.id])
    anyio.run(lambda: engine.run(["dataset"]))
    old = store.takes(item.id)[0]
    (config.root / old.path).unlink()

    findings = reconcile(config, store)
    lines = sorted(f.line(fixed=False) for f in findings)
    assert lines == sorted(
        [
            "dataset/arctic_a0001: completed but its file is missing -> would be: pending",
            "dataset/arctic_a0002: its file differs from its recorded sha256"
            " -> would be: file moved to orphans, pending",
            "dataset/arctic_a0003: completed without a current take -> would be: pending",
            "dataset/stray.wav: file not referenced by any take -> would be: moved to data/orphans/dataset",
            "dataset/arctic_a0004: take 1's file is missing -> would be: take forgotten",
            # a0003's take file is no longer referenced as current but its take row still exists
        ]
    ), lines
    assert tui_app("sync", "--check", cwd=tmp_path).returncode == 1
    fix = tui_app("sync", "--fix", cwd=tmp_path)
    assert fix.returncode == 0 and "arctic_a0001: completed but its file is missing -> pending" in fix.stdout
    assert tui_app("sync", "--check", cwd=tmp_path).returncode == 0
    conn = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    status = dict(conn.execute("SELECT key, status FROM items WHERE collection='dataset'"))
    assert status["arctic_a0001"] == status["arctic_a0002"] == status["arctic_a0003"] == "pending"
    assert (tmp_path / "data" / "orphans" / "dataset" / "stray.wav").read_bytes() == b"stray"
    assert tui_app("--batch", "--collection", "dataset", cwd=tmp_path).returncode == 0
    assert tui_app("sync", "--check", cwd=tmp_path).returncode == 0


def test_cleanup_keeps_current_and_newest_and_reports_bytes(tmp_path):
    engine = _completed_engine(tmp_path)
    store, config = engine.store, engine.config
    item = store.find_item("dataset", "arctic_a0001")
    for _ in range(3):
        engine.regenerate("dataset", [item.id])
        anyio.run(lambda: engine.run(["dataset"]))
    takes = store.takes(item.id)
    assert [t.number for t in takes] == [1, 2, 3, 4]
    sizes = sum(t.bytes for t in takes[:2])
    dry = cleanup(config, store, keep=1, dry_run=True)
    assert (dry.takes, dry.bytes) == (2, sizes)
    assert len(store.takes(item.id)) == 4
    report = cleanup(config, store, keep=1)
    assert (report.takes, report.bytes) == (2, sizes)
    assert [t.number for t in store.takes(item.id)] == [3, 4]
    assert store.get_item(item.id).current_take == store.takes(item.id)[-1].id
    assert not (config.root / takes[0].path).exists()
    assert reconcile(config, store) == []


def test_revert_to_an_earlier_take(tmp_path):
    engine = _completed_engine(tmp_path)
    item = engine.store.find_item("dataset", "arctic_a0002")
    engine.regenerate("dataset", [item.id])
    anyio.run(lambda: engine.run(["dataset"]))
    engine.project.close()
    proc = tui_app("revert", "dataset", "arctic_a0002", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    store = open_store(tmp_path / "data" / "state.sqlite")
    assert store.get_item(item.id).current_take == store.takes(item.id)[0].id
    bad = tui_app("revert", "dataset", "arctic_a0002", "9", cwd=tmp_path)
    assert bad.returncode == 2 and "has no take 9 (takes: [1, 2])" in bad.stderr


def test_two_batches_share_one_project_and_never_do_an_item_twice(tmp_path):
    """Two --batch processes at once: both finish, every item has exactly one take."""
    write_project(tmp_path, entries=60, pages=1, photos=1, latency_ms=50, concurrency=4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [p.stderr.read() if p.stderr else "" for p in procs]
    conn = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM items WHERE status='generating'").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT item_id) FROM takes").fetchone() == (60, 60)
    assert conn.execute("SELECT COUNT(*) FROM workers").fetchone()[0] == 0
    assert os.path.exists(tmp_path / "data" / "state.sqlite")
