"""The one owner of a project's life: config, store, recovery, source import, and the
state changes that are not generation (cancel, choose, revert, sync, cleanup, export).

Every front end goes through here: ``tui-app --batch``, the TUI, each
subcommand, the benchmarks and the tests::

    loaded = read_sources(config)                  # validate every source first: nothing written yet
    with Project.open(config) as project:
        project.recover()                          # take back the items of workers that are gone
        project.import_sources(loaded, report=print)
        ...                                        # Engine(project).run(), project.export(...), ...

:meth:`Project.start` does those steps in that order. Headless: nothing here
imports Textual.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .exports import ExportOptions, ExportReport
from .files import IntegrityError, remove_temp_files, verify_file
from .kinds import collection_of_kind, get_kind
from .qa import collection_flags, dataset_stats, describe
from .settings import CollectionConfig, Config
from .store import STATUSES, Choice, ImportReport, Store, Take, Worker, open_store
from .store.rows import SourceItem
from .sync import CleanupReport, Finding, cleanup, reconcile, recover_orphan_takes

#: This machine's name, as workers record it.
HOST = socket.gethostname()


def new_worker_id() -> str:
    """A fresh worker id: ``HOST-PID-XXXX`` (4 random hex digits, so one process may run several)."""
    return f"{HOST}-{os.getpid()}-{secrets.token_hex(2)}"


def _alive(pid: int) -> bool:
    """True when a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_workers(workers: Sequence[Worker], lease_s: float, now: float | None = None) -> list[str]:
    """Ids of workers that are gone: no heartbeat for ``lease_s`` seconds, or, on this machine,
    a process that no longer exists (so a restart after a crash need not wait for its leases)."""
    now = time.time() if now is None else now
    return [
        w.id
        for w in workers
        if w.heartbeat_at < now - lease_s or (w.host == HOST and w.pid != os.getpid() and not _alive(w.pid))
    ]


class NoStateError(Exception):
    """The project has no state file yet (nothing was ever run)."""


@dataclass(frozen=True)
class LoadedSource:
    """One collection's source, read and validated, not yet imported."""

    collection: CollectionConfig
    items: list[SourceItem]


def read_sources(config: Config, names: Sequence[str] = ()) -> list[LoadedSource]:
    """Read and validate the sources of the collections ``names`` (all when empty), touching nothing.

    Raises:
        SourceError: a source is missing or malformed (file and line in the message).
    """
    colls = [config.collections[n] for n in names] if names else list(config.collections.values())
    return [LoadedSource(c, get_kind(c.kind).load_items(c, config.presets)) for c in colls]


def empty_counts(config: Config) -> dict[str, dict[str, int]]:
    """``{collection: {status: 0}}`` for a project that has no state yet."""
    return {name: dict.fromkeys(STATUSES, 0) for name in config.collections}


def any_items(counts: Mapping[str, Mapping[str, int]]) -> bool:
    """True when ``{collection: {status: count}}`` counts any item."""
    return any(sum(by_status.values()) for by_status in counts.values())


