"""Signals and closed pipes: one policy for every command (``tui-app``, ``--batch``, each subcommand).

**SIGINT and SIGTERM** take the same path. :func:`install` (the first thing ``main`` does)
replaces both handlers for the life of the process:

- the first signal stops the program cleanly: inside an event loop that registered a
  callback with :func:`deliver_to_loop` (the headless run) that callback runs on the
  loop; inside any other running asyncio loop (the TUI) :class:`Interrupted` is raised
  from a loop callback, between two callbacks, so the loop's tasks are cancelled in
  order (the TUI restores the terminal); anywhere else (reading sources, importing,
  recovering, opening the store) :class:`Interrupted` is raised at once. Every store
  transaction rolls back on any ``BaseException``, files are written atomically, and
  ``main`` turns :class:`Interrupted` into exit code 130 without a traceback;
- a second signal, or one that arrives after ``main`` has returned, ends the process
  at once with exit code 130 (``os._exit``): the state is consistent because it always
  is at every instant (a crash costs nothing; the next start recovers what was in flight);
- in the interpreter's last moments (after the ``atexit`` callbacks, when Python puts
  the default actions back) both are ignored, so the process still exits with its code.

A signal that arrives before Python has run ``main`` (while the interpreter itself
starts) gets the operating system's default action.

**SIGPIPE**: Python ignores SIGPIPE and raises :class:`BrokenPipeError` when the reader
of stdout went away (``tui-app status | head -1``). ``main`` catches it in one place,
points stdout (and stderr, when its reader is gone too) at ``/dev/null`` so that the
interpreter's final flush cannot fail again (the recipe of the Python docs, "Note on
SIGPIPE" in the ``signal`` module), and exits with 141 = 128 + SIGPIPE, what a shell
reports for a command killed by SIGPIPE. :func:`console` makes rich consoles that
raise :class:`BrokenPipeError` too (rich's default exits with status 1 instead).
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO, cast

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

    from rich.console import Console

#: The signals that stop a command.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Exit code of a process stopped by SIGINT or SIGTERM (as ``ExitCode.INTERRUPTED``).
_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; a ``KeyboardInterrupt``, so ``except KeyboardInterrupt`` sees it.

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int):
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ... (the number for an unknown signal)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class _State:
    """What the handler needs: the signals received since :func:`install`, the loop callbacks."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.listeners: list[tuple[AbstractEventLoop, Callable[[int], None]]] = []
        self.finished = False


_state = _State()
_at_exit = False


def install() -> None:
    """Route SIGINT and SIGTERM to this module's handler (see the module docstring).

    Call it first in the process's entry point; calling it again starts over (no signal
    received yet). Outside the main thread (where Python cannot set handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    global _state, _at_exit
    _state = _State()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _handle)
    if not _at_exit:
        _at_exit = True
        atexit.register(_ignore_from_now)


def finish() -> None:
    """``main`` is done: from now on a signal ends the process at once (exit 130), with no traceback."""
    _state.finished = True


def received() -> list[int]:
    """The signals received since :func:`install`, in order."""
    return list(_state.received)


@contextmanager
def deliver_to_loop(callback: Callable[[int], None]) -> Iterator[None]:
    """Within a running asyncio event loop: while inside, the first SIGINT/SIGTERM calls
    ``callback(signum)`` on that loop (thread-safe, so it may cancel scopes and set events)
    instead of raising :class:`Interrupted`.

    Raises:
        RuntimeError: no asyncio event loop is running in this thread.
    """
    import asyncio

    entry = (asyncio.get_running_loop(), callback)
    _state.listeners.append(entry)
    try:
        yield
    finally:
        _state.listeners.remove(entry)


def _handle(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM (runs in the main thread between two bytecodes)."""
    state = _state
    first = not state.received
    state.received.append(signum)
    if not first or state.finished:
        _exit_now()
    if state.listeners:
        listening, callback = state.listeners[-1]
        try:
            listening.call_soon_threadsafe(callback, signum)
            return
        except Exception:  # noqa: BLE001 - the loop is closed: raise instead
            pass
    running = _running_loop()
    if running is not None:
        try:
            # raised from a callback, between two callbacks: the loop's runner then cancels its tasks
            running.call_soon_threadsafe(_raise_interrupted, signum)
            return
        except Exception:  # noqa: BLE001 - the loop is closing: raise instead
            pass
    raise Interrupted(signum)


