"""The Textual app: live tables of entries, pages and variants over the same engine as ``--batch``.

The engine runs inside the app's event loop (a worker); its events only mark
collections dirty, and a 100 ms timer repaints what changed, so a burst of
engine events never delays a key press. Tables read their visible rows
straight from the store (see :mod:`tui_app.tui.table`).

On start only explicitly requested items are generated (regenerate, retry);
``g`` generates everything pending in the current collection.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static, TabbedContent, TabPane

from ..display import format_eta
from ..engine import Engine
from ..exit_codes import ExitCode
from ..files import IntegrityError
from ..kinds import get_kind
from ..project import Project, read_sources
from ..settings import Config
from ..storage_errors import storage_error
from ..store import Event
from ..views import RowSource, take_details
from .screens import ConfirmScreen, DetailScreen, PreviewScreen, RegenerateDialog
from .table import ItemTable, header_text

STATUS_CYCLE = ["", "pending", "generating", "completed", "failed", "cancelled", "qa"]
AUDIO_PLAYERS = (
    ["paplay"],
    ["aplay", "-q"],
    ["afplay"],
    ["ffplay", "-nodisp", "-autoexit", "-loglevel", "quiet"],
    ["play", "-q"],
)
LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}


class TuiApp(App[int]):
    """The tui_app workbench. Build it with :func:`build_app`."""

    TITLE = "tui_app"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("r", "regenerate", "Regenerate", id="regenerate"),
        Binding("R", "regenerate_with", "Regenerate with…", id="regenerate_with"),
        Binding("g", "generate_pending", "Generate pending", id="generate_pending"),
        Binding("f", "retry_failed", "Retry failed", id="retry_failed"),
        Binding("enter", "details", "Details", id="details"),
        Binding("p", "play", "Play/preview", id="play"),
        Binding("c", "choose", "Choose variant", id="choose"),
        Binding("x", "cancel_items", "Cancel", id="cancel_items"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("t", "status_filter", "Status filter", id="status_filter"),
        Binding("s", "sync", "Sync disk", id="sync"),
        Binding("q", "quit_app", "Quit", id="quit"),
        Binding("1", "tab(0)", "Tab 1", show=False),
        Binding("2", "tab(1)", "Tab 2", show=False),
        Binding("3", "tab(2)", "Tab 3", show=False),
        Binding("4", "tab(3)", "Tab 4", show=False),
        Binding("5", "tab(4)", "Tab 5", show=False),
    ]

    def __init__(
        self,
        project: Project,
        engine: Engine,
        *,
        clock_free: bool = False,
        pending_import: bool = False,
    ):
        super().__init__()
        self.pending_import = pending_import  # import the sources in the background after the first paint
        self.project = project
        self.config = config = project.config
        self.store = project.store
        self.reader = project.store.reader()  # the tables' own read connection
        self.engine = engine
        self.clock_free = clock_free  # hide time-dependent text (snapshot tests)
        self.sources = {name: RowSource(self.reader, name) for name in config.collections}
        self._dirty: set[str] = set(config.collections)
        self._recount: set[str] = set()  # collections whose row count may have changed (import, filters)
        self._last_event_id = 0
        self._last_summary = 0.0
        self._failures: list[str] = []
        self._was_busy: dict[str, bool] = dict.fromkeys(config.collections, False)
        self.status_index: dict[str, int] = dict.fromkeys(config.collections, 0)
        engine.min_priority = dict.fromkeys(config.collections, 1)
        engine.subscribe(self.note_event)

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        where = self.config.path.name if self.clock_free else str(self.config.path)
        yield Static(f"tui_app  {where}", id="title")
        with TabbedContent(id="tabs"):
            for coll in self.config.collections.values():
                with TabPane(coll.name.capitalize(), id=f"tab-{coll.name}"):
                    with Vertical():
                        yield Static("", id=f"sum-{coll.name}", classes="summary")
                        columns = get_kind(coll.kind).columns
                        yield Static(header_text(columns), classes="colheader")
                        yield ItemTable(self.sources[coll.name], columns, id=f"table-{coll.name}")
            with TabPane("Log", id="tab-log"):
                yield RichLog(id="log", max_lines=5000, wrap=False, markup=False)
        yield Input(
            placeholder="filter by text or id (Enter: back to the table, Esc: clear)", id="filter-input"
        )
        yield Footer()

    def on_mount(self) -> None:
        # widget references: the timer must reach them while a modal screen is on top
        self.tables = {n: self.query_one(f"#table-{n}", ItemTable) for n in self.config.collections}
        self.summaries = {n: self.query_one(f"#sum-{n}", Static) for n in self.config.collections}
        self.log_view = self.query_one("#log", RichLog)
        self.tabs = self.query_one("#tabs", TabbedContent)
        self.filter_box = self.query_one("#filter-input", Input)
        recent = self.store.recent_events(500)
        if recent:
            self._write_events(self.log_view, recent)
        self.filter_box.display = False
        for name in self.config.collections:
            self.tables[name].reload()
        self._refresh_summaries()
        first = next(iter(self.config.collections))
        self.query_one(f"#table-{first}", ItemTable).focus()
        self.set_interval(0.1, self._tick)
        self.run_engine()
        if self.pending_import:
            self.import_sources()

    def on_unmount(self) -> None:
        self.reader.close()

    @work(thread=True, exclusive=True, group="import")
    def import_sources(self) -> None:
        """Check the sources against the store in a thread (own connection), after the first paint."""
        from ..sources import SourceError

        try:
            loaded = read_sources(self.config)
        except SourceError as exc:
            self.call_from_thread(self.notify, f"source not imported: {exc}", severity="error", timeout=15)
            return

        def report(line: str) -> None:
            self.call_from_thread(self.notify, line)

        # its own connection: this thread must not share the event loop's
        with Project.open(self.config) as project:
            project.import_sources(loaded, report=report)
        # a Python callable, not the builtin ``set.update``: call_from_thread inspects its signature
        self.call_from_thread(self._sources_imported)

    def _sources_imported(self) -> None:
        """Recount every table on the next tick (the background import may have added or retired rows)."""
        self._recount.update(self.config.collections)

    @work(exclusive=True, group="engine")
    async def run_engine(self) -> None:
        """The app's worker, for as long as the app runs."""
        try:
            await self.engine.run(until_idle=False)
        except Exception as exc:  # noqa: BLE001 - never crash the app: say what happened
            problem = storage_error(exc, path=self.config.state_path)
            what = problem.line() if problem is not None else str(exc)
            self.notify(f"engine stopped: {what}", severity="error", timeout=30)

    # ------------------------------------------------------------------ engine events -> repaint

    def note_event(self, event: Event) -> None:
        """Mark what ``event`` changed for the next repaint (the store calls this after each commit)."""
        if event.collection:
            self._dirty.add(event.collection)
        else:
            self._dirty.update(self.config.collections)
        if event.kind == "failed":
            self._failures.append(event.message)

    def _tick(self) -> None:
        dirty, self._dirty = self._dirty, set()
        recount, self._recount = self._recount, set()
        for name in dirty | recount:
            table = self.tables[name]
            table.reload(recount=name in recount)
        now = time.monotonic()
        if (dirty and now - self._last_summary > 0.5) or now - self._last_summary > 1.0:
            self._refresh_summaries()
            self._last_summary = now
        if dirty:
            events = self.store.events(after_id=self._last_event_id, limit=5000)
            if events:
                self._write_events(self.log_view, events)
        if self._failures:
            first, n = self._failures[0], len(self._failures)
            self._failures.clear()
            self.notify(first if n == 1 else f"{first} (and {n - 1} more failures)", severity="error")
        for name, stats in self.engine.stats.items():
            busy = stats.in_flight > 0
            if self._was_busy[name] and not busy:
                counts = self.store.counts([name])[name]
                self.notify(
                    f"{name}: nothing in flight; {counts['completed']} completed, "
                    f"{counts['failed']} failed, {counts['pending']} pending",
                    title="Batch finished",
                )
            self._was_busy[name] = busy

    def _write_events(self, log: RichLog, events: list[Event]) -> None:
        """Append events to the Log tab as one write (one layout pass, however many lines)."""
        from rich.text import Text

        text = Text()
        for n, event in enumerate(events[-1000:]):
            stamp = "" if self.clock_free else time.strftime("%H:%M:%S ", time.localtime(event.ts))
            text.append(("\n" if n else "") + stamp + event.message, style=LEVEL_STYLES.get(event.level, ""))
        self._last_event_id = max(self._last_event_id, events[-1].id)
        log.write(text)

    def summary_text(self, name: str, counts: dict[str, int] | None = None) -> str:
        """One line: completed/total, failed, in flight, items/s, ETA, filters, and the throttle.

        ``counts`` ({status: n}) saves a query when the caller has them already."""
        counts = counts if counts is not None else self.store.counts([name])[name]
        stats = self.engine.stats[name]
        coll = self.config.collections[name]
        throttle = self.engine.throttles[coll.provider]
        total = sum(counts.values())
        rate = stats.rate()
        remaining = counts["pending"] + counts["generating"]
        eta = format_eta(remaining / rate) if rate > 0 else "-"
        cooling = throttle.cooling_down_for()
        parts = [
            f"[b]{counts['completed']}/{total}[/b] completed",
            f"[red]{counts['failed']} failed[/red]" if counts["failed"] else "0 failed",
            f"{stats.in_flight} in flight",
        ]
        if not self.clock_free:
            parts += [f"{rate:.1f} items/s", f"ETA {eta}"]
        mode = (
            "all pending" if self.engine.min_priority.get(name, 0) == 0 else "requests only (g: all pending)"
        )
        paced = throttle.paced_rps()
        parts.append(
            f"{coll.provider} {throttle.in_use}/{throttle.limit} in use"
            + (f", cooling down {cooling:.0f} s" if cooling > 0 else "")
            + (f", paced {paced:.1f}/s after 429s" if paced else "")
        )
        parts.append(mode)
        source = self.sources[name]
        filters = []
        if source.text_filter:
            filters.append(f"text~{source.text_filter!r}")
        if source.status_filter or source.qa_only:
            filters.append(f"status={source.status_filter or 'QA flagged'}")
        table = self.tables[name]
        if table.marks:
            filters.append(f"{len(table.marks)} marked")
        if filters:
            parts.append("[cyan]" + ", ".join(filters) + "[/cyan]")
        return " · ".join(parts)

    def _refresh_summaries(self) -> None:
        counts = self.store.counts(list(self.config.collections))  # one query for every collection
        for name in self.config.collections:
            self.summaries[name].update(self.summary_text(name, counts[name]))

    # ------------------------------------------------------------------ helpers

    def current_collection(self) -> str | None:
        """The collection of the active tab (None on the Log tab)."""
        active = self.tabs.active
        return active.removeprefix("tab-") if active and active != "tab-log" else None

    def current_table(self) -> ItemTable | None:
        name = self.current_collection()
        return self.tables[name] if name else None

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        table = self.current_table()
        if table is not None:
            table.focus()

    def on_item_table_marks_changed(self, event: ItemTable.MarksChanged) -> None:
        """Show the new number of marked rows in that table's summary at once."""
        name = event.table.source.collection
        self.summaries[name].update(self.summary_text(name))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.show:
                yield SystemCommand(
                    binding.description,
                    f"key: {binding.key}",
                    lambda action=binding.action: self.run_action(action),
                )
        for key, action, text in (
            ("space", "toggle_mark", "Mark or unmark the row"),
            ("a", "mark_all", "Mark all visible rows"),
            ("A", "invert_marks", "Invert the marks"),
            ("escape", "clear_marks", "Clear the marks"),
        ):
            yield SystemCommand(text, f"key: {key}", lambda a=action: self._table_action(a))

    def _table_action(self, action: str) -> None:
        table = self.current_table()
        if table is not None:
            getattr(table, f"action_{action}")()

    # ------------------------------------------------------------------ actions

    def action_tab(self, index: int) -> None:
        panes = [f"tab-{n}" for n in self.config.collections] + ["tab-log"]
        if index < len(panes):
            self.tabs.active = panes[index]

    def action_regenerate(self) -> None:
        """Regenerate the marked rows (or the cursor row) now; quick presses merge into one batch."""
        self._regenerate(dialog=False)

    def action_regenerate_with(self) -> None:
        """Regenerate with overrides from a dialog (emotion; prompt and seed; temperature and seed)."""
        self._regenerate(dialog=True)

    def _regenerate(self, *, dialog: bool) -> None:
        name, table = self.current_collection(), self.current_table()
        if not name or table is None:
            return
        ids = table.selected_ids()
        if not ids:
            return
        fields = get_kind(self.config.collections[name].kind).override_fields

        def queued(overrides: dict[str, Any] | None) -> None:
            if overrides is None:
                return
            items = self.engine.regenerate(name, ids, overrides=overrides, debounce=True)
            batch = self.store.get_batch(items[0].batch_id) if items and items[0].batch_id else None
            if batch is not None:
                self.notify(batch.note, title="Regenerate")
            table.action_clear_marks()
            self._dirty.add(name)

        if dialog:
            self.push_screen(RegenerateDialog(fields, len(ids)), queued)
        else:
            queued({})

    def _current_or_all(self) -> list[str]:
        """The current tab's collection, or every collection on the Log tab."""
        name = self.current_collection()
        return [name] if name else list(self.config.collections)

    def action_generate_pending(self) -> None:
        names = self._current_or_all()
        self.engine.serve_all(names)
        pending = sum(self.store.counts(names)[n]["pending"] for n in names)
        self.notify(f"generating {pending} pending items in {', '.join(names)}")
        self._dirty.update(names)

    def action_retry_failed(self) -> None:
        names = self._current_or_all()
        n = self.engine.retry_failed(names)
        self.notify(f"{n} failed items queued again" if n else "no failed items")
        self._dirty.update(names)

    def action_details(self) -> None:
        name, table = self.current_collection(), self.current_table()
        row = table.cursor_row if table else None
        if row is None or name is None:
            return

        def revert(number: int | None) -> None:
            if number is None:
                return
            try:
                reverted = self.project.revert(row.id, number)
            except IntegrityError as exc:
                self.notify(str(exc), severity="error", timeout=8)
                return
            if reverted:
                item = self.store.get_item(row.id)
                stale = " (made from other input: stale until a new take)" if item and item.stale else ""
                self.notify(f"{row.key}: take {number} is current again{stale}")
                self._dirty.add(name)

        details = take_details(self.store, row.id)
        if details is not None:
            self.push_screen(DetailScreen(details, name), revert)

    def _current_file(self) -> tuple[str, Path] | None:
        table = self.current_table()
        row = table.cursor_row if table else None
        if row is None or not row.take_number:
            self.notify("no take yet for this row", severity="warning")
            return None
        take = self.project.current_take(row.id)
        if take is None:
            self.notify("no take yet for this row", severity="warning")
            return None
        return row.key, self.project.take_path(take)

    def action_play(self) -> None:
        name = self.current_collection()
        found = self._current_file() if name else None
        if found is None or name is None:
            return
        key, path = found
        if get_kind(self.config.collections[name].kind).media != "audio":
            self.push_screen(PreviewScreen(path, key))
            return
        for cmd in AUDIO_PLAYERS:
            if shutil.which(cmd[0]):
                subprocess.Popen([*cmd, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.notify(f"playing {key} with {cmd[0]}")
                return
        self.notify(
            f"no audio player found (tried {', '.join(c[0] for c in AUDIO_PLAYERS)}); file: {path}",
            severity="warning",
            timeout=8,
        )

    def action_choose(self) -> None:
        name, table = self.current_collection(), self.current_table()
        if not name or table is None or not get_kind(self.config.collections[name].kind).choosable:
            self.notify("choose works on the variants tab", severity="warning")
            return
        row = table.cursor_row
        if row is None or row.status != "completed":
            self.notify("only a completed variant can be chosen", severity="warning")
            return
        try:
            choice = self.project.choose(row.id)
        except IntegrityError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self._dirty.add(name)
        self.finalize(name, row.id, row.key, len(choice.aside))

    @work(group="finalize")
    async def finalize(self, name: str, item_id: int, key: str, aside: int) -> None:
        """Build the chosen variant's final (upscaled 2x by the provider, e.g. A1111's
        extra-single-image, or Pillow's Lanczos) off the event loop; the store records it."""
        try:
            final = await self.engine.build_final(name, item_id)
        except Exception as exc:  # noqa: BLE001 - any failure of the upscaler is shown, never a crash
            self.notify(f"{key}: cannot finalize: {getattr(exc, 'message', exc)}", severity="error")
            return
        self._dirty.add(name)
        if final is not None:
            size = f"{final.width}x{final.height}"
            self.notify(f"{key} chosen ({aside} other variants set aside); final {size}")

    def action_cancel_items(self) -> None:
        name, table = self.current_collection(), self.current_table()
        if not name or table is None:
            return
        n = self.project.cancel(table.selected_ids())
        table.action_clear_marks()
        self._dirty.add(name)
        self.notify(f"{n} items cancelled" if n else "nothing queued or in flight to cancel")

    def action_filter(self) -> None:
        name = self.current_collection()
        if name is None:
            return
        box = self.filter_box
        box.value = self.sources[name].text_filter
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        name = self.current_collection()
        if event.input.id == "filter-input" and name:
            self.sources[name].text_filter = event.value
            self._recount.add(name)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter-input":
            event.input.display = False
            table = self.current_table()
            if table is not None:
                table.focus()

    def on_key(self, event) -> None:
        box = self.filter_box
        if event.key == "escape" and box.has_focus:
            box.value = ""
            box.display = False
            table = self.current_table()
            if table is not None:
                table.focus()
            event.stop()

    def action_status_filter(self) -> None:
        name = self.current_collection()
        if not name:
            return
        self.status_index[name] = (self.status_index[name] + 1) % len(STATUS_CYCLE)
        value = STATUS_CYCLE[self.status_index[name]]
        source = self.sources[name]
        source.qa_only = value == "qa"
        source.status_filter = "" if value in ("", "qa") else value
        self._recount.add(name)

    def action_sync(self) -> None:
        findings = self.project.sync(fix=True)
        self._dirty.update(self.config.collections)
        self.notify(
            f"sync: {len(findings)} mismatches fixed (see the Log tab)"
            if findings
            else "sync: disk and state are in step"
        )

    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.engine.stats.values())

    def action_quit_app(self) -> None:
        n = self.in_flight()
        if not n:
            self.shutdown()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.shutdown()

        self.push_screen(ConfirmScreen(f"{n} items are in flight. Quit? They go back to pending."), answer)

    @work(exclusive=True, group="shutdown")
    async def shutdown(self) -> None:
        """Cancel in-flight work (it goes back to pending), wait for the engine, exit."""
        self.engine.cancel()
        for worker in self.workers:
            if worker.group == "engine":
                await worker.wait()
        self.exit(0)


def build_app(
    config: Config, *, clock_free: bool = False, import_in_background: bool | None = None
) -> TuiApp:
    """The app over a project: opens it, recovers, imports the sources (factory for tests too).

    A project that already has a state file opens at once on what is stored, and
    its sources are checked in the background (a large source takes a second or
    two); a new project is imported first.

    Raises:
        SourceError: a source is malformed (for a new project; nothing is written).
    """
    if import_in_background is None:
        import_in_background = config.state_path.exists()
    if import_in_background:
        project = Project.open(config)
        project.recover()
    else:
        project = Project.start(config)
    return TuiApp(project, Engine(project), clock_free=clock_free, pending_import=import_in_background)


def run_app(config: Config) -> int:
    """Open the TUI on a project; returns the exit code."""
    import sys

    from ..sources import SourceError

    try:
        app = build_app(config)
    except SourceError as exc:
        print(f"tui-app: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        result = app.run()
    finally:
        app.project.close()
    return int(result or 0)
