"""The TUI as a client of the store: attached to a project that another process works, pausing and
moving rows to the front through the store, and quitting without touching other workers' items."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import sql, until, write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.project import Project
from tui_app.tui.app import build_app
from tui_app.tui.table import ItemTable

pytestmark = pytest.mark.anyio


def _shown(app, collection: str = "dataset") -> str:
    """The summary lines of a collection as they are on screen."""
    return str(app.summaries[collection].content)


def _completed_shown(app, collection: str = "dataset") -> int:
    match = re.search(r"(\d+)/(\d+)\[/b\] completed", _shown(app, collection))
    assert match, _shown(app, collection)
    return int(match[1])


def _external(project: Path, *args: str) -> subprocess.Popen:
    """``tui-app ARGS`` in the project folder, as a user starts it in another terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "tui_app", *args],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


async def test_a_viewer_shows_an_external_batch_live_without_running_an_engine(tmp_path):
    project = write_project(tmp_path, entries=300, pages=1, photos=1, latency_ms=20, concurrency=2)
    config = load_config(project)
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        assert _completed_shown(app) == 0 and table.row_at(0).status == "pending"
        proc = _external(tmp_path, "--batch")
        shown, worker_ids = [], set()
        try:
            while proc.poll() is None:
                shown.append(_completed_shown(app))
                worker_ids |= {w.id for w in app.store.workers()}
                await pilot.pause(0.05)
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            await until(pilot, lambda: _completed_shown(app) == 300, timeout=5)
        finally:
            _stop(proc)
        # the counts rose while the other process worked, never backwards, up to the total
        during = [n for n in shown if 0 < n < 300]
        assert len(set(during)) >= 3, shown
        assert shown == sorted(shown)
        assert "300/300[/b] completed" in _shown(app) and "0 pending" in _shown(app)
        # the visible rows follow too, read again from the store
        assert {table.row_at(i).status for i in range(20)} == {"completed"}
        # the app ran no engine: no worker of its own was ever registered, nothing generated here
        assert worker_ids and app.engine.worker_id not in worker_ids
        assert not any(w.group == "engine" for w in app.workers)
        assert sum(s.completed for s in app.engine.stats.values()) == 0
        # the Log tab shows the other process's events, each once
        await pilot.press("4")
        await pilot.pause(0.3)
        lines = [strip.text for strip in app.log_view.lines]
        assert sum(1 for line in lines if line.startswith("arctic_a0001 completed")) == 1
        completed = [e for e in app.store.events(limit=100_000) if e.kind == "completed"]
        assert sum(1 for line in lines if " completed (" in line) == len(completed)


async def test_pause_key_pauses_and_resumes_the_current_collection(tmp_path):
    config = load_config(write_project(tmp_path, entries=10))
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("P")
        assert app.store.paused() == {"dataset"}
        await until(pilot, lambda: "10 pending: paused" in _shown(app))
        await pilot.press("2", "P")  # the pages tab pauses pages
        assert app.store.paused() == {"dataset", "pages"}
        await pilot.press("1", "P")  # pressed again: resumed
        assert app.store.paused() == {"pages"}
        await until(pilot, lambda: "paused" not in _shown(app))
        assert "10 pending: no worker running" in _shown(app)
        app.store.pause(["*"])  # a pause of everything (e.g. `tui-app pause`) holds this tab too ...
        await until(pilot, lambda: "paused (everything)" in _shown(app))
        await pilot.press("P")  # ... and P lifts it
        assert "*" not in app.store.paused()
        # each key press is in the command log, as the same command from the command line would be
        kinds = [row[0] for row in sql(config.state_path, "SELECT kind FROM commands ORDER BY id")]
        assert kinds == ["pause", "pause", "resume", "resume"]


async def test_front_key_moves_the_marked_rows_or_the_cursor_row_ahead_of_the_queue(tmp_path):
    config = load_config(write_project(tmp_path, entries=10))
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await pilot.press("down", "down", "space", "down", "space")  # marks arctic_a0003, arctic_a0005
        await pilot.press("F")
        items = {i.key: i for i in app.store.items("dataset")}
        fronted = {items["arctic_a0003"].priority, items["arctic_a0005"].priority}
        others = [i.priority for k, i in items.items() if k not in ("arctic_a0003", "arctic_a0005")]
        assert min(fronted) > max(others)
        assert not table.marks
        await pilot.press("end", "F")  # nothing marked: the cursor row
        last = app.store.find_item("dataset", "arctic_a0010")
        assert last.priority > max(fronted)


