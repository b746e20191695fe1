"""The headless CLI end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import wave
from pathlib import Path

from conftest import write_project


def tui_app(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def test_end_to_end_headless_run(tmp_path):
    write_project(tmp_path, entries=20, pages=5, photos=2, latency_ms=5, jitter_ms=5, concurrency=8)
    proc = tui_app("--batch", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "done in" in proc.stdout
    assert "dataset: 20/20 completed" in proc.stdout
    status = json.loads(tui_app("status", "--json", cwd=tmp_path).stdout)
    assert status == {
        "dataset": {"pending": 0, "generating": 0, "completed": 20, "failed": 0, "cancelled": 0},
        "pages": {"pending": 0, "generating": 0, "completed": 6, "failed": 0, "cancelled": 0},
        "variants": {"pending": 0, "generating": 0, "completed": 6, "failed": 0, "cancelled": 0},
    }
    wavs = sorted((tmp_path / "data" / "out" / "dataset").glob("*.wav"))
    assert len(wavs) == 20
    with wave.open(str(wavs[0])) as w:
        assert w.getframerate() == 22050 and w.getnchannels() == 1
    again = tui_app("--batch", "--json", cwd=tmp_path)
    assert again.returncode == 0
    summary = json.loads(again.stdout)
    assert summary["generated"] == {"dataset": 0, "pages": 0, "variants": 0}
    assert summary["exit_code"] == 0


def test_failures_exit_1_and_retry_failed_reruns_only_them(tmp_path):
    write_project(tmp_path, entries=30, pages=1, photos=1, failure_rate=0.5, max_attempts=1)
    first = tui_app("--batch", "--collection", "dataset", "--json", cwd=tmp_path)
    assert first.returncode == 1
    summary = json.loads(first.stdout)
    failed = {f["key"] for f in summary["failed"]}
    assert failed and all("simulated HTTP 503" in f["error"] for f in summary["failed"])
    completed_before = summary["collections"]["dataset"]["completed"]
    assert completed_before + len(failed) == 30
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("failure_rate = 0.5", "failure_rate = 0.0"))
    second = tui_app("--batch", "--collection", "dataset", "--retry-failed", "--json", cwd=tmp_path)
    assert second.returncode == 0
    again = json.loads(second.stdout)
    assert again["generated"]["dataset"] == len(failed)
    assert again["collections"]["dataset"]["completed"] == 30


def test_usage_errors_exit_2(tmp_path):
    write_project(tmp_path)
    assert tui_app("--limit", "3", cwd=tmp_path).returncode == 2
    proc = tui_app("--batch", "--collection", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown collection 'nope'" in proc.stderr


def test_plain_progress_lines_when_not_a_terminal(tmp_path):
    write_project(tmp_path, entries=20, pages=1, photos=1, latency_ms=100, concurrency=2)
    proc = tui_app("--batch", "--collection", "dataset", "--progress-interval", "0.3", cwd=tmp_path)
    lines = [
        line for line in proc.stdout.splitlines() if line.startswith("dataset: ") and "items/s, ETA" in line
    ]
    assert len(lines) >= 2, proc.stdout
    assert lines[0].startswith("dataset: ") and "/20 completed, 0 failed, " in lines[0]
    assert "dataset: 20/20 completed (20 this run), 0 failed, 0 pending" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no terminal control codes in a log file


def _interrupt_run(tmp_path: Path, sig: int) -> subprocess.CompletedProcess:
    write_project(tmp_path, entries=200, pages=1, photos=1, latency_ms=300, concurrency=8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "data" / "state.sqlite"
    deadline = time.time() + 30
    while time.time() < deadline:  # wait until some items are done and others in flight
        time.sleep(0.1)
        if db.exists():
            try:
                done = (
                    sqlite3.connect(db)
                    .execute("SELECT COUNT(*) FROM items WHERE status='completed'")
                    .fetchone()[0]
                )
            except sqlite3.OperationalError:
                continue
            if done >= 8:
                break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_consistent(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM items WHERE status='generating'").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    out = tmp_path / "data" / "out" / "dataset"
    files = {p.name for p in out.iterdir()}
    assert not [n for n in files if n.startswith(".")], "partial temp files left behind"
    recorded = {
        Path(p).name
        for (p,) in conn.execute(
            "SELECT t.path FROM takes t JOIN items i ON i.current_take = t.id WHERE i.status='completed'"
        )
    }
    assert recorded == files


def test_ctrl_c_during_a_headless_run(tmp_path):
    result = _interrupt_run(tmp_path, signal.SIGINT)
    assert result.returncode == 130, result.stderr
    assert "SIGINT: stopping" in result.stdout
    _assert_consistent(tmp_path)
    resumed = tui_app("--batch", "--collection", "dataset", "--json", cwd=tmp_path, timeout=120)
    summary = json.loads(resumed.stdout)
    assert summary["collections"]["dataset"]["completed"] == 200


def test_sigterm_during_a_headless_run(tmp_path):
    result = _interrupt_run(tmp_path, signal.SIGTERM)
    assert result.returncode == 130
    _assert_consistent(tmp_path)


def test_python_m_and_help():
    proc = subprocess.run(
        [sys.executable, "-m", "tui_app", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0
    for word in ("--batch", "--collection", "--retry-failed", "--limit", "--json", "status", "exit codes"):
        assert word in proc.stdout
    for code in ("74 storage error", "130 interrupted", "141 the output pipe was closed"):
        assert code in proc.stdout


def test_workers_above_the_maximum_are_refused_before_anything_starts(tmp_path):
    from tui_app.cli import MAX_PROCESSES

    write_project(tmp_path, entries=2, pages=1, photos=1)
    for args in (["--batch", "--workers", "100000"], ["worker", "--workers", str(MAX_PROCESSES + 1)]):
        proc = tui_app(*args, cwd=tmp_path, timeout=30)
        assert proc.returncode == 2, args
        assert proc.stderr.splitlines() == [
            f"tui-app: error: --workers {args[-1]}: at most {MAX_PROCESSES} processes"
        ], proc.stderr
        assert not (tmp_path / "data" / "state.sqlite").exists()  # nothing imported, nothing started
    for help_args in (["--help"], ["worker", "--help"]):
        assert f"at most {MAX_PROCESSES})" in " ".join(tui_app(*help_args, cwd=tmp_path).stdout.split())


#: What a command whose stdout is /dev/full says last on stderr (exit 74).
_FULL = "tui-app: error: cannot write the output: No space left on device"


def _into_dev_full(*args: str, cwd) -> subprocess.CompletedProcess:
    """``tui-app ARGS`` with its stdout on /dev/full (a full disk under the output)."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-m", "tui_app", *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            timeout=120,
        )


