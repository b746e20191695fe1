"""Command line: ``tui-app`` (the TUI), ``tui-app --batch`` (headless) and subcommands.

The headless paths never import Textual; only opening the TUI does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .batch import ExitCode
from .config import ConfigError, load_config

DESCRIPTION = """\
A terminal workbench for producing generative assets in bulk: the clips of a TTS
voice dataset, the page images of an illustrated story, and variants of photos.
Every item's state lives in one SQLite file (data/state.sqlite by default), so
runs can be interrupted and resumed without losing work.
"""

EPILOG = """\
examples:
  tui-app                         open the TUI on ./config.toml
  tui-app --batch                 generate everything pending, headless, with progress
  tui-app --batch --collection dataset --limit 20
  tui-app --batch --retry-failed  queue failed items again, then run
  tui-app status --json           counts per collection and status

exit codes: 0 all completed, 1 some failed, 2 usage/config/input error, 130 interrupted
"""


def _config_arg(parser: argparse.ArgumentParser, default: object = "config.toml") -> None:
    parser.add_argument("--config", metavar="PATH", default=default,
                        help="project config file (default: ./config.toml)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the README)."""
    parser = argparse.ArgumentParser(prog="tui-app", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _config_arg(parser)
    parser.add_argument("--batch", action="store_true",
                        help="run pending work headless instead of opening the TUI")
    parser.add_argument("--collection", metavar="NAME", action="append", default=[],
                        help="with --batch: only this collection (repeatable; default: all)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --batch: queue failed items again before running")
    parser.add_argument("--limit", metavar="N", type=int,
                        help="with --batch: generate at most N items per collection")
    parser.add_argument("--json", action="store_true",
                        help="with --batch: print a machine-readable summary on stdout (progress on stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    st = sub.add_parser("status", help="show item counts per collection and status",
                        description="Show item counts per collection and status, read from the state file.")
    _config_arg(st, argparse.SUPPRESS)
    st.add_argument("--json", action="store_true", help='print {"<collection>": {"<status>": count}}')
    return parser


def _error(message: str) -> int:
    print(f"tui-app: error: {message}", file=sys.stderr)
    return int(ExitCode.USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tui-app`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    batch_only = [flag for flag, on in (("--collection", bool(args.collection)),
                                        ("--retry-failed", args.retry_failed),
                                        ("--limit", args.limit is not None)) if on]
    if batch_only and not args.batch:
        return _error(f"{', '.join(batch_only)} only work with --batch")
    if args.limit is not None and args.limit < 1:
        return _error("--limit must be at least 1")
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        return _error(str(exc))
    unknown = [c for c in args.collection if c not in config.collections]
    if unknown:
        return _error(f"unknown collection {unknown[0]!r} (configured: {', '.join(config.collections)})")

    if args.command == "status":
        return _status(config, args.json)
    if args.batch:
        return _batch(config, args)
    if args.json:
        return _error("--json works with --batch or status")
    return _tui(config)


def _batch(config, args) -> int:
    from .batch import run_batch
    from .providers import ProviderError
    from .sources import SourceError

    try:
        result = run_batch(config, collections=args.collection, retry_failed=args.retry_failed,
                           limit=args.limit, as_json=args.json)
    except SourceError as exc:
        return _error(str(exc))
    except ProviderError as exc:
        return _error(exc.message)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    return result.exit_code


def _status(config, as_json: bool) -> int:
    from .batch import status

    counts = status(config)
    if as_json:
        print(json.dumps(counts, indent=2))
        return int(ExitCode.OK)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tui_app status: {config.state_path}")
    table.add_column("collection")
    statuses = ["pending", "generating", "completed", "failed", "cancelled"]
    for s in statuses:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    for name, c in counts.items():
        table.add_row(name, *(str(c[s]) for s in statuses), str(sum(c.values())))
    Console().print(table)
    if not config.state_path.exists():
        print("no state file yet: run `tui-app --batch` or open the TUI", file=sys.stderr)
    return int(ExitCode.OK)


def _tui(config) -> int:
    try:
        from .tui.app import run_app
    except ImportError as exc:
        return _error(f"the TUI cannot start ({exc}); use --batch for headless runs")
    return run_app(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
