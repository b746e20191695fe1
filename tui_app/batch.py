"""The headless runner behind ``tui-app --batch``: progress, summary, exit codes.

Progress is a rich progress bar per collection (done/total, failed, in flight,
items/s, ETA) on a terminal, and a plain line per collection every few
seconds otherwise. Ctrl-C or SIGTERM stop the run cleanly: no new item
starts, in-flight items are cancelled and go back to ``pending``, no partial
file is left, and the exit code is 130 (before the run starts, while the sources
are read and imported, :mod:`tui_app.signals` raises ``Interrupted`` instead and
``main`` exits 130 too). A full or read-only disk (:mod:`tui_app.storage_errors`)
stops the run the same way, with exit code 74 and the cause in the summary.

With ``workers`` > 1 (``--workers N``) the run is N processes: this one and N - 1 helper
workers (:class:`tui_app.workers.Helpers`) that exit when nothing is left; the progress, the
summary and the exit code come from the store's counts, and a signal stops them all.

This module must not import Textual (checked by tests/test_import_hygiene.py).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
from anyio.abc import TaskGroup
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from . import commands
from .display import format_eta
from .engine import Engine
from .exit_codes import ExitCode
from .project import Project
from .settings import Config
from .signals import console as pipe_console
from .signals import guarded
from .storage_errors import StorageError, storage_error
from .store import Event
from .views import Throughput
from .workers import (
    Helpers,
    PauseWatch,
    limit_threads,
    run_engine,
    split_limit,
    threads_note,
    uses_onnxruntime,
    watch_helpers,
)

#: with helper processes, how often the store's counts are read for items/s (seconds)
SAMPLE_S = 1.0
#: how often the run looks for a pause that holds it (``tui-app pause``), seconds
PAUSES_S = 1.0


@dataclass
class BatchResult:
    """What a headless run did (also the ``--json`` summary).

    ``error`` is set when a storage failure stopped the run (exit code 74): one line naming the
    path and the cause; the ``--json`` summary then has an ``"error"`` key too.
    """

    exit_code: int
    elapsed_s: float
    collections: dict[str, dict[str, int]]
    generated: dict[str, int]
    failed: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` summary."""
        out: dict[str, Any] = {
            "exit_code": int(self.exit_code),
            "interrupted": self.interrupted,
            "elapsed_s": round(self.elapsed_s, 3),
            "collections": self.collections,
            "generated": self.generated,
            "failed": self.failed,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


class _Display:
    """Live progress: rich bars on a terminal, periodic plain lines otherwise.

    Items/s come from :class:`~tui_app.views.Throughput` (completions counted per time bucket, right
    at any speed): fed with this engine's ``completed`` events, or with helper processes with the
    growth of the store's completed count. While a collection has items in flight the rate is the
    recent one; once nothing is in flight it is frozen at the run's rate (it does not decay).

    With ``limit`` (``--limit N``: N items per collection, over every process of the run) the
    progress and the ETA are for this run's items (N, or fewer when fewer are pending), not for the
    whole collection, which the plain line still names.
    """

    def __init__(
        self,
        engine: Engine,
        names: list[str],
        console: Console,
        *,
        quiet: bool,
        interval_s: float = 5.0,
        shared: bool = False,
        limit: int | None = None,
    ):
        self.engine, self.names, self.console, self.quiet = engine, names, console, quiet
        self.interval_s = interval_s
        # with helper processes, in-flight counts and rates come from the store, not this engine
        self.shared = shared
        self.limit = limit
        self.throughput = {n: Throughput() for n in names}
        self.at_start: dict[str, dict[str, int]] = {}  # the store's counts when the run started
        #: with ``limit``: the items this run is to do, per collection (N, or the pending ones if fewer)
        self.targets: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # shared: the completed count last fed to the throughput
        self.rich = console.is_terminal and not quiet
        self.progress: Progress | None = None
        self.tasks: dict[str, Any] = {}
        self.started = time.monotonic()
        self._last_plain = self.started  # first plain line after one interval; the summary covers the end
        self._sampled = self.started
        #: a pause in the store holds the run: said when it starts and stops (else a run that waits
        #: for a `tui-app resume` looks hung)
        self.pauses = PauseWatch(engine, names)
        self._pauses_at = -math.inf

    def __enter__(self) -> _Display:
        counts = self.engine.store.counts(self.names)
        begun = time.time()
        for name in self.names:
            self.at_start[name] = dict(counts[name])
            self._seen[name] = counts[name]["completed"]
            self.throughput[name].begin(begun)
            if self.limit is not None:
                self.targets[name] = min(self.limit, counts[name]["pending"])
        if self.rich:
            self.progress = Progress(
                TextColumn("[bold]{task.description:<12}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("[red]{task.fields[failed]} failed[/] · {task.fields[inflight]} in flight"),
                TextColumn("{task.fields[rate]:>6.1f} items/s"),
                TextColumn("ETA {task.fields[eta]}"),
                console=self.console,
                refresh_per_second=8,
            )
            for name in self.names:
                total, done, failed = self.progress_of(name, counts[name])
                self.tasks[name] = self.progress.add_task(
                    name if self.limit is None else f"{name} (--limit {self.limit})",
                    total=total,
                    completed=done,
                    failed=failed,
                    inflight=0,
                    rate=0.0,
                    eta="-",
                )
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.refresh(force=True)
            self.progress.stop()
        else:
            self._say_pauses()

    def warn(self, line: str) -> None:
        """Print ``line`` as it is (no markup: names may hold brackets), in yellow."""
        self.console.print(line, style="yellow", markup=False, highlight=False)

    def _say_pauses(self) -> None:
        """A line for each pause that began or ended to hold a collection of the run."""
        self._pauses_at = time.monotonic()
        if self.quiet:
            return
        for line in self.pauses.lines():
            self.warn(line)

    def on_event(self, event: Event) -> None:
        if event.kind == "completed" and not self.shared and event.collection in self.throughput:
            self.throughput[event.collection].note(event.ts)
        if event.kind in ("failed", "cooldown", "discarded") and not self.quiet:
            style = "red" if event.kind == "failed" else "yellow"
            self.console.print(f"[{style}]{event.message}[/]", markup=True, highlight=False)

    def in_flight(self, name: str, c: dict[str, int]) -> int:
        """Items in flight: this engine's, or with helper processes every worker's (the store's)."""
        return c["generating"] if self.shared else self.engine.stats[name].in_flight

    def this_run(self, name: str, c: dict[str, int]) -> tuple[int, int]:
        """Items completed and failed in this run: this engine's, or with helper processes the growth
        of the store's counts since the start."""
        if self.shared:
            start = self.at_start[name]
            return max(0, c["completed"] - start["completed"]), max(0, c["failed"] - start["failed"])
        stats = self.engine.stats[name]
        return stats.completed, stats.failed

    def progress_of(self, name: str, c: dict[str, int]) -> tuple[int, int, int]:
        """(total, done, failed) for the bar: the whole collection, or with ``limit`` this run's items."""
        if self.limit is None:
            return sum(c.values()), c["completed"], c["failed"]
        completed, failed = self.this_run(name, c)
        done = completed + failed
        return max(self.targets[name], done), done, failed

    def remaining(self, name: str, c: dict[str, int]) -> int:
        """Items still to do (in flight included): in the collection, or with ``limit`` in this run."""
        if self.limit is None:
            return c["pending"] + c["generating"]
        total, done, _ = self.progress_of(name, c)
        return max(0, total - done)

    def rate(self, name: str, c: dict[str, int], now: float) -> float:
        """Items/s: recent while items are in flight; the run's, frozen, once none is."""
        return self.throughput[name].rate(now, busy=self.in_flight(name, c) > 0)

    def line(self, name: str, c: dict[str, int], rate: float, eta: str) -> str:
        total = sum(c.values())
        inflight = self.in_flight(name, c)
        if self.limit is None:
            return (
                f"{name}: {c['completed']}/{total} completed, {c['failed']} failed, "
                f"{inflight} in flight, {rate:.1f} items/s, ETA {eta}"
            )
        target, done, failed = self.progress_of(name, c)
        return (
            f"{name}: {done}/{target} this run (--limit {self.limit}), {failed} failed, "
            f"{inflight} in flight, {rate:.1f} items/s, ETA {eta}; {c['completed']}/{total} in all"
        )

    def _sample(self, counts: dict[str, dict[str, int]], now: float) -> None:
        """With helper processes: feed the growth of the store's completed counts to the throughput."""
        for name in self.names:
            completed = counts[name]["completed"]
            if completed > self._seen[name]:
                self.throughput[name].note(now, completed - self._seen[name])
            self._seen[name] = completed

    def refresh(self, force: bool = False) -> None:
        mono = time.monotonic()
        if force or mono - self._pauses_at >= PAUSES_S:
            self._say_pauses()
        plain_due = not self.rich and not self.quiet and (force or mono - self._last_plain >= self.interval_s)
        sample_due = self.shared and (force or mono - self._sampled >= SAMPLE_S)
        if not self.rich and not plain_due and not sample_due:
            return
        now = time.time()
        counts = self.engine.store.counts(self.names)
        if self.shared:
            self._sampled = mono
            self._sample(counts, now)
        if not self.rich and not plain_due:
            return
        for name in self.names:
            c = counts[name]
            rate = self.rate(name, c, now)
            remaining = self.remaining(name, c)
            eta = "0s" if remaining == 0 else (format_eta(remaining / rate) if rate > 0 else "-")
            if self.progress is not None:
                total, done, failed = self.progress_of(name, c)
                self.progress.update(
                    self.tasks[name],
                    total=total,
                    completed=done,
                    failed=failed,
                    inflight=self.in_flight(name, c),
                    rate=rate,
                    eta=eta,
                )
            elif plain_due:
                # one line each, however narrow the console thinks it is (a log file: 80 columns)
                line = self.line(name, c, rate, eta)
                self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if plain_due:
            self._last_plain = mono


def run_batch(
    config: Config,
    *,
    collections: Sequence[str] = (),
    retry_failed: bool = False,
    limit: int | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    progress_interval_s: float = 5.0,
    workers: int = 1,
) -> BatchResult:
    """Run pending work headless and return the result (the CLI maps it to an exit code).

    Args:
        config: loaded configuration.
        collections: names to run (all when empty); validated by the caller.
        retry_failed: queue failed items again first.
        limit: at most this many items per collection.
        as_json: print the summary as JSON on ``out`` (progress goes to ``err``).
        progress_interval_s: seconds between plain progress lines when not on a terminal.
        workers: processes in all (``--workers N``): N - 1 helper processes join this one, and
            ``limit`` is shared among them.

    A storage failure during the run (a full or read-only disk under the state file or an
    output folder) stops it: in-flight items go back to ``pending``, no attempt is spent, and the
    result has exit code 74 and ``error`` set.

    Raises:
        SourceError: a source is malformed (nothing has been written).
        ProviderError: a provider cannot start (missing voice or package).
        ProjectBusy: another tui-app process is working on the project.
        StorageError, OSError, sqlite3.Error: the disk failed before the run (opening, importing).
        KeyboardInterrupt: SIGINT or SIGTERM before the run started (``tui_app.signals.Interrupted``).
        BrokenPipeError: the reader of ``out`` went away.

    Ctrl-C and SIGTERM stop the run cleanly when the process routes them through
    :func:`tui_app.signals.install` (``main`` does, first thing); otherwise Python's default
    applies (a ``KeyboardInterrupt``, after which in-flight items are back to ``pending`` too).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    names = list(collections) or list(config.collections)
    console = pipe_console(file=err if as_json else out, highlight=False)

    def report(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    with Project.start(config, names, report=report) as project:
        engine = Engine(project)
        if retry_failed:  # as `tui-app retry-failed` does (its notes are about other workers: not here)
            for line in commands.retry_failed(project, names).lines:
                console.print(line, highlight=False, markup=False)
        limits = split_limit(limit, max(1, workers))
        helpers = None
        engine.processes = max(1, workers)
        if workers > 1:
            threads = limit_threads(workers)
            helpers = Helpers(config, names, workers - 1, drain=True, limits=limits[1:])
            more = threads_note(threads) if uses_onnxruntime(config, names) else ""
            console.print(f"{workers} worker processes{more}", highlight=False)
        started = time.monotonic()
        before = project.store.counts(names) if helpers is not None else {}
        problem: StorageError | None = None
        with helpers if helpers is not None else nullcontext():  # stops the helpers, whatever happens
            if helpers is not None:
                helpers.start()
            try:
                interrupted = anyio.run(
                    _run, engine, names, limits[0], console, progress_interval_s, helpers, limit
                )
            except BaseException as exc:  # noqa: BLE001 - only a storage failure is handled here
                problem = storage_error(exc, path=config.state_location)
                if problem is None:
                    raise
                interrupted = False
        elapsed = time.monotonic() - started
        generated = {n: engine.stats[n].completed for n in names}
        for name, n in (helpers.generated() if helpers is not None else {}).items():
            generated[name] = generated.get(name, 0) + n
        counts = project.store.counts(names)
        if helpers is not None and helpers.lost():  # a killed helper never said what it generated
            for name in names:
                done = counts[name]["completed"] - before[name]["completed"]
                generated[name] = max(generated.get(name, 0), done)
        failed = [
            {"collection": i.collection, "key": i.key, "error": i.last_error}
            for i in project.store.failed_items(names)
        ]
        if problem is not None:
            code = ExitCode(getattr(problem, "exit_code", ExitCode.STORAGE))
        elif interrupted:
            code = ExitCode.INTERRUPTED
        elif failed:
            code = ExitCode.FAILED
        else:
            code = ExitCode.OK
        result = BatchResult(
            int(code),
            elapsed,
            counts,
            generated,
            failed[:1000],
            interrupted,
            problem.line() if problem is not None else None,
        )
        _summary(result, console, out if as_json else None)
        return result


async def _run(
    engine: Engine,
    names: list[str],
    limit: int | None,
    console: Console,
    interval_s: float,
    helpers: Helpers | None = None,
    total_limit: int | None = None,
) -> bool:
    """Prepare the providers and run (then wait for the ``helpers``); True when SIGINT or SIGTERM
    stopped it (at any point in here). ``limit`` is this process's part of ``total_limit`` (``--limit``,
    which the progress shows)."""

    def on_stop(reason: str) -> None:
        console.print(f"[yellow]{reason}: stopping; in-flight items go back to pending[/]")

    async def body(tg: TaskGroup, stop: Callable[[str], None]) -> None:
        await engine.prepare(names)
        shared = helpers is not None
        display = _Display(
            engine, names, console, quiet=False, interval_s=interval_s, shared=shared, limit=total_limit
        )
        engine.subscribe(display.on_event)
        with display:

            async def refresh() -> None:
                while True:
                    display.refresh()
                    await anyio.sleep(0.25)

            tg.start_soon(refresh)
            if helpers is not None:
                tg.start_soon(watch_helpers, engine, helpers, display.warn)
            await engine.run(names, limit=limit)
            if helpers is not None:
                await helpers.wait()  # they finish what they claimed
                if helpers.lost() and limit is None:
                    await engine.run(names)  # take back and finish what a killed helper held

    return await run_engine(engine, body, on_stop=on_stop, helpers=helpers) is not None


def _summary(result: BatchResult, console: Console, json_out: TextIO | None) -> None:
    if json_out is not None:
        stream = guarded(json_out)  # a full disk under `> out.json` is the output's, not the state's
        stream.write(json.dumps(result.to_json(), indent=2) + "\n")
        stream.flush()
        return
    for name, c in result.collections.items():
        total = sum(c.values())
        console.print(
            f"{name}: {c['completed']}/{total} completed ({result.generated.get(name, 0)} this run), "
            f"{c['failed']} failed, {c['pending'] + c['generating']} pending",
            highlight=False,
        )
    for f in result.failed[:20]:
        console.print(f"  failed {f['collection']}/{f['key']}: {f['error']}", highlight=False, markup=False)
    if len(result.failed) > 20:
        console.print(f"  ... and {len(result.failed) - 20} more (tui-app status --json)")
    verdict = {
        0: "done",
        1: "finished with failures (retry them with --retry-failed)",
        74: "stopped by a storage error; state is consistent, run again once fixed",
        130: "interrupted; state is consistent, run again to continue",
    }[result.exit_code]
    console.print(f"{verdict} in {result.elapsed_s:.1f} s", highlight=False)


__all__ = ["BatchResult", "run_batch"]
