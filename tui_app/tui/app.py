"""The Textual app: live tables of entries, pages and variants, a client of the project's store.

The app shows what every worker of the project does, not only its own: a 100 ms
timer polls the store's ``data_version`` (it changes whenever any other
connection commits: a ``tui-app --batch`` or ``worker`` process, or this app's own
worker), and when it changed re-reads only the visible rows, the counts (at most
a few times a second) and the new events, by id, so nothing is shown twice. On
PostgreSQL a thread also waits on the store's listener (``LISTEN``) and repaints as
soon as a change is announced (at most every ``HEARD_GAP_S``), the timer staying as
the fallback. The
store's in-process listener only marks collections dirty. Repaints are coalesced,
so a burst of changes never delays a key press. Tables read their visible rows
straight from the store (see :mod:`tui_app.tui.table`).

By default the app also runs a worker of its own: an engine with its own
connection, on an event loop in a thread of its own, so that its store queries
never hold up a key press. It at first generates only explicitly requested
items (regenerate, retry, front); ``g`` lets it generate everything pending in
every collection, until that run is over (then it serves requests only again).
Every action of the app is written to the store through the app's own connection
(:attr:`TuiApp.control`, an engine that never runs), where the workers, this one
included, act on it within 0.1 s. Without a worker
(``build_app(..., worker=False)``, ``--no-worker``) the app is a viewer and
controller of the project's other workers.
"""

from __future__ import annotations

import asyncio
import functools
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static, TabbedContent, TabPane

from .. import commands
from ..display import format_eta
from ..engine import Engine
from ..exit_codes import ExitCode
from ..kinds import get_kind
from ..project import Project, read_sources, stale_workers
from ..settings import Config
from ..storage_errors import storage_error
from ..store import Event, Worker
from ..views import QueueView, RowSource, Throughput, pause_holding, take_details
from .compare import CompareScreen
from .screens import ConfirmScreen, DetailScreen, PreviewScreen, RegenerateDialog, Regeneration
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
TICK_S = 0.1  # how often the store is polled for changes (PRAGMA data_version) and changes repainted
SUMMARY_MIN_S = 0.5  # counts are re-read at most this often while the store changes (~10 ms at 100k) ...
SUMMARY_MAX_S = 1.0  # ... and at least this often (items/s, ETA, cooldowns move on)
WORKERS_S = 1.0  # the live workers are read at most this often
WAKEUP_S = 1.0  # "backing off, next in N s" is re-read at most this often
QUIET_S = 1.0  # nothing in flight for this long: the batch is over ("Batch finished")
EVENT_PAGE = 5000  # events read per tick at most (the rest on the next ticks)
LISTEN_POLL_S = 1.0  # with a listener (PostgreSQL), the longest wait before it is asked again
HEARD_GAP_S = 0.02  # a change heard by the listener repaints at most this often (a burst is one repaint)


