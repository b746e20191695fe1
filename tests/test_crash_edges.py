"""SIGKILL at the worst moment of a maintenance command or an export, then run again: nothing is
lost, nothing is left half done.

Each test kills a real ``python -m tui_app`` process with a real SIGKILL at one chosen point: the
process runs tui_app under a small wrapper that sends itself SIGKILL right after (or before) the
Nth call of one function, e.g. just after cleanup forgot a take's row and before it deleted the
file. A timer cannot hit such a window (microseconds between a commit and an unlink) reliably.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_project

#: Runs ``python -m tui_app ARGS...`` and SIGKILLs itself around the NTH call of MODULE:ATTR.
_KILL_AT = """
import importlib, os, runpy, signal, sys
target, nth, when, *args = sys.argv[1:]
module, _, attr = target.partition(":")
owner = importlib.import_module(module)
*path, name = attr.split(".")
for part in path:
    owner = getattr(owner, part)
original, calls = getattr(owner, name), [0]
def wrapper(*a, **k):
    calls[0] += 1
    if calls[0] == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*a, **k)
    if calls[0] == int(nth) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, name, wrapper)
sys.argv = ["tui_app", *args]
runpy.run_module("tui_app", run_name="__main__", alter_sys=True)
"""


def tui_app(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def killed_at(target: str, nth: int, when: str, *args: str, cwd: Path) -> None:
    """Run ``tui-app ARGS``: it SIGKILLs itself just ``when`` (before/after) call ``nth`` of ``target``."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT, target, str(nth), when, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


def _rows(root: Path, statement: str) -> list[tuple]:
    conn = sqlite3.connect(root / "data" / "state.sqlite")
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


