"""The Textual app driven with Pilot on small simulated projects."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import sql, until, write_project
from textual import events

from tui_app.config import load_config
from tui_app.tui.app import build_app
from tui_app.tui.table import ItemTable

pytestmark = pytest.mark.anyio


def _app(tmp_path: Path, **kw):
    config = load_config(write_project(tmp_path, **kw))
    return build_app(config, clock_free=True)


def _keys(app, collection: str = "dataset") -> list[str]:
    table = app.query_one(f"#table-{collection}", ItemTable)
    return sorted(app.store.get_item(i).key for i in table.marks)


async def test_marking_range_marking_invert_and_clear(tmp_path):
    app = _app(tmp_path, entries=10)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("space", "space", "down", "space")
        assert _keys(app) == ["arctic_a0001", "arctic_a0002", "arctic_a0004"]
        await pilot.press("space")  # arctic_a0005
        await pilot.press("up", "space")  # unmark arctic_a0005 again
        assert _keys(app) == ["arctic_a0001", "arctic_a0002", "arctic_a0004"]
        await pilot.press("escape")
        assert _keys(app) == []
        await pilot.press("home", "down", "shift+down", "shift+down", "shift+down")
        assert _keys(app) == ["arctic_a0002", "arctic_a0003", "arctic_a0004", "arctic_a0005"]
        await pilot.press("A")
        assert len(_keys(app)) == 6 and "arctic_a0002" not in _keys(app)
        await pilot.press("escape", "a")
        assert len(_keys(app)) == 10


async def test_regenerate_dialog_with_override(tmp_path):
    app = _app(tmp_path, entries=5)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("down", "R")
        await pilot.press(*"happy")
        await pilot.press("enter")
        item = app.store.find_item("dataset", "arctic_a0002")
        assert item.status in ("pending", "generating", "completed") and item.priority >= 0
        await until(pilot, lambda: app.store.find_item("dataset", "arctic_a0002").status == "completed")
        take = app.store.takes(item.id)[-1]
        assert take.params["emotion"] == "happy"
        # nothing else was generated: only requested items run until `g`
        assert app.store.counts(["dataset"])["dataset"]["completed"] == 1
        await pilot.press("R", "escape")  # a cancelled dialog queues nothing
        await pilot.pause(0.5)
        assert app.store.counts(["dataset"])["dataset"]["completed"] == 1


async def test_debounce_three_presses_50ms_apart_during_a_long_run(tmp_path):
    app = _app(tmp_path, entries=60, latency_ms=40, concurrency=2)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("g")  # a long run is going
        await pilot.pause(0.3)
        await pilot.press("end")
        # real key events, 50 ms apart, without waiting for the app to settle in between
        for key in ("r", "up", "r", "up", "r"):
            app.post_message(events.Key(key, key if len(key) == 1 else None))
            await asyncio.sleep(0.05 if key == "r" else 0.001)
        targets = [
            app.store.find_item("dataset", k) for k in ("arctic_a0060", "arctic_a0059", "arctic_a0058")
        ]
        await until(
            pilot,
            lambda: all(
                app.store.get_item(t.id).status == "completed" and len(app.store.takes(t.id)) >= 1
                for t in targets
            ),
            timeout=30,
        )
        batches = {app.store.get_item(t.id).batch_id for t in targets}
        assert len(batches) == 1 and None not in batches
        batch = batches.pop()
        messages = [e.message for e in app.store.events(limit=10_000)]
        assert f"3 regenerations queued as batch {batch}" in messages


async def test_pressing_r_on_the_same_row_three_times_queues_it_once_per_window(tmp_path):
    app = _app(tmp_path, entries=5, latency_ms=10)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.pause(0.3)  # the app has painted and settled, as a user sees it before pressing
        for _ in range(3):
            app.post_message(events.Key("r", "r"))
            await asyncio.sleep(0.05)
        await until(pilot, lambda: app.store.find_item("dataset", "arctic_a0001").status == "completed")
        assert len({e.message for e in app.store.events(limit=1000) if "queued as batch" in e.message}) == 1
        # each press is a command in the store's log, as `tui-app regenerate` would write it
        rows = sql(app.config.state_path, "SELECT kind, note FROM commands")
        assert [kind for kind, _ in rows] == ["regenerate"] * 3
        # the same line as the shell command's, and the same batch for every press in the window
        assert len({note for _, note in rows}) == 1
        assert rows[0][1].startswith("dataset: arctic_a0001 queued for a new take (batch ")


async def test_choose_a_variant_sets_others_aside_and_finalizes(tmp_path):
    app = _app(tmp_path, photos=1)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("3", "g")
        await until(pilot, lambda: app.store.counts(["variants"])["variants"]["completed"] == 3)
        await pilot.pause(0.3)
        await pilot.press("down", "c")
        final = app.config.collections["variants"].output / "finals" / "astronaut.s1-balanced.take1.png"
        await until(pilot, final.exists)
        chosen = {i.key: i.chosen for i in app.store.items("variants")}
        assert chosen == {
            "astronaut.s0-forensic": -1,
            "astronaut.s1-balanced": 1,
            "astronaut.s2-creative": -1,
        }
        from PIL import Image

        assert Image.open(final).size == (64, 64)  # 2x the 32x32 simulated take


async def test_text_filter_and_status_filter(tmp_path):
    app = _app(tmp_path, entries=12)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await pilot.press("slash", *"twentieth")
        await pilot.pause(0.3)
        assert table.count == 1 and table.cursor_row.key == "arctic_a0003"
        await pilot.press("enter", "escape")
        await pilot.press("slash", "escape")  # Esc in the box clears the filter
        await pilot.pause(0.3)
        assert table.count == 12
        await pilot.press("r")
        await until(pilot, lambda: app.store.find_item("dataset", "arctic_a0001").status == "completed")
        await pilot.press("t", "t", "t")  # all -> pending -> generating -> completed
        await pilot.pause(0.3)
        assert table.count == 1


async def test_quit_with_work_in_flight_puts_it_back_to_pending(tmp_path):
    app = _app(tmp_path, entries=20, latency_ms=3000, concurrency=4)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("g")
        await until(pilot, lambda: app.in_flight() == 4)
        await pilot.press("q")
        await pilot.pause(0.2)
        assert app.is_running  # it asked first
        await pilot.press("y")
        await until(pilot, lambda: not app.is_running, timeout=10)
    counts = app.store.counts(["dataset"])["dataset"]
    assert counts["generating"] == 0 and counts["pending"] == 20


async def test_5000_completions_while_keys_are_pressed(tmp_path):
    app = _app(tmp_path, entries=5000, pages=1, photos=1, concurrency=32)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await pilot.press("g")
        downs = marks = 0
        while app.store.counts(["dataset"])["dataset"]["completed"] < 5000:
            app.post_message(events.Key("down", None))
            downs += 1
            if downs % 25 == 0:
                app.post_message(events.Key("space", " "))  # marks the row and moves down
                marks += 1
            await asyncio.sleep(0.01)
        await pilot.pause(0.5)
        assert downs > 50
        # every key took effect, in order, while thousands of completions streamed in
        assert table.cursor == downs + marks
        assert len(table.marks) == marks
        assert table.row_at(0).status == "completed"