async def test_quitting_releases_only_the_apps_own_items(tmp_path):
    # the app's worker generates the dataset (provider "simulated"), an external batch the pages ("sim2")
    path = write_project(tmp_path, entries=40, pages=30, photos=1, latency_ms=400, concurrency=4)
    text = path.read_text()
    pages_at = text.index("[collections.pages]")
    text = text[:pages_at] + text[pages_at:].replace('provider = "simulated"', 'provider = "sim2"', 1)
    sim = text[text.index("[providers.simulated]") :]
    # the app's own requests take 5 s, so the number in flight holds still while the quit question counts it
    own_provider = text.replace("latency_ms = 400", "latency_ms = 5000", 1)
    path.write_text(own_provider + "\n" + sim.replace("[providers.simulated]", "[providers.sim2]"))
    app = build_app(load_config(path), clock_free=True)  # with its own worker
    async with app.run_test(size=(140, 30)) as pilot:
        proc = _external(tmp_path, "--batch", "--collection", "pages")
        try:
            # this app's worker: every dataset row, as requests (`g` would start the pages here too)
            await pilot.press("a", "r")
            external: set[int] = set()

            def both_busy() -> bool:
                nonlocal external
                others = [w for w in app.store.workers() if w.id != app.engine.worker_id]
                external = set().union(*(app.store.held(w.id) for w in others)) if others else set()
                return app.in_flight() > 0 and bool(external)

            await until(pilot, both_busy)
            await until(pilot, lambda: len(app.live_workers()) == 1)
            own = app.store.held(app.engine.worker_id)
            await pilot.press("q")
            await pilot.pause(0.2)
            assert app.is_running  # it asked first, counting only its own items
            question = app.screen.question
            n = app.in_flight()
            counted = "1 item is" if n == 1 else f"{n} items are"
            assert f"{counted} in flight in this app's worker" in question
            assert "other workers go on" in question
            await pilot.press("y")
            await until(pilot, lambda: not app.is_running, timeout=10)
            items = {i.id: i for c in ("dataset", "pages") for i in app.store.items(c)}
            # its own items went back to pending (or completed first); the other worker's were left alone
            assert own and all(items[i].status in ("pending", "completed") for i in own)
            assert all(items[i].status in ("generating", "completed") for i in external)
            assert all(
                i.worker_id != app.engine.worker_id for i in items.values() if i.status == "generating"
            )
            assert not any(
                e.kind in ("released", "recovered") and e.collection == "pages"
                for e in app.store.events(limit=100_000)
            )
            # the other worker goes on alone and finishes the pages
            assert proc.wait(30) == 0
            assert app.store.counts(["pages"])["pages"]["completed"] == 31
        finally:
            _stop(proc)


async def test_the_apps_worker_failing_is_said_and_the_app_goes_on(tmp_path):
    app = build_app(load_config(write_project(tmp_path, entries=5)), clock_free=True)

    async def broken(**_kw) -> None:
        raise RuntimeError("the provider cannot start")

    app.engine.run = broken  # runs in the worker's thread; the app's loop only hears of it
    async with app.run_test(size=(140, 30)) as pilot:
        await until(pilot, lambda: any("the provider cannot start" in n.message for n in app._notifications))
        await pilot.press("P")  # the app still works, through the store
        assert app.store.paused() == {"dataset"}
        await pilot.press("q")
        await until(pilot, lambda: not app.is_running, timeout=10)


async def test_a_viewer_with_no_worker_builds_a_chosen_variants_final_itself(tmp_path):
    config = load_config(write_project(tmp_path, entries=2, pages=1, photos=1))
    with Project.open(config) as project:  # the variants were generated earlier, by a batch
        project.import_sources()
        await Engine(project).run(["variants"])
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("3", "down", "c")
        final = config.collections["variants"].output / "finals" / "astronaut.s1-balanced.take1.png"
        await until(pilot, final.exists)
        await until(pilot, lambda: any("finalized from take 1" in n.message for n in app._notifications))