def _dump(root: Path) -> str:
    conn = sqlite3.connect(f"file:{root / 'data' / 'state.sqlite'}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files_agree(root: Path) -> None:
    """Every take and final row has its file with its sha256; every completed item has its take."""
    for path, sha in _rows(root, "SELECT path, sha256 FROM takes UNION ALL SELECT path, sha256 FROM finals"):
        assert (root / path).is_file() and _sha(root / path) == sha, path
    assert not _rows(
        root,
        "SELECT key FROM items WHERE status='completed'"
        " AND NOT EXISTS (SELECT 1 FROM takes t WHERE t.id = items.current_take)",
    )


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _on_disk(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished project (40 entries, 3 takes each; a cover and 2 pages; 2 photos, one variant of
    each chosen, with its final); tests copy it."""
    root = tmp_path_factory.mktemp("swept")
    write_project(root, entries=40, pages=2, photos=2, concurrency=8)
    assert tui_app("--batch", cwd=root).returncode == 0
    keys = [k for (k,) in _rows(root, "SELECT key FROM items WHERE collection='dataset' ORDER BY key")]
    assert tui_app("regenerate", "dataset", *keys, "--sweep", "speed=0.9,1.1", cwd=root).returncode == 0
    for key in ("astronaut.s1-balanced", "chelsea.s0-forensic"):
        assert tui_app("choose", "variants", key, cwd=root).returncode == 0
    assert tui_app("--batch", cwd=root).returncode == 0
    assert len(_rows(root, "SELECT id FROM takes")) == 3 * 40 + 3 + 6
    assert len(_rows(root, "SELECT item_id FROM finals")) == 2
    return root


def _copy(swept: Path, tmp_path: Path) -> Path:
    root = tmp_path / "p"
    subprocess.run(["cp", "-a", str(swept), str(root)], check=True)
    return root


@pytest.mark.parametrize("nth", [1, 37])
def test_a_cleanup_killed_between_a_takes_row_and_its_file_is_finished_by_the_next(swept, tmp_path, nth):
    """The row of a superseded take is forgotten, then the process dies before deleting the file:
    no row lost its file, and the next cleanup deletes the file no row records (it used to stay
    for ever, `sync --check` failing, until a sync moved it aside)."""
    root = _copy(swept, tmp_path)
    current = _rows(root, "SELECT key, current_take FROM items ORDER BY key")
    killed_at("tui_app.store.sql:SqlStore.forget_take", nth, "after", "cleanup", "--keep", "0", cwd=root)
    _files_agree(root)
    assert _rows(root, "SELECT key, current_take FROM items ORDER BY key") == current
    out = root / "data" / "out" / "dataset"
    recorded = {Path(p).name for (p,) in _rows(root, "SELECT path FROM takes WHERE path LIKE '%/dataset/%'")}
    left = _on_disk(out) - recorded
    assert len(left) == 1, left  # the file of the take whose row went last
    assert tui_app("sync", "--check", cwd=root).returncode == 1

    dry = tui_app("cleanup", "--keep", "0", "--dry-run", cwd=root)
    assert dry.returncode == 0 and f"would delete dataset/{next(iter(left))}" in dry.stdout, dry.stdout
    again = tui_app("cleanup", "--keep", "0", cwd=root)
    assert again.returncode == 0, again.stderr
    assert f"deleted dataset/{next(iter(left))}" in again.stdout
    check = tui_app("sync", "--check", cwd=root)
    assert check.returncode == 0, check.stdout
    _files_agree(root)
    assert _rows(root, "SELECT key, current_take FROM items ORDER BY key") == current
    recorded = {Path(p).name for (p,) in _rows(root, "SELECT path FROM takes WHERE path LIKE '%/dataset/%'")}
    assert _on_disk(out) == recorded and len(recorded) == 40


def test_a_choose_killed_before_deleting_the_set_aside_final_is_finished_by_cleanup(swept, tmp_path):
    """`choose` commits (the other variant's final forgotten), then dies before deleting that final's
    file: the next cleanup deletes it; the new choice's final is built by the next run."""
    root = _copy(swept, tmp_path)
    finals = root / "data" / "out" / "variants" / "finals"
    assert _on_disk(finals) == {"astronaut.s1-balanced.take1.png", "chelsea.s0-forensic.take1.png"}
    killed_at(
        "tui_app.store.sql:SqlStore.choose",
        1,
        "after",
        "choose",
        "variants",
        "astronaut.s2-creative",
        cwd=root,
    )
    _files_agree(root)
    assert [p for (p,) in _rows(root, "SELECT path FROM finals")] == [
        "data/out/variants/finals/chelsea.s0-forensic.take1.png"
    ]
    assert "astronaut.s1-balanced.take1.png" in _on_disk(finals)  # no row records it any more

    done = tui_app("cleanup", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "deleted variants/astronaut.s1-balanced.take1.png: final" in done.stdout, done.stdout
    assert _on_disk(finals) == {"chelsea.s0-forensic.take1.png"}
    assert tui_app("sync", "--check", cwd=root).returncode == 0
    assert tui_app("--batch", "--collection", "variants", cwd=root).returncode == 0
    assert _on_disk(finals) == {"chelsea.s0-forensic.take1.png", "astronaut.s2-creative.take1.png"}
    _files_agree(root)
    assert tui_app("sync", "--check", cwd=root).returncode == 0


@pytest.mark.parametrize(
    ("what", "target", "nth", "when", "expected"),
    [
        ("dataset", "tui_app.exports.dataset:export_copy", 7, "after", 40 + 1),  # wavs/ + metadata.csv
        ("pages", "tui_app.exports.book:atomic_write", 1, "before", 3 + 1),  # 3 PNGs + book.pdf
        ("variants", "tui_app.exports.variants:export_copy", 2, "after", 2),
    ],
)
def test_a_killed_exports_staging_folder_goes_with_the_next_export_to_any_folder_beside_it(
    swept, tmp_path, what, target, nth, when, expected
):
    """An export killed half way leaves only its hidden staging folder (``.v1.tmp-HEX``), never a
    partial ``v1``, and the store unchanged. The next export into the same folder removes it even
    when it goes to another ``OUT`` (it used to stay until an export to ``v1`` itself), and ``v1``
    is then exported whole; once it exists, a third export to it exits 2 with one line."""
    root = _copy(swept, tmp_path)
    before = _dump(root)
    exports = tmp_path / "exports"
    killed_at(target, nth, when, "export", what, str(exports / "v1"), cwd=root)
    assert not (exports / "v1").exists()
    staged = [p for p in exports.iterdir() if p.name.startswith(".v1.tmp-")]
    assert len(staged) == 1 and staged[0].is_dir()
    assert _dump(root) == before

    other = tui_app("export", what, str(exports / "v2"), cwd=root)
    assert other.returncode == 0, other.stderr
    assert sorted(p.name for p in exports.iterdir()) == ["v2"]
    again = tui_app("export", what, str(exports / "v1"), cwd=root)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in exports.iterdir()) == ["v1", "v2"]
    files = sorted(str(p.relative_to(exports / "v1")) for p in (exports / "v1").rglob("*") if p.is_file())
    assert files == sorted(
        str(p.relative_to(exports / "v2")) for p in (exports / "v2").rglob("*") if p.is_file()
    )
    assert len(files) == expected, files
    refused = tui_app("export", what, str(exports / "v1"), cwd=root)
    assert refused.returncode == 2 and "already exists" in refused.stderr and refused.stderr.count("\n") == 1
    assert _dump(root) == before
