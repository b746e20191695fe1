"""Process exit codes, shared by every front end (the contract in DESIGN.md).

74 and 141 follow conventions other tools share: 74 is ``EX_IOERR`` of BSD ``sysexits.h``
(an input/output error: here a full, read-only or failing disk under the state file or
an output folder), 141 is 128 + SIGPIPE, what a shell reports for a command killed by
SIGPIPE (the reader of its output went away, as in ``tui-app status | head -1``).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``tui-app`` returns to the shell."""

    OK = 0  # everything selected is completed (or nothing was left to do)
    FAILED = 1  # some items failed (or, with sync --check, disk and state are out of step)
    USAGE = 2  # bad command line, config or input
    STORAGE = 74  # EX_IOERR: disk full / read-only / quota under the state or an output; state consistent
    INTERRUPTED = 130  # Ctrl-C / SIGTERM (128 + SIGINT); state left consistent
    BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away; nothing else is affected
