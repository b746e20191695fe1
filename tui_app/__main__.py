"""``python -m tui_app`` and the ``tui-app`` console script (``tui_app.__main__:run``).

The signal policy is installed before the rest of tui_app loads, so a SIGINT or
SIGTERM at any moment, start-up included, exits 130 without a traceback.
"""

import signal
import sys

from tui_app import signals  # absolute: anyio's worker processes run this file as a script


def run() -> int:
    """Install the signal policy, then load and run the command line; returns the exit code."""
    signals.install()
    try:
        from tui_app.cli import main
    except BaseException:
        if not signals.received():
            raise
        signals.finish()  # the import was cut short by SIGINT or SIGTERM (maybe wrapped in another error)
        return 130
    code = main()
    # the command is over and its exit code known: a signal now would only turn the exit into a
    # traceback (raised in ``sys.exit``), so the process ends with the command's code instead
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(run())
