"""The headless command layer: each function applies one command to an open project and returns what
to print; the CLI (``tui-app regenerate``, ``pause``, ...) and the TUI both use it.

A command is durable once its function returns: it is a transaction in the store, and the running
workers, which watch the store (SQLite: ``PRAGMA data_version``, 10 Hz; PostgreSQL: ``LISTEN``
for its ``NOTIFY``, with a 1 s poll as the fallback), act on it within 0.1 s, whatever
process sent it. Nothing here waits for a worker: with none running the command still applies and
its outcome says so. Every command is also appended to the store's command log
(:meth:`~tui_app.store.base.Store.record_command`: kind, arguments, ``HOST:PID`` of the sender and
the line it printed).

A command that cannot apply (an unknown collection, key or override, a take that does not exist, a
file that fails its sha256 check) raises :class:`CommandError` with one line, before anything changes.

No Textual here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine import REGENERATE_PRIORITY, RETRY_PRIORITY
from .files import IntegrityError
from .kinds import get_kind
from .kinds.base import Kind
from .project import HOST, Project, stale_workers
from .providers import PROVIDER_KINDS
from .settings import MAX_SEED, MAX_TAKES, Config
from .storage_errors import storage_error
from .store import (
    ENV_NAME,
    POSTGRES_EXTRA,
    REVIEW_STATES,
    Item,
    UriProblem,
    Worker,
    check_postgres_uri,
    copy_state,
    is_postgres_uri,
    open_store,
)

#: What a command says when no live worker would act on it.
NO_WORKER = "no worker is running: start one with tui-app worker (or tui-app --batch)"
#: How many keys a printed line names before it says "and N more".
SHOWN_KEYS = 10


class CommandError(Exception):
    """A command that cannot apply: ``str(err)`` is one line (the CLI exits 2); nothing was changed."""


@dataclass
class Outcome:
    """What a command did.

    Attributes:
        lines: what it did, one line each (the CLI prints them on stdout).
        notes: advice and warnings (no worker running, a pause still in force; on stderr).
    """

    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_project(config: Config) -> Project:
    """Open the project for a command: the existing state, or, on a project that never ran (no
    state file; with PostgreSQL, a database without items), a new state with the sources imported
    (so commands work before the first run).

    Raises:
        SourceError: a new project's source is malformed (nothing has been written).
        StorageError: the state cannot be opened (a :class:`~tui_app.storage_errors.DatabaseError`
            for an unreachable or refusing PostgreSQL server; raised as psycopg's own error).
    """
    return Project.open(config) if Project.has_state(config) else Project.start(config)


def origin() -> str:
    """Who sends a command: ``HOST:PID`` of this process."""
    return f"{HOST}:{os.getpid()}"


def live_workers(project: Project) -> list[Worker]:
    """The workers serving the project now (registered, renewing, their process alive), oldest first."""
    workers = project.store.workers()
    gone = set(stale_workers(workers, project.config.lease_s))
    return [w for w in workers if w.id not in gone]


def workers_report(project: Project, now: float | None = None) -> list[dict[str, Any]]:
    """The live workers as ``tui-app workers --json`` prints them: ``id``, ``host``, ``pid``, ``started``
    and ``heartbeat`` (unix times), ``heartbeat_age_s``, ``in_flight`` (items it holds a lease on) and
    ``collections``."""
    now = time.time() if now is None else now
    return [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "started": round(w.started_at, 3),
            "heartbeat": round(w.heartbeat_at, 3),
            "heartbeat_age_s": round(max(0.0, now - w.heartbeat_at), 3),
            "in_flight": w.in_flight,
            "collections": list(w.collections),
        }
        for w in live_workers(project)
    ]


def workers_lines(report: Sequence[Mapping[str, Any]], now: float | None = None) -> list[str]:
    """``tui-app workers`` as text: a header and one aligned line per worker (or one line: none)."""
    if not report:
        return ["no worker is running"]
    now = time.time() if now is None else now
    rows = [("ID", "HOST", "PID", "STARTED", "HEARTBEAT", "IN FLIGHT", "COLLECTIONS")]
    for w in report:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(w["started"]))
        rows.append(
            (
                str(w["id"]),
                str(w["host"]),
                str(w["pid"]),
                f"{started} ({_age(now - w['started'])} ago)",
                f"{w['heartbeat_age_s']:.1f} s ago",
                str(w["in_flight"]),
                ", ".join(w["collections"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------- helpers


def _collection(project: Project, name: str) -> str:
    if name not in project.config.collections:
        raise CommandError(
            f"unknown collection {name!r} (configured: {', '.join(project.config.collections)})"
        )
    return name


def _items(project: Project, collection: str, keys: Iterable[str | int]) -> list[Item]:
    """The items of ``keys`` (item keys, or item ids as the TUI's rows give them), in the order
    given, each once.

    Raises:
        CommandError: an unknown collection, key or id.
    """
    _collection(project, collection)
    out: list[Item] = []
    seen: set[str | int] = set()
    for key in keys:
        if key in seen:
            continue
        seen.add(key)
        if isinstance(key, int):
            item = project.store.get_item(key)
            item = item if item is not None and item.collection == collection else None
        else:
            item = project.store.find_item(collection, key)
        if item is None:
            raise CommandError(f"no item {key!r} in collection {collection!r}")
        out.append(item)
    return out


def _keys(keys: Sequence[str]) -> str:
    """``a, b, c`` (the first :data:`SHOWN_KEYS`, then ``and N more``)."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    return shown + (f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _serving_notes(project: Project, collections: Sequence[str]) -> list[str]:
    """Why nothing may act on a command soon: no live worker, none serving a collection, a pause."""
    notes = []
    live = live_workers(project)
    if not live:
        notes.append(NO_WORKER)
    else:
        unserved = [c for c in collections if not any(c in w.collections for w in live)]
        if unserved:
            notes.append(
                f"no running worker serves {', '.join(unserved)}: "
                f"start one with tui-app worker --collection {unserved[0]}"
            )
    paused = project.store.paused()
    for name in collections:
        held = sorted(paused & {"*", name, project.config.collections[name].provider})
        if held:
            notes.append(f"{name} waits: {', '.join(map(_what, held))} paused ({_resume_hint(held)})")
    return notes


def _resume_hint(names: Sequence[str]) -> str:
    """The command that lifts the pauses of ``names``."""
    return " ".join(["tui-app resume", *(n for n in names if n != "*")])


def _record(project: Project, kind: str, args: Mapping[str, Any], outcome: Outcome) -> Outcome:
    """Append the command to the store's command log, with the lines it printed."""
    project.store.record_command(kind, args, origin(), "\n".join(outcome.lines))
    return outcome


def parse_overrides(
    kind: Kind, collection: str, assignments: Sequence[str], max_chars: int = 2000, *, option: str = "--set"
) -> dict:
    """``--set NAME=VALUE`` arguments as the overrides of a regenerate, checked against the kind's
    :attr:`~tui_app.kinds.base.Kind.override_fields` (``emotion``, ``speed``; ``prompt``, ``seed``;
    ``temperature``, ``seed``). A ``seed`` is an integer from 0 to 2147483647
    (:data:`~tui_app.settings.MAX_SEED`). ``option`` is the option the messages name (``--sweep``
    for the values of a sweep).

    Raises:
        CommandError: not ``NAME=VALUE``, a name the kind does not take, an empty or invalid value
            (a seed out of range), a control character, or a text longer than ``max_chars``.
    """
    fields = {f.name: f for f in kind.override_fields}
    out: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise CommandError(f"{option} {assignment!r}: expected NAME=VALUE")
        spec = fields.get(name)
        if spec is None:
            takes = ", ".join(fields) or "no overrides"
            raise CommandError(f"{option} {name}: {collection} ({kind.name}) takes {takes}")
        if not value.strip():
            raise CommandError(f"{option} {name}: needs a value")
        bad = next((ch for ch in value if unicodedata.category(ch) == "Cc" and ch != "\t"), None)
        if bad is not None:
            raise CommandError(f"{option} {name}: holds a control character (U+{ord(bad):04X})")
        if len(value) > max_chars:
            raise CommandError(
                f"{option} {name}: {len(value)} characters long (max_text_chars = {max_chars})"
            )
        try:
            out[name] = spec.parse(value)  # a seed: settings.parse_seed (0 to MAX_SEED)
        except (ValueError, TypeError):
            hint = f"an integer from 0 to {MAX_SEED}" if name == "seed" else spec.placeholder
            raise CommandError(f"{option} {name}={value!r}: not a valid value ({hint})") from None
    return out


def _check_provider_params(project: Project, collection: str, params: Mapping[str, Any]) -> None:
    """Refuse parameters the collection's provider cannot honour (e.g. an emotion Piper has no
    settings for), through its module's optional ``check_params(config, params)``.

    Raises:
        CommandError: one line naming the parameter.
    """
    pc = project.config.providers[project.config.collections[collection].provider]
    check = getattr(PROVIDER_KINDS[pc.kind].load(), "check_params", None)
    if check is not None:
        try:
            check(pc, params)
        except ValueError as exc:
            raise CommandError(f"{collection}: {exc}") from None


# ---------------------------------------------------------------------- commands


def regenerate(
    project: Project,
    collection: str,
    keys: Sequence[str | int],
    assignments: Sequence[str] = (),
    *,
    overrides: Mapping[str, Any] | None = None,
    takes: int = 1,
    sweep: str | None = None,
) -> Outcome:
    """Queue the items of ``keys`` for a new take, before the rest of the queue, with the overrides
    ``assignments`` (``NAME=VALUE``, parsed here) or ``overrides`` (already parsed, as the TUI's
    dialog gives them). Requests within ``[project] debounce_ms`` of each other, from any process,
    form one batch, served once the window closes.

    A sweep makes several takes per item, all kept: ``takes`` N > 1 makes N, each with a seed of
    its own (kinds with a seed); ``sweep`` ``NAME=V1,V2,...`` makes one take per value of one
    override (e.g. ``emotion=neutral,sad,happy``, ``speed=0.9,1,1.1``, ``temperature=0.2,0.5,0.8``).

    Raises:
        CommandError: an unknown collection, key or override; a sweep of a kind without that
            override, ``takes`` below 1 or not matching the sweep's values, or ``takes`` > 1 on a
            kind without seeds and no sweep.
    """
    items = _items(project, collection, keys)
    coll = project.config.collections[collection]
    kind = get_kind(coll.kind)
    max_chars = int(coll.params.get("max_text_chars", 2000))
    overrides = {
        **parse_overrides(kind, collection, assignments, max_chars),
        **(overrides or {}),
    }
    _check_provider_params(project, collection, overrides)
    plan = sweep_plan(kind, collection, takes, sweep, max_chars)
    for step in plan or []:
        _check_provider_params(project, collection, {**overrides, **step})
    batch_id, queued = project.store.regenerate(
        [i.id for i in items],
        debounce_s=project.config.debounce_s,
        priority=REGENERATE_PRIORITY,
        overrides=overrides,
        sweep=plan,
    )
    done = [i.key for i in queued]
    with_ = f" with {', '.join(f'{k}={v}' for k, v in overrides.items())}" if overrides else ""
    what = "a new take"
    if plan:
        what = f"{len(plan)} new takes" + (f" ({sweep})" if sweep else " (a seed each)")
    outcome = Outcome(
        [f"{collection}: {_keys(done)} queued for {what}{with_} (batch {batch_id}, ahead of the queue)"]
        if done
        else [f"{collection}: nothing queued"]
    )
    missed = [i.key for i in items if i.key not in set(done)]
    if missed:
        outcome.notes.append(f"{_keys(missed)}: no longer in the source, not queued")
    outcome.notes += _serving_notes(project, [collection])
    args: dict[str, Any] = {"collection": collection, "keys": [i.key for i in items], "overrides": overrides}
    if plan:
        args["sweep"] = plan
    return _record(project, "regenerate", args, outcome)


def sweep_plan(
    kind: Kind, collection: str, takes: int = 1, sweep: str | None = None, max_chars: int = 2000
) -> list[dict[str, Any]] | None:
    """The overrides of each take of a sweep (see :func:`regenerate`), or None for one take.

    Raises:
        CommandError: see :func:`regenerate`.
    """
    if takes < 1:
        raise CommandError(f"--takes must be 1 or more, not {takes}")
    if takes > MAX_TAKES:
        raise CommandError(f"--takes {takes}: at most {MAX_TAKES} new takes per item")
    if sweep is None:
        if takes == 1:
            return None
        if not any(f.name == "seed" for f in kind.override_fields):
            sweepable = ", ".join(f.name for f in kind.override_fields)
            raise CommandError(
                f"{collection} ({kind.name}) takes have no seed, so {takes} takes would be the same: "
                f"sweep a parameter instead (--sweep NAME=V1,V2,...; {sweepable})"
            )
        return [{} for _ in range(takes)]
    name, sep, values = sweep.partition("=")
    name = name.strip()
    steps = [v.strip() for v in values.split(",")]
    if not sep or not name or len(steps) < 2 or not all(steps):
        raise CommandError(f"--sweep {sweep!r}: expected NAME=V1,V2,... (two values or more)")
    if len(steps) > MAX_TAKES:
        raise CommandError(f"--sweep {name}: {len(steps)} values, at most {MAX_TAKES} new takes per item")
    if takes not in (1, len(steps)):
        raise CommandError(f"--takes {takes} does not match the {len(steps)} values of --sweep {name}")
    return [parse_overrides(kind, collection, [f"{name}={v}"], max_chars, option="--sweep") for v in steps]


def cancel(project: Project, collection: str, keys: Sequence[str | int]) -> Outcome:
    """Cancel the queued or in-flight items of ``keys`` (an in-flight result is discarded; the worker
    holding it drops it within 0.1 s).

    Raises:
        CommandError: an unknown collection or key.
    """
    items = _items(project, collection, keys)
    open_ = [i for i in items if i.status in ("pending", "generating")]
    n = project.cancel([i.id for i in open_])
    outcome = Outcome([f"{collection}: {_plural(n, 'item')} cancelled ({_keys([i.key for i in open_])})"])
    if not n:
        outcome.lines = [f"{collection}: nothing queued or in flight to cancel"]
    for item in items:
        if item not in open_:
            outcome.notes.append(f"{item.key} is {item.status}: nothing queued or in flight to cancel")
    return _record(project, "cancel", {"collection": collection, "keys": [i.key for i in items]}, outcome)


def retry_failed(project: Project, names: Sequence[str] = ()) -> Outcome:
    """Queue the failed items of the collections ``names`` (all when empty) again, attempts reset, as
    one ``retry`` batch served before the rest of the queue.

    Raises:
        CommandError: an unknown collection.
    """
    names = [_collection(project, n) for n in names] or list(project.config.collections)
    counts = project.store.counts(names)
    n = 0
    if any(counts[c]["failed"] for c in names):
        batch = project.store.create_batch("retry", "retry failed")
        n = project.store.reset_failed(names, batch, priority=RETRY_PRIORITY)
    if n:
        per = ", ".join(f"{c} {counts[c]['failed']}" for c in names if counts[c]["failed"])
        outcome = Outcome([f"{_plural(n, 'failed item')} queued again ({per})"])
        outcome.notes += _serving_notes(project, [c for c in names if counts[c]["failed"]])
    else:
        outcome = Outcome([f"no failed items in {', '.join(names)}"])
    return _record(project, "retry-failed", {"collections": names}, outcome)


def _pause_targets(project: Project, names: Sequence[str]) -> list[str]:
    known = set(project.config.collections) | set(project.config.providers)
    for name in names:
        if name not in known and name != "*":
            colls, providers = ", ".join(project.config.collections), ", ".join(project.config.providers)
            raise CommandError(
                f"unknown collection or provider {name!r} (collections: {colls}; providers: {providers})"
            )
    return list(dict.fromkeys(names)) or ["*"]


def _what(name: str) -> str:
    return "everything" if name == "*" else name


def pause(project: Project, names: Sequence[str] = ()) -> Outcome:
    """Pause the collections or providers ``names`` (everything when empty): no new item of theirs
    starts, by any worker, from the next claim on; in-flight items finish.

    Raises:
        CommandError: a name that is neither a collection nor a provider.
    """
    targets = _pause_targets(project, names)
    done = project.store.pause(targets)
    lines = [
        f"paused {_what(n)}: no new item starts, in-flight items finish ({_resume_hint([n])})" for n in done
    ]
    lines += [f"{_what(n)} was already paused" for n in targets if n not in done]
    outcome = Outcome(lines)
    if done and not live_workers(project):
        outcome.notes.append(NO_WORKER)
    return _record(project, "pause", {"names": targets}, outcome)


def resume(project: Project, names: Sequence[str] = ()) -> Outcome:
    """Lift the pauses of ``names`` (every pause when empty).

    Raises:
        CommandError: a name that is neither a collection nor a provider.
    """
    targets = _pause_targets(project, names)
    done = project.store.resume(targets)
    outcome = Outcome([f"resumed {_what(n)}" for n in done])
    outcome.lines += [f"{_what(n)} was not paused" for n in targets if n not in done and n != "*"]
    if targets == ["*"] and not done:
        outcome.lines.append("nothing was paused")
    still = sorted(project.store.paused())
    if still:
        what = ", ".join(_what(n) for n in still)
        outcome.notes.append(f"still paused: {what} (tui-app resume with no name lifts every pause)")
    if done and not live_workers(project):
        outcome.notes.append(NO_WORKER)
    return _record(project, "resume", {"names": targets}, outcome)


def front(project: Project, collection: str, keys: Sequence[str | int]) -> Outcome:
    """Serve the pending items of ``keys`` next, before everything else queued in the project.

    Raises:
        CommandError: an unknown collection or key.
    """
    items = _items(project, collection, keys)
    pending = [i for i in items if i.status == "pending"]
    n = project.store.front([i.id for i in pending]) if pending else 0
    outcome = Outcome(
        [f"{collection}: {_keys([i.key for i in pending])} moved to the front of the queue"]
        if n
        else [f"{collection}: nothing pending to move"]
    )
    for item in items:
        if item.status != "pending":
            outcome.notes.append(
                f"{item.key} is {item.status}: only pending items move "
                f"(tui-app regenerate {collection} {item.key} queues a new take first)"
            )
    if n:
        outcome.notes += _serving_notes(project, [collection])
    return _record(project, "front", {"collection": collection, "keys": [i.key for i in items]}, outcome)


def choose(project: Project, collection: str, key: str) -> Outcome:
    """Choose a variant: the other variants of its photo are set aside (their finals deleted); a
    running worker builds its final (an upscale of its current take).

    Raises:
        CommandError: an unknown collection or key, a collection whose kind has no choice, an item
            without a completed take, or a take file that fails its sha256 check.
    """
    _collection(project, collection)
    kind = get_kind(project.config.collections[collection].kind)
    if not kind.choosable:
        raise CommandError(f"{collection} is a {kind.name} collection: choose works on variants")
    (item,) = _items(project, collection, [key])
    try:
        choice = project.choose(item.id)
    except IntegrityError as exc:
        raise CommandError(str(exc)) from None
    aside = _plural(len(choice.aside), "other variant")
    outcome = Outcome([f"{collection}/{key} chosen; {aside} of its photo set aside"])
    outcome.notes += [f"its final is built by a running worker; {n}" for n in _serving_notes(project, [])]
    return _record(project, "choose", {"collection": collection, "key": key}, outcome)


def review(
    project: Project,
    collection: str,
    keys: Sequence[str | int],
    state: str,
    *,
    note: str | None = None,
    take: int | None = None,
    regenerate_rejected: bool = False,
) -> Outcome:
    """Mark the current takes of ``keys`` (or their take ``take``) ``accepted`` or ``rejected``
    (``unreviewed`` clears a review). Accepting a take that is not current makes it current (a sweep's
    pick). With ``regenerate_rejected``, rejected items are also queued for a new take (as
    :func:`regenerate`), in the same command.

    Raises:
        CommandError: an unknown collection or key, a bad state, a note with a control character.
    """
    if state not in REVIEW_STATES:
        raise CommandError(f"unknown review state {state!r} (one of {', '.join(REVIEW_STATES)})")
    if note is not None:
        bad = next((ch for ch in note if unicodedata.category(ch) == "Cc"), None)
        if bad is not None:
            raise CommandError(f"--note holds a control character (U+{ord(bad):04X})")
    items = _items(project, collection, keys)
    done: list[str] = []
    reviewed: list[Item] = []
    outcome = Outcome()
    for item in items:
        if take is not None and state == "accepted":
            # it becomes current: its file is checked first, as a revert checks it
            found = next((t for t in project.store.takes(item.id) if t.number == take), None)
            try:
                if found is not None:
                    project.verify_take(item.id, found)
            except IntegrityError as exc:
                raise CommandError(str(exc)) from None
        number = project.store.review(item.id, state, note, number=take)
        if number is None:
            which = f"take {take}" if take is not None else "a take yet"
            outcome.notes.append(f"{item.key} has no {which}: not reviewed")
        else:
            done.append(f"{item.key} (take {number})")
            reviewed.append(item)
    verb = {"accepted": "accepted", "rejected": "rejected", "unreviewed": "back to unreviewed"}[state]
    outcome.lines.append(
        f"{collection}: {_keys(done)} {verb}" + (f": {note}" if note else "")
        if done
        else f"{collection}: nothing reviewed"
    )
    args: dict[str, Any] = {"collection": collection, "keys": [i.key for i in items], "state": state}
    if note:
        args["note"] = note
    if take is not None:
        args["take"] = take
    _record(project, "review", args, outcome)
    if regenerate_rejected and state == "rejected" and reviewed:
        again = regenerate(project, collection, [i.key for i in reviewed])
        outcome.lines += again.lines
        outcome.notes += again.notes
    return outcome


def revert(project: Project, collection: str, key: str, take: int) -> Outcome:
    """Make take ``take`` of an item its current take again, after checking its file. When it is
    already the current take of a completed item, nothing changes and the outcome says so.

    Raises:
        CommandError: an unknown collection or key, no such take, or its file is missing or differs
            from its recorded sha256.
    """
    _collection(project, collection)
    item = project.store.find_item(collection, key)
    if item is None:
        raise CommandError(f"no item {key!r} in collection {collection!r}")
    takes = project.store.takes(item.id)
    current = next((t for t in takes if t.id == item.current_take), None)
    if current is not None and current.number == take and item.status == "completed":
        outcome = Outcome([f"{collection}/{key}: take {take} was already current (nothing changed)"])
        return _record(project, "revert", {"collection": collection, "key": key, "take": take}, outcome)
    try:
        reverted = project.revert(item.id, take)
    except IntegrityError as exc:
        raise CommandError(str(exc)) from None
    if not reverted:
        numbers = [t.number for t in takes]
        raise CommandError(f"{collection}/{key} has no take {take} (takes: {numbers or 'none'})")
    outcome = Outcome([f"{collection}/{key}: take {take} is current again"])
    now = project.store.get_item(item.id)
    if now is not None and now.stale:
        outcome.notes.append(
            f"note: take {take} was made from other input than the item's now: the item is stale "
            "and exports skip it until a new take is made"
        )
    return _record(project, "revert", {"collection": collection, "key": key, "take": take}, outcome)


__all__ = [
    "NO_WORKER",
    "CommandError",
    "Outcome",
    "cancel",
    "choose",
    "front",
    "live_workers",
    "open_project",
    "origin",
    "parse_overrides",
    "pause",
    "regenerate",
    "resume",
    "retry_failed",
    "review",
    "revert",
    "workers_lines",
    "workers_report",
]


# ---------------------------------------------------------------------- migrate-state


def migration_target(config: Config, target: str, password_env: str | None = None) -> Path | str:
    """Check the ``TARGET`` of ``tui-app migrate-state --to TARGET`` before anything is opened.

    Args:
        target: a ``postgresql://USER@HOST:PORT/DATABASE`` URI (libpq's socket form too), or a
            SQLite file path (relative to the working folder).
        password_env: the name of the environment variable holding the target's password.

    Returns:
        The URI as given, or the file's absolute path.

    Raises:
        CommandError: one line: a URI that does not parse, holds a password or names no database;
            psycopg missing for a URI; a scheme other than PostgreSQL's; a folder; the project's own
            state; a file inside an output folder; ``password_env`` beside a file path, not a
            variable name, or not set.
    """
    if password_env is not None:
        if not ENV_NAME.fullmatch(password_env):
            raise CommandError(f"--password-env: not the name of an environment variable: {password_env!r}")
        if password_env not in os.environ:
            raise CommandError(f"--password-env: the environment variable {password_env} is not set")
    if is_postgres_uri(target):
        _check_uri(config, target)
        return target
    if "://" in target:
        raise CommandError(f"--to {target}: neither a postgresql:// URI nor a file path")
    if password_env is not None:
        raise CommandError("--password-env works with a postgresql:// target only")
    path = Path(target).expanduser().resolve()
    if path.is_dir():
        raise CommandError(f"--to {target}: is a folder; give the path of the new state file")
    if config.state_uri is None and path == config.state_path:
        raise CommandError(f"--to {target}: is the project's own state")
    for name, coll in config.collections.items():
        if path.is_relative_to(coll.output.resolve()):
            raise CommandError(
                f"--to {target}: is inside collections.{name}.output ({coll.output}), which sync keeps "
                "for take files: choose a folder of its own"
            )
    return path


def _check_uri(config: Config, uri: str) -> None:
    """Refuse a PostgreSQL URI that cannot work: see :func:`migration_target`."""
    try:
        check_postgres_uri(uri)
    except UriProblem as problem:
        if problem.reason == "password":
            raise CommandError(
                "--to: a password does not belong in the URI (it would show in the process list and in "
                "config.toml): give --password-env NAME, the environment variable holding it"
            ) from None
        if problem.reason == "driver":
            needs = f"a postgresql:// target needs psycopg 3: {POSTGRES_EXTRA}"
            raise CommandError(f"--to {uri}: {needs}") from None
        raise CommandError(f"--to {uri}: {problem}") from None
    import psycopg  # the postgres extra, present (checked above)
    from psycopg.conninfo import conninfo_to_dict

    try:
        wanted = conninfo_to_dict(uri)
        same = config.state_uri is not None and conninfo_to_dict(config.state_uri) == wanted
    except psycopg.ProgrammingError as exc:
        raise CommandError(f"--to {uri}: not a valid PostgreSQL URI ({exc})") from None
    if same:
        raise CommandError(f"--to {uri}: is the project's own state")


def _shown(location: Path | str, root: Path | None = None) -> str:
    """A URI as given; a path relative to ``root`` (default: the working folder) when inside it."""
    if isinstance(location, str):
        return location
    try:
        return str(location.relative_to(root or Path.cwd()))
    except ValueError:
        return str(location)


def migrate_state(project: Project, target: Path | str, password_env: str | None = None) -> Outcome:
    """Copy the project's state into the empty store at ``target`` (``tui-app migrate-state``):
    items, takes, finals, batches, commands, events, pauses and the providers' shared state, with
    their ids (:func:`tui_app.store.copy_state`); verified by the row count of every table and the
    sha256 of every take. The project's own state and its config.toml are left as they are: the
    outcome says what to set in ``[project]``.

    Args:
        target: what :func:`migration_target` returned.
        password_env: the name of the environment variable holding the target's password.

    Raises:
        CommandError: workers are serving the project (stop them first), the target already holds a
            project's state (nothing was written), a target file that is not a tui_app state, or a
            copy that does not match its source (the target is left as written, to inspect).
        StorageError: the target cannot be opened or written: its disk, or a PostgreSQL server
            unreachable (``exit_code`` 74) or refusing (2), named in one line.
    """
    config = project.config
    live = live_workers(project)
    if live:
        raise CommandError(
            f"{_plural(len(live), 'worker')} still serve the project ({_keys([w.id for w in live])}): "
            "stop them first (tui-app workers lists them), or the copy misses what they do next"
        )
    shown = _shown(target)
    leftover = sum(c.get("generating", 0) for c in project.counts().values())
    try:
        store = open_store(target, password_env=password_env)
    except Exception as exc:  # noqa: BLE001 - classified, else raised again
        problem = storage_error(exc, path=target)
        if problem is not None:
            raise problem from exc
        if isinstance(exc, sqlite3.DatabaseError):
            raise CommandError(f"--to {shown}: not a tui_app state file ({exc})") from None
        raise
    try:
        copied = copy_state(project.store, store)
    except ValueError as exc:
        if "already holds" in str(exc):
            raise CommandError(
                f"--to {shown}: already holds a project's state; migrate-state copies into an empty "
                "store only (nothing was written)"
            ) from None
        raise CommandError(f"--to {shown}: {exc} (the target is left as written, to inspect)") from None
    except Exception as exc:  # noqa: BLE001 - classified, else raised again
        problem = storage_error(exc, path=target if is_postgres_uri(target) else config.state_location)
        if problem is not None:
            raise problem from exc
        raise
    finally:
        store.close()
    tables = ", ".join(f"{table} {n}" for table, n in copied.items())
    outcome = Outcome(
        [
            f"copied the state of {_shown(config.state_location)} to {shown}: {tables}",
            f"verified: the row count of each of the {len(copied)} tables, and the sha256 of each of the "
            f"{_plural(copied.get('takes', 0), 'take')}, match the source",
        ]
    )
    value = target if isinstance(target, str) else _shown(target, config.root)
    setting = f"state = {json.dumps(value, ensure_ascii=False)}"
    if password_env is not None:
        setting += f' and state_password_env = "{password_env}"'
    elif config.state_password_env is not None:
        setting += " (and remove state_password_env)"
    outcome.lines.append(f"next: set in the [project] table of {_shown(config.path)}: {setting}")
    if leftover:
        outcome.notes.append(
            f"{_plural(leftover, 'item')} left generating by a worker that is gone arrived pending"
        )
    outcome.notes.append(
        f"the state at {_shown(config.state_location)} is left as it was: keep it until the new one has"
        " served a run"
    )
    return outcome
