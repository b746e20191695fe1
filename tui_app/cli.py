"""Command line: ``tui-app`` (the TUI), ``tui-app --batch`` (headless) and subcommands.

The headless paths never import Textual; only opening the TUI does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

from .config import ConfigError, load_config
from .exit_codes import ExitCode
from .kinds import KINDS
from .settings import MAX_PROCESSES, MAX_TAKES, Config, escape_controls
from .signals import OutputError, writing

E = TypeVar("E", bound=BaseException)

if TYPE_CHECKING:
    from .commands import Outcome
    from .project import Project

DESCRIPTION = """\
A terminal workbench for producing generative assets in bulk: the clips of a TTS
voice dataset, the page images of an illustrated story, and variants of photos.
Every item's state lives in one store: a SQLite file (data/state.sqlite by default),
or a PostgreSQL database shared by workers on several machines; runs can be
interrupted and resumed without losing work.
"""

EPILOG = """\
examples:
  tui-app                         open the TUI on ./config.toml (with a worker of its own)
  tui-app --no-worker             open the TUI on a project other workers serve: watch and control
  tui-app --batch                 generate everything pending, headless, with progress
  tui-app --batch --collection dataset --limit 20
  tui-app --batch --retry-failed  queue failed items again, then run
  tui-app status --json           counts per collection and status
  tui-app status --qa             entries whose take has QA flags
  tui-app status --review         accepted, rejected and unreviewed takes per collection
  tui-app sync --check            is the disk in step with the state file? (exit 1 if not)
  tui-app cleanup --dry-run       what deleting superseded takes would reclaim
  tui-app export dataset --format ljspeech exports/ljspeech
  tui-app worker &                serve the project in the background until stopped (kill %1)
  tui-app workers                 the live workers: pid, last heartbeat, items in flight
  tui-app regenerate dataset arctic_a0001 --set emotion=happy
  tui-app pause dataset           no new dataset item starts (tui-app resume dataset)
  tui-app review dataset arctic_a0001 --reject --note "mumbled" --regenerate
  tui-app export dataset --only-accepted exports/accepted
  tui-app migrate-state --to postgresql://tui@db.lan:5432/tui --password-env TUI_DB_PASSWORD

exit codes: 0 all completed, 1 some failed, 2 usage/config/input error (also a PostgreSQL
  server that refuses: a failed login, a database or role that does not exist),
  74 storage error (disk full, read-only or failing disk under the state or an output, or a
  PostgreSQL server unreachable or lost; one line names the path, or the database, host and
  port; the state is consistent: fix it and run again; also the command's own output that
  cannot be written: "cannot write the output"),
  130 interrupted by Ctrl-C or SIGTERM (the state is consistent), 141 the output pipe was closed
"""


class UsageError(Exception):
    """A command line argparse refused: ``str(err)`` is one line (the CLI exits 2)."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``main`` prints ``tui-app: error: ...`` and
    exits 2) instead of argparse's usage block; its subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        """Refuse the command line with one line (instead of printing the usage and exiting).

        Raises:
            UsageError: ``message`` and where to read the usage.
        """
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def _non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _ratio(text: str) -> float:
    """An argparse type: a number from 0 up to (not including) 1."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {text}")
    return value


