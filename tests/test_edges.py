"""Edges that must not lose or mismatch work (issue 10): sync beside generation, staleness of takes,
exports of the current take, finals, independent export files, concurrent exports, attempts."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from conftest import write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.exports import ExportError
from tui_app.files import IntegrityError, sha256_file
from tui_app.project import Project


def tui_app(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def _engine(config_path: Path, names: tuple[str, ...] = ("dataset",)) -> Engine:
    project = Project.open(load_config(config_path))
    project.import_sources(names=list(names))
    return Engine(project)


def _run(engine: Engine, names: tuple[str, ...] = ("dataset",)) -> None:
    anyio.run(lambda: engine.run(list(names)))


def _orphans(root: Path) -> list[Path]:
    folder = root / "data" / "orphans"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _assert_consistent(project: Project) -> None:
    """Every item with a current take has its file with the recorded sha256."""
    for coll in project.config.collections.values():
        for key, take in project.store.current_takes(coll.name):
            path = project.root / take.path
            assert path.is_file(), f"{coll.name}/{key}: current take file missing"
            assert sha256_file(path) == take.sha256, f"{coll.name}/{key}: sha256 differs"


# ---------------------------------------------------------------- 1. sync beside running generation


def test_sync_fix_beside_a_running_batch_never_moves_a_take_it_will_record(tmp_path):
    """`sync --fix` again and again from another process while a batch runs: nothing moved, nothing lost."""
    config_path = write_project(tmp_path, entries=800, pages=1, photos=1, latency_ms=2, concurrency=8)
    batch = subprocess.Popen(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    findings = []
    rounds = 0
    while not (tmp_path / "data" / "state.sqlite").exists() and batch.poll() is None:
        time.sleep(0.01)
    while batch.poll() is None:
        with Project.open(load_config(config_path)) as project:
            findings += project.sync(fix=True, verify_hashes=False)
        rounds += 1
    assert batch.wait(timeout=120) == 0, batch.stderr.read() if batch.stderr else ""
    assert rounds >= 3, "the batch ended before sync could run beside it"
    assert findings == [], [f.line(fixed=True) for f in findings]
    assert _orphans(tmp_path) == []
    with Project.open(load_config(config_path)) as project:
        assert project.counts()["dataset"]["completed"] == 800
        _assert_consistent(project)
        assert project.sync() == []


def test_sync_check_in_process_while_generating_reports_nothing(tmp_path):
    """The TUI's `s`: sync on the engine's own event loop between completions finds no mismatch."""
    engine = _engine(write_project(tmp_path, entries=300, pages=1, photos=1, latency_ms=1, concurrency=8))
    findings = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, ["dataset"])
            while engine.store.counts(["dataset"])["dataset"]["completed"] < 300:
                findings.extend(engine.project.sync(fix=True, verify_hashes=False))
                await anyio.sleep(0.002)

    anyio.run(main)
    assert findings == [], [f.line(fixed=True) for f in findings]
    _assert_consistent(engine.project)
    assert _orphans(tmp_path) == []


# ---------------------------------------------------------------- 3. staleness belongs to the take


def _change_text(config_path: Path, key: str, text: str) -> None:
    source = config_path.parent / "data" / "prompts.data"
    lines = [
        f'( {key} "{text}" )' if line.startswith(f"( {key} ") else line
        for line in source.read_text().splitlines()
    ]
    source.write_text("\n".join(lines) + "\n")


def test_revert_to_a_take_of_older_input_leaves_the_item_stale_and_export_skips_it(tmp_path):
    config_path = write_project(tmp_path, entries=3, pages=1, photos=1)
    engine = _engine(config_path)
    _run(engine)
    _change_text(config_path, "arctic_a0001", "First text, third version.")
    engine.project.import_sources(names=["dataset"])
    item = engine.store.find_item("dataset", "arctic_a0001")
    assert item.stale and item.status == "pending"
    _run(engine)
    assert not engine.store.find_item("dataset", "arctic_a0001").stale
    assert engine.project.revert(item.id, 1)
    item = engine.store.find_item("dataset", "arctic_a0001")
    assert item.stale and item.status == "completed"
    report = engine.project.export("dataset", tmp_path / "exp")
    assert ("arctic_a0001", "stale: take 1 was made from other input") in report.skipped
    assert "arctic_a0001" not in (tmp_path / "exp" / "metadata.csv").read_text()
    # back to the take made from the current text: not stale, exported with that text
    assert engine.project.revert(item.id, 2)
    assert not engine.store.find_item("dataset", "arctic_a0001").stale
    engine.project.export("dataset", tmp_path / "exp2")
    assert "arctic_a0001|First text, third version." in (tmp_path / "exp2" / "metadata.csv").read_text()


def test_revert_to_a_take_whose_file_is_gone_is_a_one_line_error(tmp_path):
    config_path = write_project(tmp_path, entries=2, pages=1, photos=1)
    engine = _engine(config_path)
    _run(engine)
    item = engine.store.find_item("dataset", "arctic_a0001")
    engine.regenerate("dataset", [item.id])
    _run(engine)
    first = engine.store.takes(item.id)[0]
    (tmp_path / first.path).unlink()
    engine.project.close()
    result = tui_app("revert", "dataset", "arctic_a0001", "1", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1 and "is missing" in result.stderr and "Traceback" not in result.stderr
    )
    with Project.open(load_config(config_path)) as project:
        assert (
            project.store.find_item("dataset", "arctic_a0001").current_take
            == project.store.takes(item.id)[1].id
        )
        with pytest.raises(IntegrityError, match="take 1: its file .* is missing"):
            project.revert(item.id, 1)
    export = tui_app("export", "dataset", "out", cwd=tmp_path)
    assert export.returncode == 0, export.stderr


def test_export_of_a_take_whose_file_changed_is_a_one_line_error_and_leaves_nothing(tmp_path):
    config_path = write_project(tmp_path, entries=3, pages=1, photos=1)
    engine = _engine(config_path)
    _run(engine)
    take = dict(engine.store.current_takes("dataset"))["arctic_a0002"]
    (tmp_path / take.path).write_bytes(b"edited")
    with pytest.raises(
        ExportError, match="arctic_a0002 take 1: its file .* differs from its recorded sha256"
    ):
        engine.project.export("dataset", tmp_path / "exp")
    assert not (tmp_path / "exp").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exp")] == []


# ---------------------------------------------------------------- 4. a failed regeneration hides no take


def test_export_keeps_the_current_take_when_its_regeneration_failed(tmp_path):
    config_path = write_project(tmp_path, entries=4, pages=1, photos=1, max_attempts=1)
    engine = _engine(config_path)
    _run(engine)
    ids = [i.id for i in engine.store.items("dataset")]
    engine.regenerate("dataset", ids[:2])
    engine.provider("simulated").failure_rate = 1.0  # type: ignore[attr-defined]
    _run(engine)
    assert {i.status for i in engine.store.items("dataset")[:2]} == {"failed"}
    report = engine.project.export("dataset", tmp_path / "exp")
    assert report.exported == 4 and report.skipped == []
    assert len(list((tmp_path / "exp" / "wavs").iterdir())) == 4


# ---------------------------------------------------------------- 5. finals follow the chosen take


def test_final_is_rebuilt_for_a_new_take_removed_when_the_choice_moves_and_never_stale(tmp_path):
    config_path = write_project(tmp_path, entries=1, pages=1, photos=1)
    engine = _engine(config_path, ("variants",))
    _run(engine, ("variants",))
    store, project = engine.store, engine.project
    balanced = store.find_item("variants", "astronaut.s1-balanced")
    project.choose(balanced.id)
    final = anyio.run(engine.build_final, "variants", balanced.id)
    finals = tmp_path / "data" / "out" / "variants" / "finals"
    assert final is not None and final.take_number == 1
    assert sorted(p.name for p in finals.iterdir()) == ["astronaut.s1-balanced.take1.png"]
    # regenerate the chosen slot: the run rebuilds its final from take 2 and removes take 1's
    engine.regenerate("variants", [balanced.id])
    _run(engine, ("variants",))
    final = store.final(balanced.id)
    assert final is not None and final.take_number == 2
    assert sorted(p.name for p in finals.iterdir()) == ["astronaut.s1-balanced.take2.png"]
    project.export("variants", tmp_path / "exp")
    assert sha256_file(tmp_path / "exp" / "astronaut.png") == final.sha256
    # revert the chosen slot to take 1: its final is out of date and never exported
    project.revert(balanced.id, 1)
    report = project.export("variants", tmp_path / "exp2")
    take1 = store.takes(balanced.id)[0]
    assert sha256_file(tmp_path / "exp2" / "astronaut.png") == take1.sha256
    assert any("out of date" in note for note in report.notes)
    # the choice moves: the first slot's final goes
    creative = store.find_item("variants", "astronaut.s2-creative")
    project.choose(creative.id)
    assert store.final(balanced.id) is None
    anyio.run(engine.build_finals)
    assert sorted(p.name for p in finals.iterdir()) == ["astronaut.s2-creative.take1.png"]
    assert project.sync() == []


def test_sync_covers_finals(tmp_path):
    config_path = write_project(tmp_path, entries=1, pages=1, photos=1)
    engine = _engine(config_path, ("variants",))
    _run(engine, ("variants",))
    item = engine.store.find_item("variants", "astronaut.s0-forensic")
    engine.project.choose(item.id)
    final = anyio.run(engine.build_final, "variants", item.id)
    finals = tmp_path / "data" / "out" / "variants" / "finals"
    (finals / "stray.png").write_bytes(b"x")
    (tmp_path / final.path).write_bytes(b"edited")
    lines = sorted(f.line(fixed=True) for f in engine.project.sync(fix=True))
    assert lines == [
        "variants/astronaut.s0-forensic: its final differs from its recorded sha256"
        " -> file moved to orphans, final forgotten (rebuilt)",
        "variants/stray.png: final not referenced by any chosen take -> moved to data/orphans/variants",
    ]
    assert engine.store.final(item.id) is None
    _run(engine, ("variants",))  # a run rebuilds the missing final
    assert engine.store.final(item.id) is not None and engine.project.sync() == []


# ---------------------------------------------------------------- 6., 7. exports: copies, one at a time


def test_exports_are_independent_copies(tmp_path):
    config_path = write_project(tmp_path, entries=3, pages=1, photos=1)
    engine = _engine(config_path, ("dataset", "pages"))
    _run(engine, ("dataset", "pages"))
    engine.project.export("dataset", tmp_path / "exp")
    engine.project.export("pages", tmp_path / "book")
    exported = list((tmp_path / "exp" / "wavs").iterdir()) + list((tmp_path / "book").glob("*.png"))
    assert exported and all(p.stat().st_nlink == 1 for p in exported)
    with open(exported[0], "r+b") as fh:  # editing an export in place never touches the project
        fh.write(b"XXXX")
    assert engine.project.sync() == []


def test_two_exports_to_one_folder_one_wins_the_other_exits_2(tmp_path):
    write_project(tmp_path, entries=400, pages=1, photos=1)
    assert tui_app("--batch", "--collection", "dataset", cwd=tmp_path).returncode == 0
    for round_ in range(3):
        out = f"exp{round_}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tui_app", "export", "dataset", out],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
        assert sorted(code for code, _ in results) == [0, 2], results
        loser = next(err for code, err in results if code == 2)
        assert "already exists" in loser and "Traceback" not in loser and loser.count("\n") == 1
        assert len(list((tmp_path / out / "wavs").iterdir())) == 400
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_killed_export_leaves_no_temp_folder_after_the_next_export(tmp_path):
    write_project(tmp_path, entries=300, pages=1, photos=1)
    assert tui_app("--batch", "--collection", "dataset", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "tui_app", "export", "dataset", "exp"], cwd=tmp_path)
    deadline = time.monotonic() + 30
    while (
        not [p for p in tmp_path.iterdir() if p.name.startswith(".exp.tmp-")] and time.monotonic() < deadline
    ):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    if (tmp_path / "exp").exists():
        pytest.skip("the export finished before it could be killed")
    assert tui_app("export", "dataset", "exp", cwd=tmp_path).returncode == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ---------------------------------------------------------------- 11. attempts


def test_a_crash_costs_no_attempt(tmp_path):
    """Claimed, then the process dies: after recovery the item still gets max_attempts real tries."""
    config_path = write_project(tmp_path, entries=1, pages=1, photos=1, max_attempts=2, failure_rate=1.0)
    with Project.open(load_config(config_path)) as project:
        project.import_sources(names=["dataset"])
        for _ in range(3):  # three crashes while generating
            assert project.store.claim_next("dataset") is not None
            project.recover()
    engine = _engine(config_path)
    _run(engine)
    item = engine.store.find_item("dataset", "arctic_a0001")
    assert item.status == "failed" and item.attempts == 2
    tries = [e for e in engine.store.events() if e.kind in ("retry", "failed") and e.key == item.key]
    assert len(tries) == 2, [e.message for e in tries]
    assert tries[-1].message.endswith("(after 2 attempts)")


def test_sigkill_during_a_run_gives_every_item_its_full_attempts(tmp_path):
    write_project(tmp_path, entries=40, pages=1, photos=1, latency_ms=150, concurrency=8, max_attempts=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    db = tmp_path / "data" / "state.sqlite"
    from conftest import sql

    while time.monotonic() < deadline:
        try:
            if db.exists() and sql(db, "SELECT COUNT(*) FROM items WHERE status='generating'")[0][0] >= 4:
                break
        except sqlite3.OperationalError:  # the schema is still being created
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert sql(db, "SELECT MAX(attempts) FROM items")[0][0] == 0
    assert tui_app("--batch", "--collection", "dataset", cwd=tmp_path).returncode == 0


# ---------------------------------------------------------------- cleanup beside a revert


def test_cleanup_never_deletes_a_take_that_became_current(tmp_path):
    config_path = write_project(tmp_path, entries=1, pages=1, photos=1)
    engine = _engine(config_path)
    _run(engine)
    item = engine.store.find_item("dataset", "arctic_a0001")
    for _ in range(2):
        engine.regenerate("dataset", [item.id])
        _run(engine)
    store = engine.store
    original = store.forget_take

    def revert_first(take_id: int, reason: str) -> bool:  # another process reverts just before
        if take_id == store.takes(item.id)[0].id:
            store.revert(item.id, 1)
        return original(take_id, reason)

    store.forget_take = revert_first  # type: ignore[method-assign]
    engine.project.cleanup(keep=0)
    store.forget_take = original  # type: ignore[method-assign]
    current = engine.project.current_take(item.id)
    assert current is not None and current.number == 1
    assert (tmp_path / current.path).is_file()
    assert engine.project.sync() == []


def test_threads_do_not_matter_here() -> None:
    assert threading.active_count() >= 1 and os.getpid() > 0


# ---------------------------------------------------------------- 2. output folders of their own


@pytest.mark.parametrize(
    ("collection", "output", "other"),
    [
        ("dataset", "data", "project.state"),
        ("dataset", ".", "project.state"),
        ("variants", "data/photos/variants", "collections.variants.source"),
        ("dataset", "data/orphans", "the orphans folder beside project.state"),
        ("pages", "data/out/dataset", "collections.dataset.output"),
        ("pages", "data/out", "collections.dataset.output"),
    ],
)
def test_an_output_folder_overlapping_state_sources_orphans_or_outputs_is_refused(
    tmp_path, collection, output, other
):
    config_path = write_project(tmp_path, entries=2, pages=1, photos=1)
    text = config_path.read_text().replace(
        f"[collections.{collection}]\n", f'[collections.{collection}]\noutput = "{output}"\n'
    )
    config_path.write_text(text)
    for command in (["--batch"], ["sync", "--fix"], ["status"]):
        result = tui_app(*command, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = result.stderr.strip()
        assert "\n" not in line and f"collections.{collection}.output" in line and other in line, line
    assert not (tmp_path / "data" / "state.sqlite").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["photos", "prompts.data", "story.md"]