def test_an_output_that_cannot_be_written_is_named_not_the_state_file(tmp_path):
    write_project(tmp_path, entries=2, pages=1, photos=1)
    assert tui_app("--batch", cwd=tmp_path).returncode == 0
    for args in (["status", "--json"], ["status"], ["workers", "--json"]):
        proc = _into_dev_full(*args, cwd=tmp_path)
        assert proc.returncode == 74, (args, proc.stderr)
        assert proc.stderr.splitlines() == [_FULL], proc.stderr


def test_a_batch_whose_output_cannot_be_written_names_the_output_and_keeps_its_work(tmp_path):
    write_project(tmp_path, entries=3, pages=1, photos=1)
    runs = {}
    # the JSON summary after the run; a progress line; a worker's first line
    for args in (["--batch", "--json"], ["--batch"], ["worker", "--workers", "1"]):
        proc = _into_dev_full(*args, cwd=tmp_path)
        assert proc.returncode == 74, (args, proc.stderr)
        assert proc.stderr.splitlines()[-1] == _FULL, proc.stderr
        runs[args[-1]] = json.loads(tui_app("status", "--json", cwd=tmp_path).stdout)
    # --json wrote its summary once the run was over: everything was made; nothing is left in flight
    assert all(c["pending"] == c["generating"] == 0 < c["completed"] for c in runs["--json"].values()), runs
    assert all(c["generating"] == 0 for c in [*runs["--batch"].values(), *runs["1"].values()]), runs


def test_argparse_errors_are_one_line(tmp_path):
    write_project(tmp_path, entries=2, pages=1, photos=1)
    for args, message in [
        (["--workers", "abc"], "argument --workers: invalid int value: 'abc' (see tui-app --help)"),
        (["revert", "dataset", "arctic_a0001", "abc"], "argument take: invalid int value: 'abc'"),
        (
            ["revert", "dataset"],
            "the following arguments are required: key, take (see tui-app revert --help)",
        ),
        (["status", "extra"], "unrecognized arguments: extra"),
        (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
    ]:
        proc = tui_app(*args, cwd=tmp_path, timeout=30)
        assert proc.returncode == 2, args
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("tui-app: error: ") and message in lines[0], lines
        assert "usage:" not in proc.stderr


def test_a_photo_named_with_control_characters_is_quoted_escaped(tmp_path):
    write_project(tmp_path, entries=2, pages=1, photos=1)
    photos = tmp_path / "data" / "photos"
    (photos / "a\x1b[31mRED\x01b.png").write_bytes(next(photos.iterdir()).read_bytes())
    proc = tui_app("--batch", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x01" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "a\\x1b[31mRED\\x01b.png: the file name has a control character U+001B (ESC)" in line, line


def test_an_empty_story_says_so(tmp_path):
    write_project(tmp_path, entries=2, pages=1, photos=1)
    (tmp_path / "data" / "story.md").write_text("")
    proc = tui_app("--batch", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("tui-app: error: ") and "story.md: the story is empty" in line, line
    assert "separators" not in line.split("story is empty")[0]


def test_reading_commands_hint_at_a_missing_state_file(tmp_path):
    write_project(tmp_path, entries=2, pages=1, photos=1)
    hint = "no state file yet: run `tui-app --batch` or open the TUI"
    for args in (
        ["status"],
        ["status", "--json"],
        ["status", "--review"],
        ["status", "--qa"],
        ["workers", "--json"],
    ):
        proc = tui_app(*args, cwd=tmp_path, timeout=30)
        assert proc.returncode == 0 and hint in proc.stderr.splitlines(), (args, proc.stderr)
    assert json.loads(tui_app("status", "--json", cwd=tmp_path).stdout)["dataset"]["pending"] == 0
    assert not (tmp_path / "data" / "state.sqlite").exists()
