"""Regression tests of TUI and progress defects: ``g`` over every collection, rows at the bottom edge,
items/s at any speed and after a run, ``--limit`` progress, the details dialog's take list, a variant's
temperature override, the filter's first match, the summary once a run is over."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import sql, until, write_project
from rich.console import Console
from textual.widgets import OptionList

from tui_app import batch
from tui_app.config import load_config
from tui_app.engine.core import RunStats
from tui_app.store import Event, Row
from tui_app.tui.app import build_app
from tui_app.tui.screens import DetailScreen
from tui_app.tui.table import ItemTable
from tui_app.views import Throughput

pytestmark = pytest.mark.anyio

COLLECTIONS = ("dataset", "pages", "variants")


def _app(tmp_path: Path, *, clock_free: bool = True, **kw):
    return build_app(load_config(write_project(tmp_path, **kw)), clock_free=clock_free)


def _shown(app, collection: str = "dataset") -> str:
    """The summary lines of a collection as they are on screen."""
    return str(app.summaries[collection].content)


def _cell(table: ItemTable, index: int, title: str) -> str:
    column = next(c for c in table.columns if c.title == title)
    return column.value(table.row_at(index))


def _on_screen(table: ItemTable, index: int) -> bool:
    """Row ``index`` is painted inside the table's visible rows (not under a scrollbar or the footer)."""
    top = table.scroll_offset.y
    return top <= index < top + table.scrollable_content_region.height


# ---------------------------------------------------------------------------------------- 1. g


async def test_g_on_any_tab_generates_everything_pending_in_every_collection(tmp_path):
    app = _app(tmp_path, entries=4, pages=1, photos=1)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("g")  # on the Dataset tab
        await until(
            pilot,
            lambda: all(
                c["pending"] == 0 and c["generating"] == 0 and c["completed"] == sum(c.values())
                for c in app.store.counts(list(COLLECTIONS)).values()
            ),
        )
        counts = app.store.counts(list(COLLECTIONS))
        assert {n: counts[n]["completed"] for n in COLLECTIONS} == {"dataset": 4, "pages": 2, "variants": 3}


# ---------------------------------------------------------------------------- 2. the last row


@pytest.mark.parametrize("size", [(80, 24), (149, 30), (150, 24), (160, 45), (200, 50)])
async def test_end_and_pagedown_keep_the_cursor_row_on_screen(tmp_path, size):
    app = _app(tmp_path, entries=120, pages=40, photos=9)
    async with app.run_test(size=size) as pilot:
        for tab in ("1", "2", "3"):
            await pilot.press(tab)
            table = app.current_table()
            await pilot.press("end")
            await pilot.pause()
            assert table.cursor == table.count - 1
            assert _on_screen(table, table.cursor), (tab, table.scroll_offset, table.size)
            assert table.scroll_offset.y == table.max_scroll_y  # nothing below the last row
            await pilot.press("home")
            for _ in range(8):
                await pilot.press("pagedown")
                await pilot.pause()
                assert _on_screen(table, table.cursor), (tab, table.cursor, table.scroll_offset)
            assert table.cursor == table.count - 1


async def test_the_cursor_row_stays_on_screen_when_the_terminal_shrinks(tmp_path):
    app = _app(tmp_path, entries=120)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await pilot.press("end")
        await pilot.pause()
        for width, height in ((120, 30), (80, 24), (200, 50), (150, 20)):
            await pilot.resize_terminal(width, height)
            await pilot.pause(0.1)
            assert table.cursor == 119
            assert _on_screen(table, table.cursor), ((width, height), table.scroll_offset, table.size)


# ------------------------------------------------------------------------------ 3. items/s


