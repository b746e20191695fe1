"""Process exit codes, shared by every front end (the contract in DESIGN.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``tui-app`` returns to the shell."""

    OK = 0  # everything selected is completed (or nothing was left to do)
    FAILED = 1  # some items failed (or, with sync --check, disk and state are out of step)
    USAGE = 2  # bad command line, config or input
    INTERRUPTED = 130  # Ctrl-C / SIGTERM; state left consistent