class StoreChanged(Message):
    """Another connection committed a change (posted by the listener's thread)."""


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
        Binding("C", "compare", "Compare takes", id="compare"),
        Binding("x", "cancel_items", "Cancel", id="cancel_items"),
        Binding("y", "review('accepted')", "Accept", id="accept"),
        Binding("n", "review('rejected')", "Reject", id="reject"),
        Binding("N", "review('rejected', True)", "Reject + regenerate", id="reject_regenerate"),
        Binding("P", "pause", "Pause/resume", id="pause"),
        Binding("F", "front", "To front", id="front"),
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
        worker: bool = True,
    ):
        """``engine`` is this app's own worker when ``worker``: it must then have a project (a store
        connection) of its own, not ``project``, as it runs in a thread of its own."""
        super().__init__()
        self.pending_import = pending_import  # import the sources in the background after the first paint
        self.project = project
        self.config = config = project.config
        self.store = project.store
        self.reader = project.store.reader()  # the tables' own read connection; it also watches the store
        self.own_worker = worker
        #: this app's own worker (it runs only with ``worker``, on its own event loop and connection)
        self.engine = engine
        #: the app's actions (requests, retries, finals) through the app's connection; never runs
        self.control = Engine(project) if worker else engine
        self._portal: BlockingPortal | None = None  # the worker's event loop, in its own thread
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._engine_run: Future[None] | None = None
        self._engine_error = ""  # why the worker stopped, set in its thread, said on the next tick
        self.clock_free = clock_free  # hide time-dependent text (snapshot tests)
        self.sources = {name: RowSource(self.reader, name) for name in config.collections}
        self._dirty: set[str] = set(config.collections)
        self._recount: set[str] = set()  # collections whose row count may have changed (import, filters)
        self._refiltered: set[str] = set()  # collections whose filter changed: show the first match
        self._version = self.reader.data_version()  # changes whenever another connection commits
        self._heard = False  # the listener heard a change not yet repainted (set in its thread)
        self._watching = False  # the listener's thread runs (see _watch_store)
        self._more_events = False  # the last read of the events stopped at EVENT_PAGE
        self._last_event_id = 0
        self._last_summary = -math.inf
        self._counts: dict[str, dict[str, int]] = {}
        self._reviews: dict[str, dict[str, int]] = {}  # review states of the current takes
        self._paused: set[str] = set()
        self._live: list[Worker] = []  # live workers, this app's own left out
        self._live_at = -math.inf
        self._wakeups: dict[str, tuple[float, float | None]] = {}  # collection -> (read at, next wakeup)
        self.throughput = {name: Throughput() for name in config.collections}
        self._busy: dict[str, bool] = dict.fromkeys(config.collections, False)
        self._quiet_since: dict[str, float | None] = dict.fromkeys(config.collections, None)
        self._shared: dict[str, list[str]] = {}  # provider -> the collections it serves
        for coll in config.collections.values():
            self._shared.setdefault(coll.provider, []).append(coll.name)
        self.status_index: dict[str, int] = dict.fromkeys(config.collections, 0)
        engine.min_priority = dict.fromkeys(config.collections, 1)
        # this process's own commits (its worker's, from the worker's thread; its actions): they only
        # mark collections dirty (a set's add is atomic), and data_version sees them anyway
        engine.subscribe(self.note_event)
        if self.control is not engine:
            self.control.subscribe(self.note_event)

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
        recent = self.reader.recent_events(500)
        if recent:
            self._take_events(recent, notify=False)
        self.filter_box.display = False
        for name in self.config.collections:
            self.tables[name].reload()
        self._refresh_summaries()
        first = next(iter(self.config.collections))
        self.query_one(f"#table-{first}", ItemTable).focus()
        self.set_interval(TICK_S, self._tick)
        listener = self.reader.listen()
        if listener is not None:
            self._watching = True
            self._listener = listener
            threading.Thread(
                target=self._watch_store, args=(listener,), name="store listener", daemon=True
            ).start()
        if self.own_worker:
            self.run_engine()
        if self.pending_import:
            self.import_sources()

    def on_unmount(self) -> None:
        if self._watching:
            self._watching = False
            self._listener.close()
        self._stop_engine()
        self.reader.close()

    def _watch_store(self, listener: Any) -> None:
        """In a thread of its own: wait on the store's listener and post :class:`StoreChanged` for each
        change heard (one while the last is not yet repainted, at most every ``HEARD_GAP_S``)."""
        while self._watching:
            if not listener.wait(LISTEN_POLL_S) or not self._watching:
                continue
            if not self._heard:
                self._heard = True
                self.post_message(StoreChanged())
            time.sleep(HEARD_GAP_S)

    def on_store_changed(self, message: StoreChanged) -> None:
        """Repaint what the change heard by the listener touched, now (not on the next tick)."""
        self._tick()

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

    def run_engine(self) -> None:
        """Start the app's worker on an event loop of its own, in its own thread, for as long as the
        app runs: its store queries and take writing never hold up the app's event loop."""
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._engine_run = self._portal.start_task_soon(functools.partial(self.engine.run, until_idle=False))
        self._engine_run.add_done_callback(self._engine_done)

    def _engine_done(self, run: Future[None]) -> None:
        """In the worker's thread, when its run ends: keep why when it failed, for the next tick to say
        (never waiting for the app's loop here: the app may be waiting for this thread)."""
        exc = None if run.cancelled() else run.exception()
        if exc is not None:
            problem = storage_error(exc, path=self.config.state_location)
            self._engine_error = problem.line() if problem is not None else str(exc)

    def _on_engine_loop(self, func: Any, *args: Any) -> None:
        """Call ``func(*args)`` on the worker's event loop (the engine is not thread-safe)."""
        if self._portal is not None and self._engine_run is not None and not self._engine_run.done():
            self._portal.call(func, *args)

    async def _stop_engine_async(self) -> None:
        """Stop the worker: its in-flight items go back to pending (``Engine.run`` retires it)."""
        await asyncio.to_thread(self._stop_engine)  # waits for the worker's thread, off the app's loop

    def _stop_engine(self) -> None:
        """Stop the worker and its thread (blocking; at once when it has stopped already)."""
        if self._portal_cm is None or self._engine_run is None:
            self._close_engine()
            return
        self._on_engine_loop(self.engine.cancel)
        try:
            self._engine_run.result(timeout=30)
        except BaseException:  # noqa: BLE001 - reported by _engine_done; stopping goes on
            pass
        cm, self._portal_cm, self._portal = self._portal_cm, None, None
        cm.__exit__(None, None, None)
        self._close_engine()

    def _close_engine(self) -> None:
        """Close the worker's own connection (also when it never ran)."""
        if self.engine.project is not self.project:
            self.engine.project.close()

    # ------------------------------------------------------------------ store changes -> repaint

    def note_event(self, event: Event) -> None:
        """Mark what ``event`` changed for the next repaint (the store calls this after each commit of
        this process; other processes' commits are seen through ``data_version`` on the next tick)."""
        if event.collection:
            self._dirty.add(event.collection)
        else:
            self._dirty.update(self.config.collections)

    def _tick(self) -> None:
        """Every 100 ms: whatever changed in the store since the last tick, by any process, is repainted."""
        version = self.reader.data_version()
        heard, self._heard = self._heard, False
        if (
            version != self._version or heard
        ):  # another connection committed: which collections, we cannot tell
            self._version = version
            self._dirty.update(self.config.collections)
        dirty, self._dirty = self._dirty, set()
        recount, self._recount = self._recount, set()
        refiltered, self._refiltered = self._refiltered, set()
        for name in dirty | recount | refiltered:
            # only the visible rows are read again (and compared); a hidden table just drops its cache
            self.tables[name].reload(recount=name in recount or name in refiltered)
            if name in refiltered:
                self.tables[name].to_top()  # the first match, at the top (not the old scroll position)
        if dirty or self._more_events:
            self._read_events()
        now = time.monotonic()
        since = now - self._last_summary
        if (dirty and since >= SUMMARY_MIN_S) or since >= SUMMARY_MAX_S:
            self._refresh_summaries()
        if self._engine_error:
            what, self._engine_error = self._engine_error, ""
            self.notify(f"this app's worker stopped: {what}", severity="error", timeout=30)

    def _read_events(self) -> None:
        """The events written since the last one shown (by any process), at most EVENT_PAGE per tick."""
        events = self.reader.events(after_id=self._last_event_id, limit=EVENT_PAGE)
        self._more_events = len(events) == EVENT_PAGE
        if events:
            self._take_events(events)

    def _take_events(self, events: list[Event], *, notify: bool = True) -> None:
        """Show new events (ids above the last shown: none twice) in the Log tab, count completions
        for items/s, and notify failures (``notify``)."""
        events = [e for e in events if e.id > self._last_event_id]
        if not events:
            return
        failures: list[str] = []
        finals: list[Event] = []
        for event in events:
            if event.kind == "completed" and event.collection in self.throughput:
                self.throughput[event.collection].note(event.ts)
            elif event.kind == "failed":
                failures.append(event.message)
            elif event.kind == "finalized":  # a chosen variant's final, built by whichever worker
                finals.append(event)
        self._write_events(self.log_view, events)
        if not notify:
            return
        if failures:
            first, n = failures[0], len(failures)
            self.notify(first if n == 1 else f"{first} (and {n - 1} more failures)", severity="error")
        for final in finals[-3:]:
            self.notify(final.message, severity="error" if final.level == "error" else "information")

    def _write_events(self, log: RichLog, events: list[Event]) -> None:
        """Append events to the Log tab as one write (one layout pass, however many lines)."""
        from rich.text import Text

        text = Text()
        for n, event in enumerate(events[-1000:]):
            stamp = "" if self.clock_free else time.strftime("%H:%M:%S ", time.localtime(event.ts))
            text.append(("\n" if n else "") + stamp + event.message, style=LEVEL_STYLES.get(event.level, ""))
        self._last_event_id = max(self._last_event_id, events[-1].id)
        log.write(text)

    def live_workers(self) -> list[Worker]:
        """The other live workers of the project (read at most once a second); this app's own is left out."""
        now = time.monotonic()
        if now - self._live_at >= WORKERS_S:
            self._live_at = now
            workers = self.reader.workers()
            gone = set(stale_workers(workers, self.config.lease_s))
            self._live = [w for w in workers if w.id not in gone and w.id != self.engine.worker_id]
        return self._live

    def _cooling_s(self, provider: str) -> float:
        """Seconds the provider still cools down, after this worker's or any other worker's Retry-After."""
        cooling = self.engine.throttles[provider].cooling_down_for()
        paces = getattr(self.reader, "paces", None)  # shared cooldowns, where the store keeps them
        if paces is not None:
            cooldown_until = paces().get(provider, (0.0, None, None))[0]
            cooling = max(cooling, cooldown_until - time.time())
        return cooling

    def queue_view(self, name: str) -> QueueView:
        """Collection ``name``'s queue over every worker: how many wait, and why."""
        counts = self._counts[name]
        coll = self.config.collections[name]
        serving = [w for w in self.live_workers() if not w.collections or name in w.collections]
        requests_only = self.own_worker and self.engine.min_priority.get(name, 0) > 0 and not serving
        view = QueueView(
            pending=counts["pending"],
            provider=coll.provider,
            provider_busy=sum(self._counts[c]["generating"] for c in self._shared[coll.provider]),
            limit=self.engine.throttles[coll.provider].limit,
            paused_by=pause_holding(self._paused, name, coll.provider),
            cooling_s=self._cooling_s(coll.provider),
            workers=len(serving) + self.own_worker,
            requests_only=requests_only,
        )
        if view.pending and not view.reason():
            # pending, nothing else holds them: some may be backing off (a query over the pending items)
            now = time.monotonic()
            read_at, wake_at = self._wakeups.get(name, (-math.inf, None))
            if now - read_at >= WAKEUP_S:
                wake_at = self.reader.next_wakeup([name])
                self._wakeups[name] = (now, wake_at)
            if wake_at is not None:
                view = replace(view, wake_in_s=wake_at - time.time())
        return view

    def summary_text(self, name: str) -> str:
        """Two lines: completed/total, failed, in flight (every worker), items/s, ETA; then the queue
        (pending and why they wait), the provider's slots in use, the workers, the mode and filters."""
        counts = self._counts[name]
        total = sum(counts.values())
        in_flight = counts["generating"]
        first = [
            f"[b]{counts['completed']}/{total}[/b] completed",
            f"[red]{counts['failed']} failed[/red]" if counts["failed"] else "0 failed",
            f"{in_flight} in flight",
        ]
        reviews = self._reviews.get(name, {})
        if reviews.get("accepted") or reviews.get("rejected"):
            first.append(f"review ✓{reviews['accepted']} ✗{reviews['rejected']} ?{reviews['unreviewed']}")
        if not self.running(name):
            first.append("idle")  # no rate nor ETA of a run that is over
        elif not self.clock_free:
            rate = self.throughput[name].rate(time.time(), busy=True)
            remaining = counts["pending"] + in_flight
            first += [f"{rate:.1f} items/s", f"ETA {format_eta(remaining / rate) if rate > 0 else '-'}"]
        queue = self.queue_view(name)
        reason = queue.reason(clock_free=self.clock_free)
        waiting = f"{queue.pending} pending" + (f": {reason}" if reason else "")
        if queue.paused_by:
            waiting = f"[b yellow]{waiting}[/b yellow] (P: resume)"
        elif reason == "no worker running":
            waiting = f"[yellow]{waiting}[/yellow]"
        coll = self.config.collections[name]
        throttle = self.engine.throttles[coll.provider]
        paced = throttle.paced_rps()
        second = [
            waiting,
            f"{coll.provider} {queue.slots_in_use}/{queue.limit} in use"
            + (f", paced {paced:.1f}/s after 429s" if paced else ""),
            f"{queue.workers} {'worker' if queue.workers == 1 else 'workers'}",
        ]
        if not self.own_worker:
            second.append("viewer (no worker here)")
        elif self.engine.min_priority.get(name, 0) == 0:
            second.append("all pending")
        elif reason != "requests only":
            second.append("requests only (g: all pending)")
        else:
            second[0] = f"{queue.pending} pending: requests only (g: all pending)"
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
            second.append("[cyan]" + ", ".join(filters) + "[/cyan]")
        return " · ".join(first) + "\n" + " · ".join(second)

    def _refresh_summaries(self) -> None:
        """Re-read the counts (one query for every collection) and the pauses; repaint every summary."""
        self._last_summary = now = time.monotonic()
        self._counts = self.reader.counts(list(self.config.collections))
        self._reviews = self.reader.review_counts(list(self.config.collections))
        self._paused = self.reader.paused()
        for name in self.config.collections:
            self._note_busy(name, now)  # first: the summary says at once when a run is over
            self._end_serving_all(name)
            self.summaries[name].update(self.summary_text(name))
            table = self.tables[name]
            if not table.source.filtered() and sum(self._counts[name].values()) != table.count:
                self._recount.add(name)  # rows added or retired (an import by another process)

    def running(self, name: str) -> bool:
        """True while a run of collection ``name`` goes on (in any worker): items are in flight, or were
        less than QUIET_S ago (a fast provider's items between two claims)."""
        return bool(self._counts.get(name, {}).get("generating")) or self._busy[name]

    def _end_serving_all(self, name: str) -> None:
        """Once the run that ``g`` started is over (nothing pending, nothing in flight), the app's own
        worker serves requests only again, as when the app opened (and the summary says so)."""
        counts = self._counts[name]
        if (
            self.own_worker
            and self.engine.min_priority.get(name, 1) == 0
            and not self.running(name)
            and not counts["pending"]
        ):
            self._on_engine_loop(self._serve_requests_only, name)

    def _serve_requests_only(self, name: str) -> None:
        """On the worker's loop: serve only requested items of ``name`` (undoes ``serve_all``)."""
        self.engine.min_priority[name] = 1

    def _note_busy(self, name: str, now: float) -> None:
        """Notify "Batch finished" once nothing of the collection has been in flight for QUIET_S."""
        counts = self._counts[name]
        if counts["generating"]:
            self._busy[name], self._quiet_since[name] = True, None
            return
        if not self._busy[name]:
            return
        quiet = self._quiet_since[name]
        if quiet is None:
            self._quiet_since[name] = now
        elif now - quiet >= QUIET_S:
            self._busy[name], self._quiet_since[name] = False, None
            coll = self.config.collections[name]
            if pause_holding(self._paused, name, coll.provider):
                return  # paused, not finished: the summary says so
            self.notify(
                f"{name}: nothing in flight; {counts['completed']} completed, "
                f"{counts['failed']} failed, {counts['pending']} pending",
                title="Batch finished",
            )

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
        if self._counts:
            self.summaries[name].update(self.summary_text(name))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Without a worker of its own the app has no "generate pending" (the workers serve it all)."""
        return not (action == "generate_pending" and not self.own_worker)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if isinstance(binding, Binding) and binding.show and self.check_action(binding.action, ()):
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

    def _selection(self) -> tuple[str, ItemTable, list[int]] | None:
        """The current collection, its table and the ids of its marked rows (or of the cursor row);
        None on the Log tab or in an empty table."""
        name, table = self.current_collection(), self.current_table()
        if not name or table is None:
            return None
        ids = table.selected_ids()
        return (name, table, ids) if ids else None

    def _queued(self, name: str, table: ItemTable) -> None:
        """A command on the selection went through: the marks go, the table is read again."""
        table.action_clear_marks()
        self._dirty.add(name)

    def _on_selection(
        self, title: str, command: Callable[..., commands.Outcome], *args: Any, **kwargs: Any
    ) -> None:
        """``command(project, collection, ids, *args, **kwargs)`` on the selection (:meth:`_selection`),
        as the shell command does (:meth:`_command`); the marks stay when it refused."""
        selection = self._selection()
        if selection is None:
            return
        name, table, ids = selection
        if self._command(title, command, self.project, name, ids, *args, **kwargs) is not None:
            self._queued(name, table)

    def _regenerate(self, *, dialog: bool) -> None:
        selection = self._selection()
        if selection is None:
            return
        name, table, ids = selection
        fields = get_kind(self.config.collections[name].kind).override_fields

        def queue(request: Regeneration) -> str | None:
            """Queue it as ``tui-app regenerate --set ... --takes N --sweep ...`` does; the command's
            one-line reason when it cannot apply (nothing was queued)."""
            try:
                outcome = commands.regenerate(
                    self.project,
                    name,
                    ids,
                    overrides=request.overrides,
                    takes=request.takes,
                    sweep=request.sweep,
                )
            except commands.CommandError as exc:
                return str(exc)
            self._show_outcome("Regenerate", outcome)
            self._queued(name, table)
            return None

        if dialog:
            self.push_screen(RegenerateDialog(fields, len(ids), queue))
        else:
            self._on_selection("Regenerate", commands.regenerate)

    def _current_or_all(self) -> list[str]:
        """The current tab's collection, or every collection on the Log tab."""
        name = self.current_collection()
        return [name] if name else list(self.config.collections)

    def action_generate_pending(self) -> None:
        """Let the app's own worker generate everything pending, in every collection (whichever tab is
        shown); each collection goes back to ``requests only`` when its run is over."""
        names = list(self.config.collections)
        if not self.own_worker:
            n = len(self.live_workers())
            self.notify(f"no worker in this app: the project's workers ({n} live) serve everything pending")
            return
        self._on_engine_loop(self.engine.serve_all, names)
        counts = self.store.counts(names)
        waiting = {n: counts[n]["pending"] for n in names if counts[n]["pending"]}
        if waiting:
            where = ", ".join(f"{n} {k}" for n, k in waiting.items())
            self.notify(f"generating {sum(waiting.values())} pending items ({where})")
        else:
            self.notify("nothing pending in any collection")
        self._dirty.update(names)

    def action_retry_failed(self) -> None:
        names = self._current_or_all()
        self._command("Retry failed", commands.retry_failed, self.project, names)
        self._dirty.update(names)

    def action_details(self) -> None:
        name, table = self.current_collection(), self.current_table()
        row = table.cursor_row if table else None
        if row is None or name is None:
            return

        def revert(number: int | None) -> None:
            if number is None:
                return
            if self._command("Revert", commands.revert, self.project, name, row.key, number):
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
        self.play_file(name, path, key)

    def play_file(self, collection: str, path: Path, key: str) -> None:
        """Play an audio take of ``collection`` with the first system player found, or preview a
        picture in the terminal; ``key`` names it in what is shown."""
        if get_kind(self.config.collections[collection].kind).media != "audio":
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
        self.choose_variant(name, row.id, row.key)

    def choose_variant(self, collection: str, item_id: int, key: str) -> bool:
        """Choose a variant as ``tui-app choose`` does and have its final built; False when the
        command refused (its reason is shown)."""
        if self._command("Choose", commands.choose, self.project, collection, key) is None:
            return False
        self._dirty.add(collection)
        # a running worker of the collection builds the final (it watches the store for choices,
        # the app's own too: it has a connection of its own); with none, the app builds it
        if not self.own_worker and not any(collection in w.collections for w in self.live_workers()):
            self.finalize(collection, item_id, key)
        return True

    def action_compare(self) -> None:
        """Compare the cursor row's takes side by side (a variant: its photo's variants); review,
        revert, choose and play from there."""
        name, table = self.current_collection(), self.current_table()
        row = table.cursor_row if table else None
        if row is None or name is None:
            return
        self.push_screen(CompareScreen(self, name, row.id))

    @work(group="finalize")
    async def finalize(self, name: str, item_id: int, key: str) -> None:
        """Build the chosen variant's final (upscaled 2x by the provider, e.g. A1111's
        extra-single-image, or Pillow's Lanczos) off the event loop; the store records it (its
        ``finalized`` event is shown as any worker's)."""
        try:
            await self.control.build_final(name, item_id)
        except Exception as exc:  # noqa: BLE001 - any failure of the upscaler is shown, never a crash
            self.notify(f"{key}: cannot finalize: {getattr(exc, 'message', exc)}", severity="error")
        self._dirty.add(name)

    def action_review(self, state: str, regenerate: bool = False) -> None:
        """Accept or reject the current takes of the marked rows (or the cursor row); with
        ``regenerate``, rejected items are queued for a new take too (as ``tui-app review``)."""
        title = "Accept" if state == "accepted" else "Reject"
        self._on_selection(title, commands.review, state, regenerate_rejected=regenerate)
        self._last_summary = -math.inf  # the review counts on the next tick

    def action_cancel_items(self) -> None:
        """Cancel the marked rows (or the cursor row), as ``tui-app cancel`` does."""
        self._on_selection("Cancel", commands.cancel)

    def _command(
        self, title: str, command: Callable[..., commands.Outcome], *args: Any, **kwargs: Any
    ) -> commands.Outcome | None:
        """Run an action as the shell command of the same name does (:mod:`tui_app.commands`: the
        same checks and messages, logged in the store's command log) and show what it said; None
        when it could not apply (its one-line reason is shown as an error)."""
        try:
            outcome = command(*args, **kwargs)
        except commands.CommandError as exc:
            self.notify(str(exc), title=title, severity="error", timeout=8)
            return None
        self._show_outcome(title, outcome)
        return outcome

    def _show_outcome(self, title: str, outcome: commands.Outcome) -> None:
        """Notify what a command said (a warning when it has notes)."""
        text = "\n".join([*outcome.lines, *outcome.notes])
        self.notify(text, title=title, severity="warning" if outcome.notes else "information")

    def run_command(
        self, title: str, command: Callable[..., commands.Outcome], *args: Any, **kwargs: Any
    ) -> commands.Outcome | None:
        """Run a command for a screen (the compare screen), as the table's keys do: its outcome is
        shown, the tables and the review counts are read again on the next tick."""
        outcome = self._command(title, command, *args, **kwargs)
        self._dirty.update(self.config.collections)
        self._last_summary = -math.inf
        return outcome

    def action_pause(self) -> None:
        """Pause the current collection (every collection on the Log tab), or resume it when paused.

        A paused collection starts nothing new in any worker; what is in flight finishes. A pause
        of its provider or of everything (``tui-app pause``) holding it is lifted too."""
        names = self._current_or_all()
        paused = self.reader.paused()
        holding = sorted(
            {p for n in names for p in (n, self.config.collections[n].provider, "*") if p in paused}
        )
        if holding:
            self._command("Resume", commands.resume, self.project, holding)
        else:
            self._command("Pause", commands.pause, self.project, names)
        self._dirty.update(names)
        self._last_summary = -math.inf  # the summaries say so on the next tick

    def action_front(self) -> None:
        """Serve the marked rows (or the cursor row) next, before the rest of the queue, by any worker."""
        self._on_selection("Front", commands.front)

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
        if event.input.id == "filter-input" and name and self.sources[name].text_filter != event.value:
            self.sources[name].text_filter = event.value
            self._refiltered.add(name)

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
        self._refiltered.add(name)

    def action_sync(self) -> None:
        findings = self.project.sync(fix=True)
        self._dirty.update(self.config.collections)
        self.notify(
            f"sync: {len(findings)} mismatches fixed (see the Log tab)"
            if findings
            else "sync: disk and state are in step"
        )

    def in_flight(self) -> int:
        """Items this app's own worker has in flight (other workers' items are theirs)."""
        return sum(s.in_flight for s in self.engine.stats.values()) if self.own_worker else 0

    def action_quit_app(self) -> None:
        n = self.in_flight()
        if not n:
            self.shutdown()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.shutdown()

        others = " (other workers go on)" if self.live_workers() else ""
        what = "1 item is" if n == 1 else f"{n} items are"
        question = f"{what} in flight in this app's worker. Quit? They go back to pending{others}."
        self.push_screen(ConfirmScreen(question), answer)

    @work(exclusive=True, group="shutdown")
    async def shutdown(self) -> None:
        """Cancel this app's worker's in-flight items (they go back to pending), wait for it, exit.

        Other workers' items are not touched: only the items this app's worker holds are released."""
        await self._stop_engine_async()
        self.exit(0)


