"""Worker processes: ``tui-app worker`` serves a project until stopped; ``--workers N`` runs N processes.

A worker is an :class:`~tui_app.engine.Engine` registered in the store: it claims items under
leases, renews them on a heartbeat and watches the store for what other processes commit (SQLite:
``PRAGMA data_version``, polled at 10 Hz; PostgreSQL: ``LISTEN``, woken by each commit's
``NOTIFY``), so a command from a shell (regenerate, pause, front, ...) reaches it within 0.1 s. A
lost database connection does not stop it: it waits for the server and goes on (see
:mod:`tui_app.engine.core`). :func:`run_worker` serves until SIGINT or SIGTERM, then releases what it holds
(its in-flight items go back to ``pending``, no attempt spent) and returns 0: stopping a worker is
its normal end.

``--workers N`` (on ``worker`` and on ``--batch``) starts N processes in all: this one and N - 1
:class:`Helpers`, each ``python -m tui_app worker --child ...`` in a session of its own (so a
Ctrl-C on the terminal reaches only this process, which forwards SIGTERM to them). They die with
this process: SIGTERM forwarded when it stops, Linux's parent-death signal when it is killed, and
on any system each child stops when its parent process is gone. With several processes each one
limits onnxruntime to cores // N intra-op threads (``TUI_APP_ORT_THREADS``, read by the ``piper``
provider), so that local synthesis does not oversubscribe the cores.

This module must not import Textual.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import TextIO

import anyio
from anyio.abc import TaskGroup

from .engine import Engine
from .project import Project
from .providers import lone_provider_error
from .providers.piper import ORT_THREADS_ENV
from .settings import MAX_PROCESSES, Config
from .signals import deliver_to_loop, guarded, signal_name
from .store import Event
from .views import pause_holding, pause_scope

#: Provider kinds that compute locally on the CPU: ``worker`` defaults to one process per core for them.
CPU_BOUND = frozenset({"piper", "pillow"})
#: Exit codes of a child worker process that ended as it should: drained (0), drained with failures
#: (1), stopped by a signal it was sent (130). Any other end (killed, crashed) lost what it held.
NORMAL_ENDS = (0, 1, 130)
#: Environment variable a child worker gets: its parent's pid (it stops when that process is gone).
PARENT_ENV = "TUI_APP_PARENT_PID"
#: How often a child checks that its parent is still there, and a parent that its children are, seconds.
WATCH_S = 0.5
_PR_SET_PDEATHSIG = 1


def cores() -> int:
    """The number of cores (``os.cpu_count()``, at least 1)."""
    return os.cpu_count() or 1


def default_processes(config: Config, names: Sequence[str]) -> int:
    """``worker``'s default process count: one per core (at most :data:`MAX_PROCESSES`) when every
    served collection's provider is CPU-bound and local (``piper``, ``pillow``), else 1 (an HTTP
    provider's limits are the server's)."""
    kinds = {config.providers[config.collections[n].provider].kind for n in names or config.collections}
    return min(cores(), MAX_PROCESSES) if kinds and kinds <= CPU_BOUND else 1


def uses_onnxruntime(config: Config, names: Sequence[str]) -> bool:
    """True when a collection of ``names`` (all when empty) is served by a ``piper`` provider."""
    return any(
        config.providers[config.collections[n].provider].kind == "piper" for n in names or config.collections
    )


def threads_note(threads: int | None) -> str:
    """``, 1 onnxruntime thread each`` (empty when onnxruntime keeps its default)."""
    return "" if threads is None else f", {threads} onnxruntime thread{'' if threads == 1 else 's'} each"


def ort_threads_for(processes: int) -> int:
    """onnxruntime intra-op threads per process for ``processes`` processes: cores // N, at least 1."""
    return max(1, cores() // max(1, processes))


def limit_threads(processes: int) -> int | None:
    """With several processes, set ``TUI_APP_ORT_THREADS`` for this process and its children (unless
    the user set it); returns the value in force, or None (one process: onnxruntime's default)."""
    if processes > 1:
        os.environ.setdefault(ORT_THREADS_ENV, str(ort_threads_for(processes)))
    raw = os.environ.get(ORT_THREADS_ENV)
    return int(raw) if raw and raw.strip().isdigit() else None


def split_limit(limit: int | None, processes: int) -> list[int | None]:
    """``--limit`` shared by ``processes`` processes: at most ``limit`` items per collection in all."""
    if limit is None:
        return [None] * processes
    return [limit // processes + (1 if i < limit % processes else 0) for i in range(processes)]


class Helpers:
    """The other processes of a ``--workers N`` run (see the module docstring); a context manager that
    stops them on exit.

    Args:
        config: the project's configuration (its file is passed to the children).
        names: the collections they serve.
        count: how many to start.
        drain: each exits when nothing is left to do (``--batch``) instead of serving until stopped;
            it reports what it generated on its stdout, read by :meth:`generated`.
        limits: with ``drain``, each child's ``--limit`` (None: no limit).
    """

    def __init__(
        self,
        config: Config,
        names: Sequence[str],
        count: int,
        *,
        drain: bool = False,
        limits: Sequence[int | None] = (),
    ):
        self.config, self.names, self.count, self.drain = config, list(names), count, drain
        self.limits = list(limits) or [None] * count
        self.procs: list[subprocess.Popen[str]] = []
        self._reported: set[int] = set()
        self._terminated = False

    def argv(self, limit: int | None) -> list[str]:
        """The command line of one child (``--workers``: the size of its group, this process included)."""
        config = str(Path(self.config.path).resolve())
        args = [sys.executable, "-m", "tui_app", "worker", "--config", config, "--child"]
        args += ["--workers", str(self.count + 1)]
        for name in self.names:
            args += ["--collection", name]
        if self.drain:
            args.append("--drain")
        if limit is not None:
            args += ["--limit", str(limit)]
        return args

    def start(self) -> None:
        """Start the children (from the main thread: Linux ties the parent-death signal to the thread
        that started a child). A child given a ``--limit`` of 0 is not started."""
        env = dict(os.environ, **{PARENT_ENV: str(os.getpid())})
        for limit in self.limits[: self.count]:
            if limit == 0:
                continue
            self.procs.append(
                subprocess.Popen(
                    self.argv(limit),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if self.drain else None,
                    text=True,
                    start_new_session=True,
                )
            )

    def running(self) -> list[subprocess.Popen[str]]:
        """The children that have not exited."""
        return [p for p in self.procs if p.poll() is None]

    def exited(self) -> list[tuple[int, int]]:
        """``(pid, exit code)`` of the children that exited since the last call (a negative code: the
        signal that killed it)."""
        out = []
        for p in self.procs:
            code = p.poll()
            if code is not None and p.pid not in self._reported:
                self._reported.add(p.pid)
                out.append((p.pid, code))
        return out

    def lost(self) -> bool:
        """True when a child ended abnormally (killed, crashed): what it held is taken back by a next run."""
        return any(p.returncode is not None and p.returncode not in NORMAL_ENDS for p in self.procs)

    async def wait(self) -> None:
        """Wait until every child has exited."""
        while True:
            if not self.running():
                return
            await anyio.sleep(0.01)  # a waitpid(WNOHANG) per child: the end of a run is seen at once

    def terminate(self) -> None:
        """Send SIGTERM to the children still running (once): each releases its items and exits."""
        if self._terminated:
            return
        self._terminated = True
        for p in self.running():
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the children: SIGTERM, then wait up to ``timeout_s`` seconds, then SIGKILL (what a killed
        child held is taken back by the next worker that looks, at once on this machine)."""
        self.terminate()
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def generated(self) -> dict[str, int]:
        """With ``drain``: items generated per collection by the children that reported (once exited)."""
        total: dict[str, int] = {}
        for p in self.procs:
            if p.stdout is None or p.stdout.closed or p.poll() is None:
                continue
            with p.stdout:
                lines = p.stdout.read().splitlines()
            for line in lines:
                try:
                    report = json.loads(line).get("generated", {})
                except (ValueError, AttributeError):
                    continue
                for name, n in report.items():
                    total[name] = total.get(name, 0) + int(n)
        return total

    def __enter__(self) -> Helpers:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def die_with_parent() -> int | None:
    """In a child: ask Linux for SIGTERM when the parent dies (``PR_SET_PDEATHSIG``); returns the parent's
    pid from ``TUI_APP_PARENT_PID`` (None when not started as a child)."""
    raw = os.environ.get(PARENT_ENV, "")
    if not raw.isdigit():
        return None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    return int(raw)


def run_worker(
    config: Config,
    names: Sequence[str] = (),
    *,
    processes: int | None = None,
    child: bool = False,
    drain: bool = False,
    limit: int | None = None,
    progress_interval_s: float = 5.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Serve the project's collections ``names`` (all when empty) until SIGINT or SIGTERM; returns 0.

    Prints one line when it serves (worker id, collections), a line per failed item, and a summary of
    the counts every ``progress_interval_s`` seconds when they changed. On a signal its in-flight items
    go back to ``pending`` (no attempt spent) and its worker row goes.

    Args:
        processes: processes in all (this one included); default :func:`default_processes`. Each
            takes at most 1/N of a provider's slots at once (:attr:`Engine.processes`).
        child: started by another worker or ``--batch`` (:class:`Helpers`; ``processes`` is then the
            size of its group): it starts no process, does not read the sources again, prints no
            summary, and stops when its parent process is gone.
        drain: return when nothing is left to do (``--batch`` helpers), printing
            ``{"generated": {...}}`` on stdout; 130 when a signal stopped it.
        limit: with ``drain``, at most this many items per collection.

    Raises:
        SourceError: a source is malformed (nothing has been written).
        ProviderError: a provider cannot start (a missing voice, an unset API key variable).
        KeyboardInterrupt: SIGINT or SIGTERM before the worker served (``tui_app.signals.Interrupted``).
    """
    # a full disk or a failing device under the output is the output's failure, not the state's
    out = guarded(out or sys.stdout)
    err = guarded(err or sys.stderr)
    names = list(names) or list(config.collections)
    parent = die_with_parent() if child else None
    if parent is not None and os.getppid() != parent:
        return 0  # the parent is already gone
    total = processes or (1 if child else default_processes(config, names))
    threads = limit_threads(total)
    shown = err if drain else out

    def say(line: str) -> None:
        print(line, file=shown, flush=True)

    if child:
        project = Project.open(config)
    else:
        project = Project.start(config, names, report=say)
    with project:
        engine = Engine(project)
        engine.processes = total
        helpers = Helpers(config, names, total - 1) if total > 1 and not child else None
        start = f"worker {engine.worker_id} serving {', '.join(names)} (pid {os.getpid()})"
        if total > 1:
            start += f", 1 of {total} processes" if parent is None else f", started by pid {parent}"
            if uses_onnxruntime(config, names):
                start += threads_note(threads)
        if not drain:
            start += f"; stop it with Ctrl-C or kill {os.getpid()}"
        with helpers if helpers is not None else nullcontext():
            if helpers is not None:
                helpers.start()
            stopped = anyio.run(
                _serve,
                engine,
                names,
                _Serving(
                    until_idle=drain,
                    limit=limit,
                    say=say if not drain else None,
                    start_line=start if not drain else None,
                    summary_s=None if child else max(0.1, progress_interval_s),
                    helpers=helpers,
                    parent=parent,
                ),
            )
        if drain:
            generated = {n: engine.stats[n].completed for n in names}
            print(json.dumps({"generated": generated}), file=out, flush=True)
            return 130 if stopped else 0
        say(f"worker {engine.worker_id} stopped; its in-flight items went back to pending")
    return 0


class _Serving:
    """How :func:`_serve` runs (see :func:`run_worker`)."""

    def __init__(
        self,
        *,
        until_idle: bool,
        limit: int | None,
        say: Callable[[str], None] | None,
        start_line: str | None,
        summary_s: float | None,
        helpers: Helpers | None,
        parent: int | None,
    ):
        self.until_idle, self.limit, self.say, self.start_line = until_idle, limit, say, start_line
        self.summary_s, self.helpers, self.parent = summary_s, helpers, parent


async def run_engine(
    engine: Engine,
    body: Callable[[TaskGroup, Callable[[str], None]], Awaitable[None]],
    *,
    on_stop: Callable[[str], None] | None = None,
    helpers: Helpers | None = None,
) -> str | None:
    """Run ``await body(tg, stop)`` as a worker process runs its engine (``worker`` and ``--batch``):
    SIGINT and SIGTERM, or ``stop(reason)``, stop it cleanly: ``on_stop(reason)`` is called (a
    signal's name), the ``helpers`` are told to stop (SIGTERM), the engine is cancelled (its
    in-flight items go back to pending, no attempt spent) and so is ``body``. The engine is closed
    at the end, whatever happens. ``body`` prepares the providers and runs the engine; ``tg`` is
    the task group it runs in, for the tasks that go beside it.

    Returns the reason it was stopped, or None when ``body`` returned.

    Raises:
        ProviderError: a provider could not start (:meth:`Engine.prepare`), as its one line.
    """
    stopped: list[str] = []
    stop = anyio.Event()

    def stop_with(reason: str) -> None:
        if not stopped:
            stopped.append(reason)
        stop.set()

    def on_signal(signum: int) -> None:  # on the event loop (tui_app.signals.deliver_to_loop)
        stop_with(signal_name(signum))

    try:
        with deliver_to_loop(on_signal):
            async with anyio.create_task_group() as tg:

                async def watch_stop() -> None:
                    await stop.wait()
                    if on_stop is not None:
                        on_stop(stopped[0])
                    if helpers is not None:
                        helpers.terminate()  # they release what they hold too
                    engine.cancel()  # in-flight items are cancelled and released
                    tg.cancel_scope.cancel()  # also before the run started (while providers prepare)

                tg.start_soon(watch_stop)
                await body(tg, stop_with)
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        lone = lone_provider_error(group)  # a provider that cannot start: its one-line error
        if lone is None:
            raise
        raise lone from None
    finally:
        await engine.aclose()
    return stopped[0] if stopped else None


async def _serve(engine: Engine, names: list[str], how: _Serving) -> str | None:
    """Prepare the providers and run the engine; the reason it stopped early (a signal's name, or
    ``parent gone``), or None when it drained."""
    say = how.say or (lambda line: print(line, file=sys.stderr, flush=True))

    def on_event(event: Event) -> None:
        if event.kind in ("failed", "cooldown") and event.collection in names:
            say(event.message)

    def on_stop(reason: str) -> None:
        if how.say is not None:
            how.say(f"{reason}: stopping; in-flight items go back to pending")

    async def body(tg: TaskGroup, stop: Callable[[str], None]) -> None:
        if how.parent is not None:
            tg.start_soon(_watch_parent, how.parent, stop)
        await engine.prepare(names)
        if how.start_line is not None:
            say(how.start_line)
        engine.subscribe(on_event)
        if how.summary_s is not None and how.say is not None:
            tg.start_soon(_summaries, engine, names, how.say, how.summary_s)
        if how.helpers is not None:
            tg.start_soon(watch_helpers, engine, how.helpers, say)
        await engine.run(names, limit=how.limit, until_idle=how.until_idle)

    return await run_engine(engine, body, on_stop=on_stop, helpers=how.helpers)


async def _watch_parent(parent: int, stop: Callable[[str], None]) -> None:
    """A child stops when its parent process is gone (re-parented), whatever killed it."""
    while True:
        if os.getppid() != parent:
            break
        await anyio.sleep(WATCH_S)
    stop("parent gone")


async def watch_helpers(engine: Engine, helpers: Helpers, say: Callable[[str], None]) -> None:
    """While ``engine`` serves: reap the child worker processes that end, report each one that did not
    end normally (a line to ``say``), and take back at once what it held (its process is gone)."""
    while True:
        await anyio.sleep(WATCH_S)
        ended = helpers.exited()
        for pid, code in ended:
            if code in NORMAL_ENDS:
                continue
            how = f"was killed by {signal_name(-code)}" if code < 0 else f"exited with {code}"
            say(f"worker process {pid} {how}; what it held goes back to pending")
        if ended:
            engine.take_back()


async def _summaries(engine: Engine, names: list[str], say: Callable[[str], None], every_s: float) -> None:
    """Every ``every_s`` seconds, one line of counts per collection whose counts changed."""
    last = engine.store.counts(names)
    pauses = PauseWatch(engine, names)
    for line in pauses.lines():
        say(line)
    while True:
        await anyio.sleep(every_s)
        for line in pauses.lines():
            say(line)
        counts = engine.store.counts(names)
        for name in names:
            c = counts[name]
            if c != last.get(name):
                say(
                    f"{time.strftime('%H:%M:%S')} {name}: {c['completed']}/{sum(c.values())} completed, "
                    f"{c['failed']} failed, {c['generating']} generating, {c['pending']} pending"
                )
        last = counts


class PauseWatch:
    """Says when a pause starts or stops holding one of ``names`` (a pause of the collection, of its
    provider or of everything: ``tui-app pause``), so that a run that waits says why.

    Args:
        engine: the engine serving ``names`` (its store and its configuration).
        names: the collections served.
    """

    def __init__(self, engine: Engine, names: Sequence[str]):
        self.engine = engine
        self.names = list(names)
        self._held: dict[str, str] = dict.fromkeys(self.names, "")

    def lines(self) -> list[str]:
        """One line per collection whose pause changed since the last call (the first call: the
        collections paused now), e.g. ``dataset: paused (everything): nothing new starts until
        `tui-app resume```, then ``dataset: resumed``."""
        paused = self.engine.store.paused()
        out = []
        for name in self.names:
            provider = self.engine.config.collections[name].provider
            by = pause_holding(paused, name, provider)
            if by == self._held[name]:
                continue
            self._held[name] = by
            if by:
                what = pause_scope(by, provider)
                held = f"{name}: paused" + (f" ({what})" if what else "")
                resume = "tui-app resume" + ("" if by == "*" else f" {by}")
                out.append(f"{held}: nothing new starts until `{resume}`")
            else:
                out.append(f"{name}: resumed")
        return out


__all__ = [
    "CPU_BOUND",
    "Helpers",
    "PauseWatch",
    "cores",
    "default_processes",
    "limit_threads",
    "ort_threads_for",
    "run_engine",
    "run_worker",
    "split_limit",
    "threads_note",
    "uses_onnxruntime",
]