def _config_arg(parser: argparse.ArgumentParser, default: object = "config.toml") -> None:
    parser.add_argument(
        "--config", metavar="PATH", default=default, help="project config file (default: ./config.toml)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the README)."""
    parser = _Parser(
        prog="tui-app",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arg(parser)
    parser.add_argument(
        "--batch", action="store_true", help="run pending work headless instead of opening the TUI"
    )
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="open the TUI as a viewer and controller only: it runs no worker of its own (the workers "
        "already serving the project act on what you do)",
    )
    parser.add_argument(
        "--collection",
        metavar="NAME",
        action="append",
        default=[],
        help="with --batch: only this collection (repeatable; default: all)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="with --batch: queue failed items again before running"
    )
    parser.add_argument(
        "--limit", metavar="N", type=int, help="with --batch: generate at most N items per collection"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --batch: print a machine-readable summary on stdout (progress on stderr)",
    )
    parser.add_argument(
        "--progress-interval",
        metavar="S",
        type=float,
        default=5.0,
        help="with --batch: seconds between plain progress lines when stdout is not a terminal (default 5)",
    )
    parser.add_argument(
        "--workers",
        metavar="N",
        type=int,
        help=f"with --batch: N worker processes in all (default 1, at most {MAX_PROCESSES})",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    st = sub.add_parser(
        "status",
        help="show item counts per collection and status",
        description="Show item counts per collection and status, read from the project's state.",
    )
    _config_arg(st, argparse.SUPPRESS)
    st.add_argument("--json", action="store_true", help='print {"<collection>": {"<status>": count}}')
    st.add_argument(
        "--review",
        action="store_true",
        help='count the current takes\' review states: {"<collection>": {"unreviewed": n, "accepted": n, '
        '"rejected": n}} with --json',
    )
    st.add_argument(
        "--qa",
        action="store_true",
        help="list dataset entries whose current take has QA flags (silence, clipping, words/s)",
    )

    sy = sub.add_parser(
        "sync",
        help="compare the state file with the files on disk, and repair",
        description="Find every mismatch between the project's state and the output folders: "
        "missing files, files whose sha256 differs from their take, completed items without a "
        "take, files no take references. Without --fix nothing changes.",
    )
    _config_arg(sy, argparse.SUPPRESS)
    sy.add_argument("--check", action="store_true", help="exit 1 when anything is out of step")
    sy.add_argument(
        "--fix",
        action="store_true",
        help="repair: items go back to pending, stray files move to data/orphans/ (nothing is deleted)",
    )
    sy.add_argument("--quick", action="store_true", help="check that files exist, without re-hashing them")

    cl = sub.add_parser(
        "cleanup",
        help="delete superseded takes and orphaned files",
        description="Delete superseded takes beyond the newest N of each item (the current take is "
        "always kept) and everything sync moved to data/orphans/; report the bytes reclaimed.",
    )
    _config_arg(cl, argparse.SUPPRESS)
    cl.add_argument(
        "--keep", metavar="N", type=int, default=1, help="superseded takes to keep per item (default 1)"
    )
    cl.add_argument("--dry-run", action="store_true", help="only report what would be deleted")

    rv = sub.add_parser(
        "revert",
        help="make an earlier take the current one",
        description="Make take NUMBER of an item its current take again (see the takes in the "
        "TUI's detail pane).",
    )
    _config_arg(rv, argparse.SUPPRESS)
    rv.add_argument("target", metavar="COLLECTION")
    rv.add_argument("key", help="item key, e.g. arctic_a0001, page_003, astronaut.s1-balanced")
    rv.add_argument("take", type=int, help="take number")

    ex = sub.add_parser(
        "export",
        help="export completed takes: a dataset, a picture book, chosen variants",
        description="Export completed current takes atomically into OUT (which must not exist).",
    )
    _config_arg(ex, argparse.SUPPRESS)
    ex.add_argument("what", choices=list(KINDS), help="the collection kind to export")
    ex.add_argument("out", metavar="OUT", type=Path)
    ex.add_argument(
        "--format",
        choices=sorted({fmt for kind in KINDS.values() for fmt in kind.export_formats}),
        help="layout; "
        + "; ".join(f"{name}: {', '.join(kind.export_formats)}" for name, kind in KINDS.items())
        + " (the first is the default; ljspeech is wavs/ID.wav + metadata.csv ID|text|normalized)",
    )
    ex.add_argument(
        "--collection",
        dest="export_collection",
        metavar="NAME",
        help="which collection of that kind (default: the first)",
    )
    ex.add_argument(
        "--only-accepted",
        action="store_true",
        help="only takes accepted in review (tui-app review ... --accept, or the TUI)",
    )
    training = ex.add_argument_group("dataset exports for training")
    training.add_argument(
        "--exclude-flagged", action="store_true", help="leave out takes with a QA flag (tui-app status --qa)"
    )
    training.add_argument(
        "--trim-silence", action="store_true", help="cut leading and trailing silence, keeping --pad-s"
    )
    training.add_argument(
        "--pad-s",
        type=_non_negative_float,
        default=0.1,
        metavar="SECONDS",
        help="silence kept at each end when trimming (default 0.1)",
    )
    training.add_argument(
        "--loudness",
        type=float,
        dest="loudness_lufs",
        metavar="LUFS",
        help="normalize each clip's integrated loudness (ITU-R BS.1770) to this, e.g. -23",
    )
    training.add_argument(
        "--sample-rate", type=_positive_int, metavar="HZ", help="resample every clip to this rate, e.g. 22050"
    )
    training.add_argument(
        "--val-ratio",
        type=_ratio,
        default=0.0,
        metavar="R",
        help="put this share of the clips (0 to 1) in a validation set; the split is deterministic",
    )
    training.add_argument(
        "--seed", type=int, default=0, help="seed of the train/validation split (default 0)"
    )
    book = ex.add_argument_group("picture book exports")
    book.add_argument(
        "--page-size",
        choices=["a4", "letter", "square"],
        default="a4",
        help="the PDF's page size: A4, US Letter, or 8.5 in square (default a4)",
    )
    _worker_parsers(sub)
    mg = sub.add_parser(
        "migrate-state",
        help="copy the project's state to a PostgreSQL database or another SQLite file",
        description="Copy the project's state (items, takes, finals, batches, commands, events, pauses, "
        "the providers' shared state) into TARGET, which must be empty, and verify the copy: the row "
        "count of every table and the sha256 of every take. Stop the workers first (items left "
        "generating arrive pending). The current state is left as it was and config.toml is not "
        "changed: set [project] state to TARGET afterwards.",
    )
    _config_arg(mg, argparse.SUPPRESS)
    mg.add_argument(
        "--to",
        dest="target",
        metavar="TARGET",
        required=True,
        help="postgresql://USER@HOST:PORT/DATABASE (an existing database; no password in it), or a "
        "SQLite file path (going back to one machine)",
    )
    mg.add_argument(
        "--password-env",
        metavar="NAME",
        help="the environment variable holding the target database's password",
    )
    return parser


def _worker_parsers(sub: argparse._SubParsersAction) -> None:
    """``worker``, ``workers`` and the commands sent to running workers."""
    wk = sub.add_parser(
        "worker",
        help="serve the project until stopped (Ctrl-C or SIGTERM), woken by changes in the state",
        description="A long-running worker: it imports the sources, then generates what is pending and "
        "every request any process queues (regenerate, retry-failed, ...), until SIGINT or SIGTERM; then "
        "its in-flight items go back to pending and it exits 0. Several workers may serve one project.",
    )
    _config_arg(wk, argparse.SUPPRESS)
    wk.add_argument(
        "--collection",
        dest="worker_collection",
        metavar="NAME",
        action="append",
        default=[],
        help="only this collection (repeatable; default: all)",
    )
    wk.add_argument(
        "--workers",
        dest="worker_processes",
        metavar="N",
        type=int,
        help="N processes in all (default: one per core when every provider served is piper or pillow, "
        f"else 1; at most {MAX_PROCESSES})",
    )
    wk.add_argument(
        "--progress-interval",
        metavar="S",
        type=float,
        default=argparse.SUPPRESS,
        help="seconds between summary lines (default 5; a line only when the counts changed)",
    )
    # started by another process (--workers N): no import, stops with its parent; --drain: exit when idle
    wk.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    wk.add_argument("--drain", action="store_true", help=argparse.SUPPRESS)
    wk.add_argument("--limit", dest="worker_limit", type=int, help=argparse.SUPPRESS)

    ws = sub.add_parser(
        "workers",
        help="list the live workers",
        description="List the workers serving the project: id, host, pid, started, last heartbeat, "
        "items in flight, collections.",
    )
    _config_arg(ws, argparse.SUPPRESS)
    ws.add_argument(
        "--json",
        action="store_true",
        help="print a list of {id, host, pid, started, heartbeat, heartbeat_age_s, in_flight, collections}",
    )

    def keyed(name: str, help: str, description: str, *, many: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=description)
        _config_arg(cmd, argparse.SUPPRESS)
        cmd.add_argument("target", metavar="COLLECTION")
        cmd.add_argument("keys", metavar="KEY", nargs="+" if many else 1, help="item keys, e.g. arctic_a0001")
        return cmd

    queued = " It is durable at once and returns: running workers act on it within 0.1 s."
    rg = keyed(
        "regenerate",
        "queue items for a new take, ahead of the queue",
        "Queue items for a new take (the old takes are kept), served before the rest of the queue; "
        "requests within [project] debounce_ms of each other form one batch." + queued,
    )
    rg.add_argument(
        "--set",
        dest="overrides",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an override for the new take: emotion, speed (dataset); prompt, seed (pages); temperature, "
        "seed (variants)",
    )
    rg.add_argument(
        "--takes",
        type=_positive_int,
        default=1,
        metavar="N",
        help=f"make N new takes per item (at most {MAX_TAKES}), each with a seed of its own (pages, "
        "variants); all are kept: compare them, then tui-app review ... --accept --take K picks one",
    )
    rg.add_argument(
        "--sweep",
        metavar="NAME=V1,V2,...",
        help=f"one new take per value of one override (at most {MAX_TAKES} values), e.g. "
        "emotion=neutral,sad,happy or temperature=0.2,0.5,0.8",
    )
    keyed("cancel", "cancel queued or in-flight items", "Cancel queued or in-flight items." + queued)
    keyed(
        "front",
        "serve pending items next",
        "Move pending items to the front of the project's queue." + queued,
    )
    keyed(
        "choose",
        "choose a variant (the others of its photo are set aside)",
        "Choose a variant; a running worker builds its final." + queued,
        many=False,
    )
    rf = sub.add_parser(
        "retry-failed",
        help="queue the failed items again",
        description="Queue the failed items again, attempts reset." + queued,
    )
    _config_arg(rf, argparse.SUPPRESS)
    rf.add_argument("names", metavar="COLLECTION", nargs="*", help="default: every collection")
    for name, verb in (("pause", "Stop new starts of"), ("resume", "Lift the pause of")):
        ps = sub.add_parser(
            name,
            help=f"{verb.lower()} collections or providers (default: everything)",
            description=f"{verb} collections or providers (by name; none: everything), in every worker; "
            "in-flight items finish." + queued,
        )
        _config_arg(ps, argparse.SUPPRESS)
        ps.add_argument("names", metavar="NAME", nargs="*", help="a collection or provider name")
    rw = keyed(
        "review",
        "accept or reject the current takes of items",
        "Mark the current take of each item accepted or rejected (a new take starts unreviewed). "
        "Exports take --only-accepted; tui-app status --review counts the states.",
    )
    verdict = rw.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", dest="review_state", action="store_const", const="accepted")
    verdict.add_argument("--reject", dest="review_state", action="store_const", const="rejected")
    verdict.add_argument(
        "--clear", dest="review_state", action="store_const", const="unreviewed", help="back to unreviewed"
    )
    rw.add_argument("--note", metavar="TEXT", help="why (kept with the take's review)")
    rw.add_argument(
        "--take",
        type=_positive_int,
        metavar="N",
        help="review take N instead of the current one; accepting it makes it current (pick a sweep's best)",
    )
    rw.add_argument(
        "--regenerate",
        action="store_true",
        help="with --reject: also queue the items for a new take, in the same command",
    )


def _error(message: str) -> int:
    """Print ``tui-app: error: MESSAGE`` on stderr (see :func:`_say`); the exit code 2."""
    _say(f"tui-app: error: {message}")
    return int(ExitCode.USAGE)


def _out(*values: object, file: TextIO | None = None) -> None:
    """``print`` for a command's output (stdout, or ``file``).

    Raises:
        OutputError: the stream cannot be written (disk full, I/O error).
    """
    with writing():
        print(*values, file=file or sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tui-app`` console script; returns the exit code.

    First installs the process's signal handling (:mod:`tui_app.signals`: SIGINT and SIGTERM take
    the same path), then runs the command. Whatever the command, at any moment, start-up included:
    an interruption exits 130, a closed output pipe 141 and a storage failure (a full or read-only
    disk under the state file or an output folder) 74 with one line naming the path and the cause,
    an output stream that cannot be written (``> /dev/full``) 74 with ``cannot write the output``;
    none of them prints a traceback. A bad command line is one line and exit 2 (no usage block).
    """
    where = _Where()
    from . import signals

    try:
        try:
            signals.install()
            code = _command(argv, where)
            with writing():  # a closed pipe or a full disk shows here, not in the final flush (ignored)
                sys.stdout.flush()
                sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - _ending re-raises what it does not know
            code = _ending(exc, where)
        signals.finish()  # from here on a signal ends the process at once, with exit code 130
    except KeyboardInterrupt:  # a first signal while ending another way: interrupted all the same
        code = int(ExitCode.INTERRUPTED)
    finally:
        signals.finish()
    return code


class _Where:
    """What :func:`main` knows of the command when it ends early: the config, once loaded."""

    config: Config | None = None


def _ending(exc: BaseException, where: _Where) -> int:
    """The exit code for a command ended by ``exc`` (searched inside exception groups too): an
    interruption (130), a closed output pipe (141) or a storage failure (74, one line on stderr),
    which includes a PostgreSQL state's server unreachable or lost (74) or refusing (2: a failed
    login, a missing database; see :mod:`tui_app.storage_errors`).

    Raises:
        BaseException: ``exc`` itself when it is none of those (``SystemExit`` from argparse, a bug).
    """
    from . import signals
    from .storage_errors import storage_error

    got = signals.received()
    # a signal can come wrapped (Python 3.11 wraps an exception raised in __set_name__ while a class
    # is made, as during an import) or be followed by errors in code it cut short: after a signal,
    # an ending that is not a storage failure or a closed pipe is the interruption
    output = _find(exc, OutputError)
    problem = None
    if output is None:
        problem = storage_error(exc, path=where.config.state_location if where.config is not None else None)
    pipe = _find(exc, BrokenPipeError)
    if _find(exc, KeyboardInterrupt) is not None or (
        got and problem is None and pipe is None and output is None
    ):
        by = f" by {signals.signal_name(got[0])}" if got else ""
        _say(f"tui-app: interrupted{by}; the state is consistent, run again to continue")
        return int(ExitCode.INTERRUPTED)
    if output is not None:  # the output's own disk or device, not the state's: say which
        _say(f"tui-app: error: {output}")
        return int(ExitCode.STORAGE)
    if problem is not None:
        _say(f"tui-app: error: {problem.line()}")
        return problem.exit_code
    if pipe is not None:
        signals.silence_closed_output()
        return int(ExitCode.BROKEN_PIPE)
    raise exc


def _find(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` when it is a ``kind``, else the first ``kind`` inside it (exception groups) or behind
    it (its ``__cause__`` and ``__context__``)."""
    from .storage_errors import find_exception

    return find_exception(exc, lambda e: e if isinstance(e, kind) else None, chained=True)


def _say(line: str) -> None:
    """Print one line on stderr, its control characters escaped (a file or key named with an escape
    sequence cannot act on the terminal); a closed stderr is no reason to fail."""
    try:
        print(escape_controls(line), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _command(argv: Sequence[str] | None, where: _Where) -> int:
    """Parse the command line, load the config (kept in ``where``), run the command; its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _error(str(exc))
    batch_only = [
        flag
        for flag, on in (
            ("--collection", bool(args.collection)),
            ("--retry-failed", args.retry_failed),
            ("--limit", args.limit is not None),
            ("--workers", args.workers is not None),
        )
        if on
    ]
    if batch_only and not args.batch:
        return _error(f"{', '.join(batch_only)} only work with --batch")
    if args.no_worker and (args.batch or args.command):
        return _error("--no-worker works when opening the TUI only")
    if args.limit is not None and args.limit < 1:
        return _error("--limit must be at least 1")
    for flag in ("workers", "worker_processes"):
        n = getattr(args, flag, None)
        if n is not None and n < 1:
            return _error("--workers must be at least 1")
        if n is not None and n > MAX_PROCESSES:
            return _error(f"--workers {n}: at most {MAX_PROCESSES} processes")
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        return _error(str(exc))
    where.config = config
    chosen = [*args.collection, *getattr(args, "worker_collection", [])]
    unknown = [c for c in chosen if c not in config.collections]
    if unknown:
        return _error(f"unknown collection {unknown[0]!r} (configured: {', '.join(config.collections)})")

    if args.command == "status":
        if args.review and args.qa:
            return _error("status takes --review or --qa, not both")
        if args.review:
            return _review_status(config, args.json)
        return _status(config, args.json, args.qa)
    if args.command == "sync":
        return _sync(config, args)
    if args.command == "cleanup":
        return _cleanup(config, args)
    if args.command == "revert":
        return _revert(config, args)
    if args.command == "export":
        return _export(config, args)
    if args.command == "worker":
        return _worker(config, args)
    if args.command == "workers":
        return _workers(config, args.json)
    if args.command == "migrate-state":
        return _migrate_state(config, args.target, args.password_env)
    if args.command in _COMMANDS:
        return _apply(config, args)
    if args.batch:
        return _batch(config, args)
    if args.json:
        return _error("--json works with --batch or status")
    return _tui(config, worker=not args.no_worker)


def _batch(config: Config, args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .providers import ProviderError
    from .sources import SourceError

    try:
        result = run_batch(
            config,
            collections=args.collection,
            retry_failed=args.retry_failed,
            limit=args.limit,
            as_json=args.json,
            progress_interval_s=max(0.1, args.progress_interval),
            workers=args.workers or 1,
        )
    except SourceError as exc:
        return _error(str(exc))
    except ProviderError as exc:
        return _error(exc.message)
    if result.error:  # a storage failure stopped the run: the summary is out, now the one line
        _say(f"tui-app: error: {result.error}")
    return result.exit_code


#: The hint on stderr of the commands that only read (``status``, ``workers``) on a project that never ran.
_NO_STATE = "no state file yet: run `tui-app --batch` or open the TUI"


def _no_state(config: Config) -> str:
    """:data:`_NO_STATE`, or its PostgreSQL form (a database without this project's items)."""
    return _NO_STATE if config.state_uri is None else _NO_STATE.replace("state file", "items in the database")


def _status(config: Config, as_json: bool, qa: bool = False) -> int:
    from .project import NoStateError, Project, any_items, empty_counts

    try:
        with Project.open(config, must_exist=True) as project:
            flagged = project.qa_report() if qa else {}
            counts = project.counts()
    except NoStateError:
        flagged, counts = {}, empty_counts(config)
        if qa or as_json:  # the table's own hint comes below it
            _out(_no_state(config), file=sys.stderr)
    if qa:
        if as_json:
            shape = {
                c: {k: {"flags": f["flags"], "qa": f["qa"]} for k, f in takes.items()}
                for c, takes in flagged.items()
            }
            _out(json.dumps(shape, indent=2))
        else:
            for name, takes in flagged.items():
                for key, found in takes.items():
                    _out(f"{name}/{key}: {', '.join(found['flags'])}: {'; '.join(found['why'])}")
            n = sum(len(takes) for takes in flagged.values())
            _out(f"{n} {'take' if n == 1 else 'takes'} flagged", file=sys.stderr)
        return int(ExitCode.OK)

    if as_json:
        _out(json.dumps(counts, indent=2))
        return int(ExitCode.OK)
    from .store import STATUSES

    _print_counts(f"tui_app status: {config.state_location}", counts, STATUSES, total=True)
    if config.state_uri is None and not config.state_path.exists():
        _out(_NO_STATE, file=sys.stderr)
    elif not any_items(counts):
        _out("no items yet: run `tui-app --batch` or open the TUI", file=sys.stderr)
    return int(ExitCode.OK)


def _review_status(config: Config, as_json: bool) -> int:
    """``status --review``: per collection, how many current takes are unreviewed, accepted, rejected."""
    from .project import NoStateError, Project
    from .store import REVIEW_STATES

    names = list(config.collections)
    try:
        with Project.open(config, must_exist=True) as project:
            counts = project.store.review_counts(names)
    except NoStateError:
        counts = {n: dict.fromkeys(REVIEW_STATES, 0) for n in names}
        _out(_no_state(config), file=sys.stderr)
    if as_json:
        _out(json.dumps(counts, indent=2))
        return int(ExitCode.OK)
    _print_counts(f"tui_app review: {config.state_location}", counts, REVIEW_STATES)
    return int(ExitCode.OK)


def _print_counts(
    title: str, counts: dict[str, dict[str, int]], columns: Sequence[str], *, total: bool = False
) -> None:
    """A table of ``counts`` (``{collection: {column: n}}``), one row per collection."""
    from rich.table import Table

    from .signals import console

    table = Table(title=title)
    table.add_column("collection")
    for column in columns:
        table.add_column(column, justify="right")
    if total:
        table.add_column("total", justify="right")
    for name, c in counts.items():
        table.add_row(name, *(str(c[k]) for k in columns), *([str(sum(c.values()))] if total else []))
    console().print(table)  # its stream raises OutputError when it cannot be written


def _maintain(config: Config, work: Callable[[Project], int]) -> int:
    """Open the existing project, run ``work``; a project without state exits 2.

    Safe beside running workers: every change is a guarded transaction (see the README).
    """
    from .project import NoStateError, Project

    try:
        with Project.open(config, must_exist=True) as project:
            return work(project)
    except NoStateError as exc:
        return _error(str(exc))


def _sync(config: Config, args: argparse.Namespace) -> int:
    def work(project: Project) -> int:
        findings = project.sync(fix=args.fix, verify_hashes=not args.quick)
        for finding in findings:
            _out(finding.line(fixed=args.fix))
        verb = "fixed" if args.fix else "found"
        _out(
            f"{len(findings)} mismatches {verb}" if findings else "disk and state are in step",
            file=sys.stderr,
        )
        return int(ExitCode.FAILED) if (args.check and findings) else int(ExitCode.OK)

    return _maintain(config, work)


def _cleanup(config: Config, args: argparse.Namespace) -> int:
    if args.keep < 0:
        return _error("--keep must be at least 0")

    def work(project: Project) -> int:
        report = project.cleanup(keep=args.keep, dry_run=args.dry_run)
        for line in report.lines:
            _out(("would delete " if args.dry_run else "deleted ") + line)
        verb = "would reclaim" if args.dry_run else "reclaimed"
        _out(
            f"{report.takes} superseded takes, {report.files} files: {verb} {report.bytes / 1e6:.2f} MB "
            f"({report.bytes} bytes)"
        )
        return int(ExitCode.OK)

    return _maintain(config, work)


def _revert(config: Config, args: argparse.Namespace) -> int:
    from . import commands

    def work(project: Project) -> int:
        try:
            outcome = commands.revert(project, args.target, args.key, args.take)
        except commands.CommandError as exc:
            return _error(str(exc))
        return _print(outcome)

    return _maintain(config, work)


#: The commands sent to the project's workers through the store (:mod:`tui_app.commands`).
_COMMANDS = ("regenerate", "cancel", "front", "choose", "retry-failed", "pause", "resume", "review")


def _apply(config: Config, args: argparse.Namespace) -> int:
    """Apply one command of :data:`_COMMANDS`: print what it queued (stdout) and its notes (stderr)."""
    from . import commands
    from .sources import SourceError

    def apply(project: Project) -> commands.Outcome:
        if args.command == "regenerate":
            return commands.regenerate(
                project, args.target, args.keys, args.overrides, takes=args.takes, sweep=args.sweep
            )
        if args.command == "cancel":
            return commands.cancel(project, args.target, args.keys)
        if args.command == "front":
            return commands.front(project, args.target, args.keys)
        if args.command == "choose":
            return commands.choose(project, args.target, args.keys[0])
        if args.command == "retry-failed":
            return commands.retry_failed(project, args.names)
        if args.command == "pause":
            return commands.pause(project, args.names)
        if args.command == "review":
            if args.regenerate and args.review_state != "rejected":
                raise commands.CommandError("--regenerate goes with --reject")
            return commands.review(
                project,
                args.target,
                args.keys,
                args.review_state,
                note=args.note,
                take=args.take,
                regenerate_rejected=args.regenerate,
            )
        return commands.resume(project, args.names)

    try:
        with commands.open_project(config) as project:
            outcome = apply(project)
    except (commands.CommandError, SourceError) as exc:
        return _error(str(exc))
    return _print(outcome)


def _print(outcome: Outcome) -> int:
    """Print a command's :class:`~tui_app.commands.Outcome`: its lines on stdout, its notes on stderr."""
    for line in outcome.lines:
        _out(line)
    for note in outcome.notes:
        _out(note, file=sys.stderr)
    return int(ExitCode.OK)


def _worker(config: Config, args: argparse.Namespace) -> int:
    from .providers import ProviderError
    from .sources import SourceError
    from .workers import run_worker

    try:
        return run_worker(
            config,
            args.worker_collection,
            processes=args.worker_processes,
            child=args.child,
            drain=args.drain,
            limit=args.worker_limit,
            progress_interval_s=max(0.1, args.progress_interval),
        )
    except SourceError as exc:
        return _error(str(exc))
    except ProviderError as exc:
        return _error(exc.message)


def _workers(config: Config, as_json: bool) -> int:
    from .commands import workers_lines, workers_report
    from .project import NoStateError, Project

    try:
        with Project.open(config, must_exist=True) as project:
            report = workers_report(project)
    except NoStateError:
        report = []
        _out(_no_state(config), file=sys.stderr)
    _out(json.dumps(report, indent=2) if as_json else "\n".join(workers_lines(report)))
    return int(ExitCode.OK)


def _migrate_state(config: Config, target_text: str, password_env: str | None) -> int:
    """``migrate-state --to TARGET``: copy the state, print what was copied and verified (stdout) and
    the notes (stderr); a refused target exits 2, an unreachable one 74 (see :mod:`.storage_errors`)."""
    from . import commands

    try:
        target = commands.migration_target(config, target_text, password_env)
    except commands.CommandError as exc:
        return _error(str(exc))

    def work(project: Project) -> int:
        try:
            outcome = commands.migrate_state(project, target, password_env)
        except commands.CommandError as exc:
            return _error(str(exc))
        return _print(outcome)

    return _maintain(config, work)


def _export(config: Config, args: argparse.Namespace) -> int:
    from .exports import ExportError, ExportOptions

    def work(project: Project) -> int:
        try:
            options = ExportOptions(
                only_accepted=args.only_accepted,
                exclude_flagged=args.exclude_flagged,
                trim_silence=args.trim_silence,
                pad_s=args.pad_s,
                loudness_lufs=args.loudness_lufs,
                sample_rate=args.sample_rate,
                val_ratio=args.val_ratio,
                seed=args.seed,
                page_size=args.page_size,
            )
            report = project.export(
                args.what, args.out, fmt=args.format, collection=args.export_collection, options=options
            )
        except ExportError as exc:
            return _error(str(exc))
        _out(report.summary())
        for note in report.notes:
            _out(f"  note: {note}")
        for key, reason in report.skipped[:20]:
            _out(f"  skipped {key}: {reason}")
        if len(report.skipped) > 20:
            _out(f"  ... and {len(report.skipped) - 20} more skipped")
        return int(ExitCode.OK)

    return _maintain(config, work)


def _tui(config: Config, *, worker: bool = True) -> int:
    try:
        from .tui.app import run_app
    except ImportError as exc:
        return _error(f"the TUI cannot start ({exc}); use --batch for headless runs")
    return run_app(config, worker=worker)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
