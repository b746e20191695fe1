"""``python -m tui_app`` and the ``tui-app`` console script (``tui_app.__main__:run``).

The signal policy is installed before the rest of tui_app loads, so a SIGINT or
SIGTERM at any moment, start-up included, exits 130 without a traceback.

Once the command is over, the process ends at once (:func:`exit_now`) instead of going through the
interpreter's teardown.
"""

import logging
import os
import signal
import sys
from typing import NoReturn

from tui_app import signals  # absolute: anyio's worker processes run this file as a script


def run() -> NoReturn:
    """Install the signal policy, then load and run the command line; ends the process with its exit
    code (an exception the command line let out ends it as Python does: a traceback, exit 1)."""
    signals.install()
    try:
        from tui_app.cli import main
    except BaseException:
        if not signals.received():
            raise
        signals.finish()  # the import was cut short by SIGINT or SIGTERM (maybe wrapped in another error)
        exit_now(130)
    code = main()
    # the command is over and its exit code known: a signal now would only turn the exit into a
    # traceback (raised in ``sys.exit``), so the process ends with the command's code instead
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once the command is over (its files closed, its child processes
    waited for): the standard streams and the log handlers are flushed, then ``os._exit`` skips the
    interpreter's teardown, which frees every loaded module one by one (about 0.1 s with numpy and
    onnxruntime loaded, at the end of every worker process) and waits for idle helper threads. mypy
    ends the same way (``mypy.util.hard_exit``).
    Nothing is lost: every state write was committed and every take file renamed into place before
    the command returned, and the store is built to survive a SIGKILL at any moment anyway."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``) or stream: nothing more to say there
            pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