def _ignore_from_now() -> None:
    """At exit, after the other ``atexit`` callbacks: ignore SIGINT and SIGTERM. Python resets the
    handlers it installed to the default action as it finalizes (a signal then would kill the
    process: 143, or -2), but it leaves an ignored signal ignored."""
    for sig in STOP_SIGNALS:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):
            pass


def _raise_interrupted(signum: int) -> None:
    raise Interrupted(signum)


def _running_loop() -> AbstractEventLoop | None:
    """The asyncio loop running in this thread, or None (asyncio is never imported for this, and
    may be half imported: the signal can arrive while ``import asyncio`` runs)."""
    get_running_loop = getattr(sys.modules.get("asyncio"), "get_running_loop", None)
    if get_running_loop is None:
        return None
    try:
        loop: AbstractEventLoop = get_running_loop()
    except Exception:  # noqa: BLE001 - RuntimeError: none running; anything else: treat as none
        return None
    return loop


def _exit_now() -> None:
    """End the process at once with exit code 130, saving what stdout and stderr still hold."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed, broken or busy stream: nothing to save
            pass
    os._exit(_INTERRUPTED)


# ---------------------------------------------------------------------- SIGPIPE


def _reader_gone(fd: int) -> bool:
    """True when ``fd`` is a pipe or socket whose reading end is closed (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def silence_closed_output() -> None:
    """After a :class:`BrokenPipeError`: point stdout (always) and stderr (when its reader is gone)
    at ``/dev/null``, so that nothing written later, nor the interpreter's final flush, fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):
                continue
            if stream is sys.stdout or _reader_gone(fd):
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class OutputError(Exception):
    """Writing the command's own output (stdout, stderr) failed: a full disk or an I/O error under
    the file or device the output goes to (``> /dev/full``); ``main`` exits 74 naming the output,
    not the state. Not an ``OSError``, so that nothing takes it for a failure of the state's disk."""

    def __init__(self, cause: OSError):
        self.cause = cause
        super().__init__(f"cannot write the output: {cause.strerror or cause}")


@contextmanager
def writing() -> Iterator[None]:
    """Turn an ``OSError`` of writing the command's output into :class:`OutputError` (a closed
    pipe stays a :class:`BrokenPipeError`: exit 141)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(exc) from exc


class _GuardedStream:
    """A text stream whose writes and flushes go through :func:`writing`; everything else is the
    stream's own."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        with writing():
            return int(self._stream.write(text))

    def flush(self) -> None:
        with writing():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guarded(stream: TextIO) -> TextIO:
    """``stream`` (stdout, stderr, an open file), whose failed writes raise :class:`OutputError`
    (a closed pipe: :class:`BrokenPipeError`) instead of an ``OSError`` that would read as a
    failure of the state's disk."""
    return cast("TextIO", _GuardedStream(stream))


def console(**kwargs: Any) -> Console:
    """A ``rich.console.Console(**kwargs)`` that raises :class:`BrokenPipeError` when its reader is
    gone (rich's own default redirects stdout and exits with status 1; ``main`` then exits with
    141), and :class:`OutputError` when its stream cannot be written (``main``: 74). Its ``file``
    (default stdout) is looked up once, here."""
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    kwargs["file"] = _GuardedStream(kwargs.get("file") or sys.stdout)
    return _PipeConsole(**kwargs)


__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "OutputError",
    "console",
    "deliver_to_loop",
    "finish",
    "guarded",
    "install",
    "received",
    "signal_name",
    "silence_closed_output",
    "writing",
]
