"""Signals at any moment and closed pipes, in real subprocesses, as a user meets them.

SIGINT or SIGTERM during start-up (loading tui_app, reading a large source, importing it
into the store, recovering, preparing the run) and during the TUI: exit 130, no
traceback, the state consistent, and the next run loses nothing. A reader that closes
the pipe early (``| head -1``): exit 141, no ``BrokenPipeError`` traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sql, write_project

from tui_app.exit_codes import ExitCode


def tui_app(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def _big_project(root: Path, lines: int) -> Path:
    """A project whose dataset is an LJSpeech ``metadata.csv`` of ``lines`` entries (a slow import)."""
    config = write_project(root, entries=2, pages=1, photos=1, concurrency=8)
    (root / "data" / "metadata.csv").write_text(
        "".join(
            f"LJ{n:06d}|Sentence number {n} of a large source, imported at start-up.\n" for n in range(lines)
        )
    )
    config.write_text(config.read_text().replace('"data/prompts.data"', '"data/metadata.csv"'))
    return config


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc: tui_app's are installed)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


def _wait_for_handlers(pid: int) -> None:
    """Wait until the child runs tui_app's first line: before it, while the interpreter itself starts,
    the OS default applies. The interpreter's own SIGINT handler comes first; tui_app adds its SIGTERM
    handler milliseconds later. Code that installs none at start-up is signalled 0.1 s after the
    interpreter's, in the middle of its start-up."""
    if not Path(f"/proc/{pid}/status").exists():
        pytest.skip("needs /proc to see when the signal handlers are installed")
    deadline = time.monotonic() + 20
    while not _catches(pid, signal.SIGINT):
        assert Path(f"/proc/{pid}").exists() and time.monotonic() < deadline, "the interpreter never started"
        time.sleep(0.002)
    python_up = time.monotonic()
    while not _catches(pid, signal.SIGTERM) and time.monotonic() - python_up < 0.1:
        time.sleep(0.002)


