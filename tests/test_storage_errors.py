"""A full, read-only or size-limited disk under the state file or an output folder.

Every command ends with one line naming the path and the cause and exit code 74; no item
fails or spends an attempt for it; the state stays consistent and a second run, once the
disk is fixed, completes every item with its file in place.

Real disks where this machine allows (a small tmpfs, a read-only bind mount: root with
CAP_SYS_ADMIN, else skipped), and always without privileges: a file size limit
(``RLIMIT_FSIZE``, EFBIG) on the state file and an injected ENOSPC on take files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import sql, write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.exit_codes import ExitCode
from tui_app.project import Project
from tui_app.storage_errors import StorageError, storage_error

ROOT = Path(__file__).resolve().parents[1]


def tui_app(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def _split_project(root: Path, entries: int) -> Path:
    """A project whose state (``state/``) and outputs (``out/NAME``) are folders of their own."""
    config = write_project(root, entries=entries, pages=2, photos=1)
    text = config.read_text().replace("[project]\n", '[project]\nstate = "state/state.sqlite"\n', 1)
    for name in ("dataset", "pages", "variants"):
        text = text.replace(f"[collections.{name}]\n", f'[collections.{name}]\noutput = "out/{name}"\n', 1)
    config.write_text(text)
    (root / "state").mkdir()
    (root / "out").mkdir()
    return config


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tui-app: error: ")]


def _assert_one_line(proc: subprocess.CompletedProcess, path: str, *causes: str) -> None:
    """Exit 74, no traceback, one error line naming ``path`` (a prefix) and one of ``causes``."""
    assert proc.returncode == ExitCode.STORAGE, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"tui-app: error: {path}"), lines[0]
    assert any(f": {cause} (" in lines[0] for cause in causes), lines[0]
    assert lines[0].endswith("the state is consistent"), lines[0]


def _assert_resumed(root: Path, state: Path, *, released: bool = True) -> None:
    """The state is consistent and nothing failed for the disk (with ``released``, the items the
    engine put back spent no attempt either), and a normal run completes every item with every
    current take's file in place with its sha256."""
    assert sql(state, "PRAGMA integrity_check") == [("ok",)]
    assert sql(state, "SELECT COUNT(*) FROM items WHERE status = 'failed'") == [(0,)]
    if released:
        assert sql(state, "SELECT COUNT(*) FROM items WHERE status = 'pending' AND attempts > 0") == [(0,)]
    proc = tui_app("--batch", "--json", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert all(c["completed"] == sum(c.values()) for c in summary["collections"].values()), summary
    takes = sql(
        state,
        "SELECT t.path, t.sha256 FROM items i JOIN takes t ON t.id = i.current_take"
        " WHERE i.status = 'completed'",
    )
    assert len(takes) == sum(c["completed"] for c in summary["collections"].values())
    for path, sha in takes:
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == sha, path
    leftovers = [p for p in (root / "out").rglob(".*") if ".tmp-" in p.name]
    assert not leftovers


# ---------------------------------------------------------------------- classification


def test_storage_errors_are_classified_and_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    full = storage_error(OSError(errno.ENOSPC, "No space left on device"), path=tmp_path / "data" / "out")
    assert isinstance(full, StorageError)
    assert full.line() == (
        "data/out: disk full (No space left on device); free space and run again: the state is consistent"
    )
    # a temp file's name is not shown: its folder is
    temp = str(tmp_path / "o" / ".a.take1.wav.tmp-1f")
    ro = storage_error(OSError(errno.EROFS, "Read-only file system", temp))
    assert ro is not None and ro.line().startswith(
        "o: read-only file system (Read-only file system); make it"
    )
    big = storage_error(OSError(errno.EFBIG, "File too large", "x.wav"))
    assert big is not None and big.cause == "file too large"
    assert storage_error(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    assert storage_error(OSError(errno.EACCES, "Permission denied", "state.sqlite.lock")) is not None
    # item-specific or unrelated errors are not storage failures
    assert storage_error(OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300)) is None
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file", "a")) is None
    assert storage_error(ValueError("x")) is None
    # found inside (nested) exception groups, as anyio task groups raise them
    inner = ExceptionGroup("inner", [OSError(errno.ENOSPC, "full")])
    group = BaseExceptionGroup("run", [ValueError("x"), inner])
    assert storage_error(group, path="out") is not None


def test_sqlite_full_and_read_only_are_storage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "state.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("PRAGMA max_page_count = 8")  # a real SQLITE_FULL without filling a disk
    with pytest.raises(sqlite3.OperationalError) as full:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (zeroblob(4000))")
    conn.rollback()
    conn.close()
    problem = storage_error(full.value, path=db)
    assert problem is not None
    assert problem.line() == (
        "state.sqlite: disk full (database or disk is full); free space and run again:"
        " the state is consistent"
    )
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as readonly:
        reader.execute("INSERT INTO t VALUES (1)")
    reader.close()
    problem = storage_error(readonly.value, path=db)
    assert problem is not None and problem.cause == "read-only"
    assert storage_error(sqlite3.OperationalError("no such table: x")) is None


# ---------------------------------------------------------------------- the engine, in-process


def _failing_fsync(folder: Path, budget: int):
    """An ``os.fsync`` that reports ENOSPC for files under ``folder`` after ``budget`` of them."""
    real = os.fsync
    seen = [0]
    prefix = str(folder.resolve()) + os.sep

    def fsync(fd: int) -> None:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name.startswith(prefix):
            seen[0] += 1
            if seen[0] > budget:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    return fsync


def test_a_full_disk_under_takes_releases_the_item_and_stops_the_run(tmp_path, monkeypatch):
    config = load_config(write_project(tmp_path, entries=40, pages=1, photos=1, concurrency=4))
    out = config.collections["dataset"].output
    monkeypatch.setattr(os, "fsync", _failing_fsync(out, budget=10))
    with Project.open(config) as project:
        project.import_sources()
        engine = Engine(project)
        with pytest.raises(BaseExceptionGroup) as raised:
            anyio.run(lambda: engine.run(["dataset"]))
        problem = storage_error(raised.value)
        assert problem is not None and problem.cause == "disk full" and problem.path == out
        counts = project.store.counts(["dataset"])["dataset"]
        assert counts["completed"] == 10 and counts["generating"] == 0 and counts["failed"] == 0
        assert all(i.attempts == 0 for i in project.store.items("dataset", status="pending"))
        assert any(e.kind == "released" and "disk full" in e.message for e in project.store.recent_events())
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no partial file
        monkeypatch.undo()
        engine = Engine(project)
        anyio.run(lambda: engine.run(["dataset"]))
        assert project.store.counts(["dataset"])["dataset"]["completed"] == 40


def test_other_write_errors_still_fail_only_their_item(tmp_path, monkeypatch):
    config = load_config(write_project(tmp_path, entries=6, pages=1, photos=1, max_attempts=1))
    out = config.collections["dataset"].output
    real = os.fsync

    def fsync(fd: int) -> None:
        if "arctic_a0002" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with Project.open(config) as project:
        project.import_sources()
        anyio.run(lambda: Engine(project).run(["dataset"]))
        counts = project.store.counts(["dataset"])["dataset"]
        assert counts["completed"] == 5 and counts["failed"] == 1
        (failed,) = project.store.failed_items(["dataset"])
        assert failed.key == "arctic_a0002" and "cannot write the take file" in (failed.last_error or "")
    assert out.is_dir()


# ---------------------------------------------------------------------- without privileges, in subprocesses

_WRAPPER = textwrap.dedent("""\
    import errno, os, resource, signal, sys
    limit, budget, folder = int(sys.argv[1]), int(sys.argv[2]), os.path.realpath(sys.argv[3]) + os.sep
    if limit:  # writes past the limit fail with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    if budget >= 0:
        real, seen = os.fsync, [0]
        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").startswith(folder):
                seen[0] += 1
                if seen[0] > budget:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)
        os.fsync = fsync
    from tui_app.cli import main
    sys.exit(main(sys.argv[4:]))
    """)


def _wrapped(
    root: Path, *args: str, limit: int = 0, budget: int = -1, folder: str = "out"
) -> subprocess.CompletedProcess:
    """``tui-app ARGS`` under a file size limit (``limit`` bytes) and/or with ENOSPC on the fsync of
    the files under ``folder`` after ``budget`` of them."""
    return subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(limit), str(budget), str(root / folder), *args],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )


def test_enospc_on_take_files_exits_74_with_one_line_and_resumes(tmp_path):
    _split_project(tmp_path, entries=60)
    proc = _wrapped(tmp_path, "--batch", "--json", budget=12, folder="out/dataset")
    _assert_one_line(proc, "out/dataset: ", "disk full")
    summary = json.loads(proc.stdout)
    assert summary["exit_code"] == 74
    assert "tui-app: error: " + summary["error"] == _error_lines(proc.stderr)[0]
    dataset = summary["collections"]["dataset"]
    assert dataset["completed"] == 12 and dataset["failed"] == 0 and dataset["generating"] == 0
    _assert_resumed(tmp_path, tmp_path / "state" / "state.sqlite")


def test_a_file_size_limit_on_the_state_exits_74_with_one_line_and_resumes(tmp_path):
    _split_project(tmp_path, entries=300)
    proc = _wrapped(tmp_path, "--batch", limit=96 * 1024)
    # SQLite reports EFBIG as a write error (SQLITE_IOERR), a short write as SQLITE_FULL
    _assert_one_line(proc, "state/state.sqlite: ", "I/O error", "disk full")
    status = tui_app("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    _assert_resumed(tmp_path, tmp_path / "state" / "state.sqlite", released=False)


# ---------------------------------------------------------------------- real disks (root with mount rights)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def _mounted(target: Path, *args: str) -> Iterator[None]:
    """``mount ARGS TARGET`` for the block; skips the test when this machine does not allow it."""
    try:
        _mount(*args, str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount here ({exc})")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(target)], capture_output=True, timeout=30).returncode:
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` read-only for the block (a read-only bind mount on itself)."""
    with _mounted(folder, "--bind", str(folder)):
        _mount("-o", "remount,bind,ro", str(folder))
        yield


def test_a_full_tmpfs_under_the_outputs(tmp_path):
    _split_project(tmp_path, entries=120)
    out = tmp_path / "out"
    with _mounted(out, "-t", "tmpfs", "-o", "size=128k", "tmpfs"):
        proc = tui_app("--batch", cwd=tmp_path)
        _assert_one_line(proc, "out/", "disk full")  # out/dataset, out/pages or out/variants
        assert "disk full (No space left on device)" in proc.stderr
        _mount("-o", "remount,size=16m", str(out))  # free space
        _assert_resumed(tmp_path, tmp_path / "state" / "state.sqlite")


def test_a_full_tmpfs_under_the_state(tmp_path):
    _split_project(tmp_path, entries=120)
    state = tmp_path / "state"
    with _mounted(state, "-t", "tmpfs", "-o", "size=192k", "tmpfs"):
        proc = tui_app("--batch", cwd=tmp_path)
        _assert_one_line(proc, "state/state.sqlite: ", "disk full")
        _mount("-o", "remount,size=16m", str(state))
        _assert_resumed(tmp_path, state / "state.sqlite", released=False)


def test_read_only_state_and_outputs(tmp_path):
    _split_project(tmp_path, entries=30)
    assert tui_app("--batch", "--limit", "5", cwd=tmp_path).returncode == 0
    state = tmp_path / "state"
    with _read_only(state):
        for args in (["--batch"], ["status"], ["status", "--json"], ["sync", "--fix"], ["cleanup"]):
            proc = tui_app(*args, cwd=tmp_path)
            assert proc.returncode == ExitCode.STORAGE, (args, proc.stderr)
            assert "Traceback" not in proc.stderr and len(_error_lines(proc.stderr)) == 1, (args, proc.stderr)
            assert proc.stderr.count("state/state.sqlite") == 1, (args, proc.stderr)
    with _read_only(tmp_path / "out" / "dataset"):
        proc = tui_app("--batch", cwd=tmp_path)
        _assert_one_line(proc, "out/dataset: ", "read-only file system")
    _assert_resumed(tmp_path, state / "state.sqlite")