class Project:
    """An open project: its config and its store.

    Several processes may open one project at once (workers, the TUI, maintenance
    commands): every change is a guarded transaction and every claim a lease.
    Build one with :meth:`open` or :meth:`start`; use it as a context manager or call :meth:`close`.

    Attributes:
        config: the loaded configuration.
        store: the open state store.
    """

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def open(cls, config: Config, *, must_exist: bool = False) -> Project:
        """Open the project's store (created when missing).

        Args:
            must_exist: refuse a project that never ran: no state file yet, or (PostgreSQL, where
                the database always exists) a database that holds no items.

        Raises:
            NoStateError: ``must_exist`` and the project never ran.
            sqlite3.DatabaseError: the state file is not a tui_app database, or is newer than this code.
        """
        if must_exist and config.state_uri is None and not config.state_path.exists():
            raise NoStateError(f"{config.state_path}: no state file yet (run `tui-app --batch` first)")
        project = cls(config, open_store(config.state_location, password_env=config.state_password_env))
        if must_exist and config.state_uri is not None and not project.holds_items():
            project.close()
            raise NoStateError(
                f"{config.state_uri}: the database holds no items of this project yet "
                "(run `tui-app --batch` first)"
            )
        return project

    @staticmethod
    def has_state(config: Config) -> bool:
        """True when the project ran before: its state file exists, or (PostgreSQL, where the
        database always exists) its database holds items.

        Raises:
            StorageError: the PostgreSQL state cannot be reached (as psycopg's own error).
        """
        if config.state_uri is None:
            return config.state_path.exists()
        with Project.open(config) as project:
            return project.holds_items()

    def holds_items(self) -> bool:
        """True when the store holds any item of a configured collection."""
        return any_items(self.counts())

    @classmethod
    def start(
        cls,
        config: Config,
        names: Sequence[str] = (),
        *,
        report: Callable[[str], None] | None = None,
    ) -> Project:
        """Read the sources (all validated before anything is written), open, recover, import.
        ``report`` receives one line per recovery and per import that changed something.

        Raises:
            SourceError: a source is malformed (nothing has been written).
        """
        loaded = read_sources(config, names)
        project = cls.open(config)
        try:
            for line in project.recover():
                if report is not None:
                    report(f"recovered: {line}")
            project.import_sources(loaded, report=report)
        except BaseException:
            project.close()
            raise
        return project

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def root(self) -> Path:
        """The project folder."""
        return self.config.root

    def collections(self, names: Sequence[str] | None = None) -> list[CollectionConfig]:
        """Collection configs by name, in config order (all when ``names`` is empty)."""
        if not names:
            return list(self.config.collections.values())
        return [self.config.collections[n] for n in names]

    # ------------------------------------------------------------------ sources and recovery

    def import_sources(
        self,
        loaded: Sequence[LoadedSource] | None = None,
        *,
        names: Sequence[str] = (),
        report: Callable[[str], None] | None = None,
    ) -> dict[str, ImportReport]:
        """Bring the store in line with the sources (idempotent).

        Args:
            loaded: sources already read by :func:`read_sources`; read now when None.
            names: with ``loaded`` None, which collections (all when empty).
            report: receives ``dataset: imported 3 new, ...`` for each import that changed something.

        Raises:
            SourceError: a source is malformed (``loaded`` None; nothing has been written).
        """
        if loaded is None:
            loaded = read_sources(self.config, names)
        reports = {}
        for source in loaded:
            result = self.store.import_items(source.collection.name, source.items)
            reports[source.collection.name] = result
            if report is not None and result.changed_anything():
                report(result.describe(source.collection.name))
        return reports

    def reclaim(self, keep: str = "") -> tuple[list[Worker], list[tuple[str, str]]]:
        """Items of workers that are gone (:func:`stale_workers`; never ``keep``, the caller's own
        worker) and items whose lease expired go back to ``pending``, no attempt counted.

        Returns:
            ``(live workers, [(collection, key) taken back])``.
        """
        workers = self.store.workers()
        dead = [w for w in stale_workers(workers, self.config.lease_s) if w != keep]
        return [w for w in workers if w.id not in dead], self.store.recover(dead)

    def recover(self) -> list[str]:
        """Take back what stopped workers left: their ``generating`` items go back to ``pending``
        (no attempt counted), temp files older than a lease are removed, take files written but
        never recorded (and no longer claimable by anyone) move aside. Each is logged. Safe
        beside running workers: a live worker's items, temp files and takes are left alone.

        Returns the log lines.
        """
        _, back = self.reclaim()
        lines = [f"{coll}/{key} was left generating -> pending" for coll, key in back]
        for coll in self.collections():
            for path in remove_temp_files(coll.output, older_than_s=2 * self.config.lease_s):
                msg = f"removed leftover temp file {path.relative_to(self.root)}"
                self.store.log("warning", "recovered", msg, collection=coll.name)
                lines.append(msg)
        lines.extend(recover_orphan_takes(self.config, self.store))
        return lines

    # ------------------------------------------------------------------ reading

    def counts(self) -> dict[str, dict[str, int]]:
        """``{collection: {status: count}}`` for every configured collection."""
        return self.store.counts(list(self.config.collections))

    def current_take(self, item_id: int) -> Take | None:
        """The item's current take, or None."""
        item = self.store.get_item(item_id)
        if item is None or item.current_take is None:
            return None
        return self.store.get_take(item.current_take)

    def take_path(self, take: Take) -> Path:
        """The absolute path of a take's file."""
        return self.root / take.path

    def qa_report(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The flagged current takes of the speech collections, judged now with the ``[qa]`` limits:
        ``{collection: {key: {"flags": [codes], "qa": {metric: value}, "why": [lines]}}}``.

        Codes come from each take's metrics (:func:`tui_app.qa.take_flags`, the ASR check's
        included once it ran) and from the collection itself (:func:`tui_app.qa.dataset_flags`:
        words/s and loudness outliers); ``why`` says each code's reason with its values
        (:func:`tui_app.qa.describe`). Every measured collection is present, possibly empty.
        """
        thresholds = self.config.qa
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for coll in self.collections():
            if not get_kind(coll.kind).measured:
                continue
            takes = {key: take for key, take in self.store.current_takes(coll.name) if take.qa}
            metrics = {key: dict(take.qa or {}) for key, take in takes.items()}
            texts = {i.key: i.text for i in self.store.items(coll.name) if i.key in takes}
            stats = dataset_stats(metrics, texts, thresholds)
            flagged = out[coll.name] = {}
            for key, codes in collection_flags(metrics, texts, thresholds).items():
                if codes:
                    why = [describe(code, metrics[key], thresholds, stats) for code in codes]
                    flagged[key] = {"flags": codes, "qa": metrics[key], "why": why}
        return out

    # ------------------------------------------------------------------ state changes outside generation

    def cancel(self, item_ids: Sequence[int]) -> int:
        """Cancel queued or in-flight items (an in-flight result is discarded); returns how many."""
        return self.store.cancel(item_ids)

    def revert(self, item_id: int, number: int) -> bool:
        """Make take ``number`` current again, after checking its file; False when there is no such take.

        A take made from other input than the item's now leaves the item stale
        (``Item.stale``): exports skip it until a new take is made.

        Raises:
            IntegrityError: the take's file is missing or differs from its recorded sha256
                (one line; nothing is changed).
        """
        take = next((t for t in self.store.takes(item_id) if t.number == number), None)
        if take is None:
            return False
        self.verify_take(item_id, take)
        return self.store.revert(item_id, number)

    def choose(self, item_id: int) -> Choice:
        """Choose a variant, after checking its current take's file; the other variants of its photo
        are set aside and their finals removed (forgotten, then their files deleted).

        Raises:
            IntegrityError: the item has no current take, or its file is missing or differs from
                its recorded sha256 (one line; nothing is changed).
        """
        take = self.current_take(item_id)
        if take is None:
            item = self.store.get_item(item_id)
            raise IntegrityError(f"{item.key if item else item_id}: has no completed take to choose")
        self.verify_take(item_id, take)
        choice = self.store.choose(item_id)
        for path in choice.dropped_finals:
            (self.root / path).unlink(missing_ok=True)
        return choice

    def verify_take(self, item_id: int, take: Take) -> None:
        """Check a take's file against its recorded sha256.

        Raises:
            IntegrityError: the file is missing or differs (one line naming the item and take).
        """
        item = self.store.get_item(item_id)
        what = f"{item.collection}/{item.key} take {take.number}" if item else f"take {take.number}"
        verify_file(self.root / take.path, take.sha256, what, shown=take.path)

    def log(
        self, level: str, kind: str, message: str, *, collection: str | None = None, key: str | None = None
    ) -> None:
        """Append one event to the project's log."""
        self.store.log(level, kind, message, collection=collection, key=key)

    def export(
        self,
        kind: str,
        out: Path,
        *,
        fmt: str | None = None,
        collection: str | None = None,
        options: ExportOptions | None = None,
    ) -> ExportReport:
        """Export the collection ``collection`` (default: the first) of ``kind`` into the new folder ``out``.

        Raises:
            ExportError: no such collection, ``out`` exists, an unknown format, or nothing to export.
        """
        from .exports import ExportError

        try:
            coll = collection_of_kind(self.config, kind, collection)
        except LookupError as exc:
            raise ExportError(str(exc)) from None
        return get_kind(kind).export(self.config, self.store, coll, out, fmt, options)

    def sync(self, *, fix: bool = False, verify_hashes: bool = True) -> list[Finding]:
        """Compare the store with the disk and, with ``fix``, repair (see :func:`tui_app.sync.reconcile`)."""
        findings = reconcile(self.config, self.store, fix=fix, verify_hashes=verify_hashes)
        if fix:
            for finding in findings:
                self.log("warning", "sync", finding.line(fixed=True), collection=finding.collection)
        return findings

    def cleanup(self, *, keep: int = 1, dry_run: bool = False) -> CleanupReport:
        """Delete superseded takes beyond the newest ``keep``, and the orphans (see :mod:`tui_app.sync`)."""
        return cleanup(self.config, self.store, keep=keep, dry_run=dry_run)
