"""One writer process per project: an advisory ``flock`` on ``state.sqlite.lock``.

Crash recovery resets items left ``generating``; that is only safe when no other
process is generating in the same project, so every command that runs or repairs
work (the TUI, ``--batch``, ``sync --fix``, ``cleanup``, ``revert``) holds this lock.
The kernel drops a ``flock`` when its process dies, so a crash never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class ProjectBusy(Exception):
    """Another tui_app process holds the project's lock."""


class ProjectLock:
    """``with ProjectLock(state_path):`` - exclusive, non-blocking.

    Raises:
        ProjectBusy: another process holds it (the message names its pid when known).
    """

    def __init__(self, state_path: Path):
        self.path = Path(f"{state_path}.lock")
        self._fd: int | None = None

    def __enter__(self) -> ProjectLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ProjectBusy(
                f"another tui-app (pid {holder}) is working on this project "
                f"({self.path.parent}); wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