def _assert_consistent(root: Path) -> None:
    """No item is left generating, the file is sound, every completed item's take file is in place."""
    state = root / "data" / "state.sqlite"
    if not state.exists():
        return
    assert sql(state, "PRAGMA integrity_check") == [("ok",)]
    assert sql(state, "SELECT COUNT(*) FROM items WHERE status = 'generating'") == [(0,)]
    for path, sha in sql(
        state,
        "SELECT t.path, t.sha256 FROM items i JOIN takes t ON t.id = i.current_take"
        " WHERE i.status = 'completed'",
    ):
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == sha, path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_any_moment_of_start_up_exits_130_and_loses_nothing(tmp_path, signum):
    lines = 2500
    _big_project(tmp_path, lines)
    # measured from the moment the handlers are installed: loading tui_app and the config (~0.1 s),
    # reading and importing 2,500 lines, recovering, preparing; the last ones land in the run
    for delay in (0.0, 0.04, 0.1, 0.2, 0.35, 0.6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui_app", "--batch"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_handlers(proc.pid)
            time.sleep(delay)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == ExitCode.INTERRUPTED, (delay, out, err)
        assert "Traceback" not in out + err, (delay, out, err)
        status = tui_app("status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        counts = json.loads(status.stdout)["dataset"]
        assert counts["generating"] == counts["failed"] == 0, (delay, counts)
        assert sum(counts.values()) in (0, lines), (delay, counts)  # an import is all or nothing
        _assert_consistent(tmp_path)
    final = tui_app("--batch", "--json", cwd=tmp_path, timeout=120)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout)
    assert summary["collections"]["dataset"]["completed"] == lines
    assert all(c["completed"] == sum(c.values()) for c in summary["collections"].values())
    _assert_consistent(tmp_path)


def test_other_commands_interrupted_as_they_start_exit_130(tmp_path):
    """The other commands too: status, sync and cleanup interrupted as they start exit 130."""
    write_project(tmp_path, entries=5, pages=1, photos=1)
    assert tui_app("--batch", cwd=tmp_path).returncode == 0
    for args in (["status"], ["sync"], ["cleanup", "--dry-run"], ["status", "--qa"]):
        for signum in (signal.SIGTERM, signal.SIGINT):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tui_app", *args],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            _wait_for_handlers(proc.pid)
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
            # 130, or 0 when the command was faster than the signal
            assert proc.returncode in (ExitCode.INTERRUPTED, ExitCode.OK), (args, out, err)
            assert "Traceback" not in out + err, (args, out, err)
    _assert_consistent(tmp_path)


def _pty_tui(root: Path, signum: int, *, when_painted: bool) -> tuple[int, bytes]:
    """Run the TUI on a pseudo-terminal, send ``signum`` during start-up (0.15 s after the handlers are
    installed) or once the TUI has painted; returns (exit code, everything it wrote)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: the TUI on the pty
        try:
            os.chdir(root)
            os.execv(sys.executable, [sys.executable, "-m", "tui_app"])
        finally:
            os._exit(127)
    output = b""
    sent_at = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if sent_at is None:
                if not when_painted:
                    _wait_for_handlers(pid)
                if not when_painted or b"\x1b[?1049h" in output:
                    # painted: let it settle (the engine runs, the table is drawn); else: mid start-up
                    time.sleep(0.5 if when_painted else 0.15)
                    os.kill(pid, signum)
                    sent_at = time.monotonic()
            readable, _, _ = select.select([fd], [], [], 0.05)
            if readable:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        if sent_at is None or time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_tui_restores_the_terminal_and_exits_130(tmp_path, signum):
    pytest.importorskip("textual")
    write_project(tmp_path, entries=30, pages=1, photos=1, latency_ms=200)
    code, output = _pty_tui(tmp_path, signum, when_painted=False)  # while it imports, before any paint
    assert code == ExitCode.INTERRUPTED and b"Traceback" not in output, output[-2000:]
    code, output = _pty_tui(tmp_path, signum, when_painted=True)
    assert code == ExitCode.INTERRUPTED, output[-2000:]
    assert b"Traceback" not in output
    assert output.rfind(b"\x1b[?1049l") > output.find(b"\x1b[?1049h") >= 0  # left the alternate screen
    _assert_consistent(tmp_path)


# ---------------------------------------------------------------------- SIGPIPE


def _with_closed_stdout(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``tui-app ARGS`` with stdout a pipe whose reader has already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "tui_app", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            timeout=60,
        )
    finally:
        os.close(write_end)


def test_a_closed_stdout_exits_141_without_a_traceback(tmp_path):
    write_project(tmp_path, entries=20, pages=1, photos=1)
    assert tui_app("--batch", "--limit", "10", cwd=tmp_path).returncode == 0
    for args in (
        ["status"],
        ["status", "--json"],
        ["status", "--qa"],
        ["status", "--qa", "--json"],
        ["cleanup", "--dry-run"],
        ["--batch", "--limit", "2"],
    ):
        proc = _with_closed_stdout(tmp_path, *args)
        assert proc.returncode == ExitCode.BROKEN_PIPE, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, (args, proc.stderr)
        assert "Exception ignored" not in proc.stderr, (args, proc.stderr)
    _assert_consistent(tmp_path)
    assert tui_app("--batch", cwd=tmp_path).returncode == 0


def _pipeline(root: Path, command: str) -> tuple[int, str, str]:
    """``tui-app COMMAND | head -1`` in a shell: (tui-app's exit code, head's output, tui-app's stderr)."""
    shell = (
        f"{sys.executable} -m tui_app {command} 2>err.txt | head -1 > head.txt; "
        'echo "${PIPESTATUS[0]}" > code.txt'
    )
    subprocess.run(["bash", "-c", shell], cwd=root, timeout=60, check=True)
    return (
        int((root / "code.txt").read_text()),
        (root / "head.txt").read_text(),
        (root / "err.txt").read_text(),
    )


def test_head_closing_the_pipe_early_exits_141_without_a_traceback(tmp_path):
    """Enough output to fill the pipe many times over: tui-app is still writing when head leaves."""
    write_project(tmp_path, entries=2500, pages=1, photos=1, concurrency=8)
    assert tui_app("--batch", "--collection", "dataset", cwd=tmp_path, timeout=120).returncode == 0
    for command in ("status --qa --json", "status --qa", "sync"):
        if command == "sync":  # 2,500 findings: every take file is gone
            for wav in (tmp_path / "data" / "out" / "dataset").glob("*.wav"):
                wav.unlink()
        code, head, err = _pipeline(tmp_path, command)
        assert head.strip(), command
        assert code == ExitCode.BROKEN_PIPE, (command, err)
        assert "Traceback" not in err and "BrokenPipeError" not in err, (command, err)