def build_app(
    config: Config,
    *,
    clock_free: bool = False,
    import_in_background: bool | None = None,
    worker: bool = True,
) -> TuiApp:
    """The app over a project: opens it, recovers, imports the sources (factory for tests too).

    A project that already has a state file opens at once on what is stored, and
    its sources are checked in the background (a large source takes a second or
    two); a new project is imported first. With ``worker`` (the default) the app also
    runs a worker of its own; without, it only shows and controls what the project's
    other workers do.

    Raises:
        SourceError: a source is malformed (for a new project; nothing is written).
    """
    if import_in_background is None:
        import_in_background = Project.has_state(config)
    if import_in_background:
        project = Project.open(config)
        project.recover()
    else:
        project = Project.start(config)
    # the app's own worker gets a connection of its own: it runs in a thread of its own
    engine = Engine(Project.open(config) if worker else project)
    return TuiApp(
        project,
        engine,
        clock_free=clock_free,
        pending_import=import_in_background,
        worker=worker,
    )


def run_app(config: Config, *, worker: bool = True) -> int:
    """Open the TUI on a project (with a worker of its own unless ``worker`` is False: ``--no-worker``);
    returns the exit code."""
    import sys

    from ..sources import SourceError

    try:
        app = build_app(config, worker=worker)
    except SourceError as exc:
        print(f"tui-app: error: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    try:
        result = app.run()
    finally:
        app.project.close()
    return int(result or 0)