class _Clock:
    """Stands in for the ``time`` module in :mod:`tui_app.batch`: both clocks at ``now``."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class _Counts:
    """A store that only answers counts (set by the test)."""

    def __init__(self, counts: dict[str, int]):
        self.value = {"dataset": dict(counts)}

    def counts(self, names):
        return {n: dict(self.value[n]) for n in names}

    def paused(self):
        return set()


def _display(monkeypatch, counts: dict[str, int], **kw) -> tuple[batch._Display, _Clock, io.StringIO]:
    clock = _Clock()
    monkeypatch.setattr(batch, "time", clock)
    collections = {"dataset": SimpleNamespace(provider="simulated")}
    engine = SimpleNamespace(
        store=_Counts(counts), stats={"dataset": RunStats()}, config=SimpleNamespace(collections=collections)
    )
    out = io.StringIO()
    console = Console(file=out, width=300, force_terminal=False)
    display = batch._Display(engine, ["dataset"], console, quiet=False, interval_s=1.0, **kw)
    return display, clock, out


def _complete(display: batch._Display, clock: _Clock, n: int, seconds: float, *, start_id: int = 1) -> None:
    """``n`` completions of this process's engine spread over ``seconds`` from the clock's time, as the
    engine records them (its stats, its store counts) and publishes them (events)."""
    stats = display.engine.stats["dataset"]
    counts = display.engine.store.value["dataset"]
    begin = clock.now
    if not stats.in_flight:
        stats.in_flight += 1  # the run's first claim; claims keep an item in flight from then on
    for i in range(n):
        clock.now = begin + (i + 1) * seconds / n
        stats.completed += 1
        counts["pending"] -= 1
        counts["completed"] += 1
        display.on_event(Event(start_id + i, clock.now, "info", "completed", "dataset", f"k{i}", "done"))


def _last_line(out: io.StringIO) -> str:
    return out.getvalue().strip().splitlines()[-1]


def _rate(line: str) -> float:
    match = re.search(r"([\d.]+) items/s", line)
    assert match, line
    return float(match[1])


def test_batch_items_per_second_is_right_at_thousands_a_second(monkeypatch):
    start = {"pending": 100_000, "generating": 0, "completed": 0, "failed": 0}
    display, clock, out = _display(monkeypatch, start)
    with display:
        _complete(display, clock, 40_000, 40.0)  # 1,000 items/s for 40 s
        display.refresh(force=True)
    line = _last_line(out)
    assert _rate(line) == pytest.approx(1000, rel=0.02), line
    # the ETA of the 60,000 left follows: about a minute, not 15
    assert "ETA 1m00s" in line or "ETA 59s" in line or "ETA 1m01s" in line, line


def test_batch_rate_of_a_finished_collection_stays_the_runs_rate(monkeypatch):
    display, clock, out = _display(
        monkeypatch, {"pending": 200, "generating": 0, "completed": 0, "failed": 0}, shared=True
    )
    store = display.engine.store.value["dataset"]
    with display:
        for _ in range(10):  # helper processes complete 20 items a second for 10 s (seen in the counts)
            clock.now += 1.0
            store["pending"] -= 20
            store["completed"] += 20
            store["generating"] = 4
            display.refresh()
        store["generating"] = 0  # done: nothing in flight any more
        for _ in range(120):  # two minutes later, other collections still running
            clock.now += 1.0
            display.refresh()
    lines = out.getvalue().strip().splitlines()
    assert _rate(lines[-1]) == pytest.approx(20, rel=0.05), lines[-1]
    assert "200/200 completed" in lines[-1] and "ETA 0s" in lines[-1]


def test_throughput_counts_per_bucket_at_any_speed_and_freezes_when_idle():
    rate = Throughput(window_s=30)
    rate.begin(0.0)
    for i in range(300_000):  # 10,000 items/s for 30 s
        rate.note(i / 10_000)
    assert rate.rate(30.0, busy=True) == pytest.approx(10_000, rel=0.01)
    assert len(rate._buckets) <= 62  # bounded, whatever the speed
    # idle: the whole stretch's rate, however long after
    assert rate.rate(30.0 + 3600, busy=False) == pytest.approx(10_000, rel=0.01)
    # completions of a burst read at once (a count that grew) count the same
    burst = Throughput(window_s=30)
    burst.begin(0.0)
    for second in range(1, 11):
        burst.note(float(second), 500)
    assert burst.rate(10.0, busy=True) == pytest.approx(500)
    assert burst.rate(500.0, busy=False) == pytest.approx(500)


# ---------------------------------------------------------------------------------- 4. --limit


def test_batch_progress_and_eta_with_limit_are_for_this_runs_items(monkeypatch):
    display, clock, out = _display(
        monkeypatch, {"pending": 1000, "generating": 0, "completed": 0, "failed": 0}, limit=10
    )
    with display:
        _complete(display, clock, 4, 2.0)  # 2 items/s
        display.refresh(force=True)
    line = _last_line(out)
    assert line.startswith("dataset: 4/10 this run (--limit 10)"), line
    assert "ETA 3s" in line, line  # the 6 left of this run at 2 items/s, not the 996 of the collection
    assert line.endswith("; 4/1000 in all")


def test_batch_with_limit_prints_this_runs_progress(tmp_path):
    write_project(tmp_path, entries=40, pages=1, photos=1, latency_ms=60, concurrency=1)
    proc = subprocess.run(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset", "--limit", "6"]
        + ["--progress-interval", "0.1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("dataset: ") and "ETA" in line]
    assert lines, proc.stdout
    assert all(re.match(r"dataset: \d/6 this run \(--limit 6\), ", line) for line in lines), lines
    assert all(re.search(r"items/s, ETA \S+; \d+/40 in all$", line) for line in lines), lines
    assert "dataset: 6/40 completed (6 this run)" in proc.stdout


# ----------------------------------------------------------------------------- 5. details, v


async def test_details_focus_the_take_list_on_the_current_take_and_v_reverts_to_the_one_picked(tmp_path):
    app = _app(tmp_path, entries=3)
    async with app.run_test(size=(140, 30)) as pilot:
        item = app.store.find_item("dataset", "arctic_a0001")
        for number in (1, 2):  # two takes; the second is current
            await pilot.press("r")
            await until(pilot, lambda n=number: len(app.store.takes(item.id)) == n)
            await until(pilot, lambda: app.store.get_item(item.id).status == "completed")
        await pilot.pause(0.5)  # the debounce window of the last press is over
        current = {t.id: t.number for t in app.store.takes(item.id)}
        assert current[app.store.get_item(item.id).current_take] == 2
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen))
        takes = app.screen.query_one("#takes", OptionList)
        assert app.focused is takes
        assert takes.get_option_at_index(takes.highlighted).id == "2"  # the current take
        await pilot.press("v")  # on the current take: nothing changes, no command is sent
        await pilot.pause(0.2)
        assert isinstance(app.screen, DetailScreen)
        assert sql(app.config.state_path, "SELECT COUNT(*) FROM commands WHERE kind='revert'") == [(0,)]
        await pilot.press("down", "v")  # take 1
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen))
        await until(
            pilot,
            lambda: (
                {t.id: t.number for t in app.store.takes(item.id)}[app.store.get_item(item.id).current_take]
                == 1
            ),
        )


# ----------------------------------------------------------------------- 6. variant temperature


async def test_variants_temp_column_shows_the_temperature_the_current_take_used(tmp_path):
    app = _app(tmp_path, photos=1)
    async with app.run_test(size=(140, 30)) as pilot:
        await pilot.press("3")
        table = app.query_one("#table-variants", ItemTable)
        await pilot.pause(0.2)
        assert [_cell(table, i, "temp") for i in range(3)] == ["0.10", "0.50", "0.80"]  # the slots'
        await pilot.press("R", *"0.5", "enter")  # forensic (0.10) regenerated at 0.5
        forensic = app.store.find_item("variants", "astronaut.s0-forensic")
        await until(pilot, lambda: app.store.get_item(forensic.id).status == "completed")
        assert app.store.takes(forensic.id)[-1].params["temperature"] == 0.5
        await until(pilot, lambda: _cell(table, 0, "temp") == "0.50")
        assert "0.50" in "".join(s.text for s in app.screen._compositor.render_strips())
        # rows without a take show their slot's temperature
        assert [_cell(table, i, "temp") for i in (1, 2)] == ["0.50", "0.80"]


def test_take_param_cells_fall_back_to_the_items_parameters():
    from dataclasses import replace

    from tui_app.kinds import get_kind

    temp = next(c for c in get_kind("variants").columns if c.title == "temp")
    row = Row(
        id=1,
        key="p.s0-forensic",
        ordinal=0,
        text="p.png",
        params={"temperature": 0.1},
        status="completed",
        attempts=0,
        last_error=None,
        stale=False,
        chosen=0,
        take_number=1,
        bytes=9,
        duration_s=None,
        seed=42,
        qa_flags=None,
    )
    assert temp.value(row) == "0.10"  # a store row without take parameters: the item's
    taken = replace(row, take_params={"temperature": 0.65})
    assert temp.value(taken) == "0.65"


# ------------------------------------------------------------------------------- 7. filter


async def test_filter_shows_the_first_match_at_the_top(tmp_path):
    app = _app(tmp_path, entries=100)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await pilot.press("end")
        await pilot.pause()
        assert table.scroll_offset.y > 0
        await pilot.press("slash", *"the")
        await until(pilot, lambda: 1 < table.count < 100)
        await pilot.pause(0.2)
        first = table.source.rows(0, 1)[0]
        assert table.cursor == 0 and table.scroll_offset.y == 0
        assert table.cursor_row.key == first.key and "the" in (first.text + first.key).lower()
        await pilot.press("enter", "end")  # back in the table, at the bottom of the matches
        await pilot.pause()
        await pilot.press("t")  # the status filter changes too: its first match, at the top
        await until(pilot, lambda: table.cursor == 0 and table.scroll_offset.y == 0)
        assert table.source.status_filter == "pending"


# ---------------------------------------------------------------------- 8. summary after a run


async def test_summary_says_when_a_run_is_over_without_its_rate_and_back_in_requests_only(tmp_path):
    app = _app(tmp_path, clock_free=False, entries=60, pages=1, photos=1, latency_ms=30, concurrency=2)
    async with app.run_test(size=(160, 30)) as pilot:
        assert "idle" in _shown(app)
        await pilot.press("g")
        await until(pilot, lambda: "items/s" in _shown(app) and "all pending" in _shown(app))
        await until(pilot, lambda: app.store.counts(["dataset"])["dataset"]["completed"] == 60, timeout=30)
        await until(pilot, lambda: "idle" in _shown(app), timeout=5)
        shown = _shown(app)
        assert "items/s" not in shown and "ETA" not in shown, shown
        assert "requests only (g: all pending)" in shown and "all pending ·" not in shown, shown
        assert app.engine.min_priority == dict.fromkeys(COLLECTIONS, 1)
