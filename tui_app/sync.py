"""Keep the disk and the store in step: sync, orphan recovery and cleanup.

:func:`reconcile` finds every kind of mismatch between ``state.sqlite`` and the
output folders and, with ``fix=True``, repairs it without losing anything:

========================================  =====================================================
mismatch                                  fix
========================================  =====================================================
a current take's file is missing          the item goes back to ``pending``; take forgotten
a current take's file has another sha256  the file moves to ``data/orphans/``; item ``pending``;
                                          take forgotten
a superseded take's file is missing       the take row is forgotten
a superseded take's file differs          the file moves to ``data/orphans/``; take forgotten
a completed item without a current take   the item goes back to ``pending``
a file no take references                 the file moves to ``data/orphans/COLLECTION/``
========================================  =====================================================

Nothing is deleted by sync; :func:`cleanup` deletes superseded takes beyond the
newest N and everything in ``data/orphans/``, and reports the bytes reclaimed.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .files import is_temp, sha256_file
from .settings import Config
from .store import Store, TakeFile

_TAKE_NAME = re.compile(r"^(?P<key>.+)\.take(?P<number>\d+)\.[A-Za-z0-9]+$")


@dataclass(frozen=True)
class Finding:
    """One mismatch: ``"arctic_a0053: completed but its file is missing -> pending"``."""

    collection: str
    key: str
    problem: str
    action: str

    def line(self, fixed: bool) -> str:
        verb = "" if fixed else "would be: "
        return f"{self.collection}/{self.key}: {self.problem} -> {verb}{self.action}"


def orphans_dir(config: Config, collection: str) -> Path:
    """Where sync moves files no take references: ``<state folder>/orphans/COLLECTION``."""
    return config.state_path.parent / "orphans" / collection


def _move_aside(config: Config, collection: str, path: Path) -> Path:
    folder = orphans_dir(config, collection)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    n = 1
    while target.exists():
        target = folder / f"{path.stem}.{n}{path.suffix}"
        n += 1
    os.replace(path, target)
    return target


def _unreferenced(config: Config, store: Store) -> list[tuple[str, Path]]:
    referenced = {str((config.root / t.take.path).resolve()) for t in store.all_takes()}
    out = []
    for coll in config.collections.values():
        if not coll.output.is_dir():
            continue
        for entry in os.scandir(coll.output):
            if (
                entry.is_file()
                and not is_temp(Path(entry.path))
                and str(Path(entry.path).resolve()) not in referenced
            ):
                out.append((coll.name, Path(entry.path)))
    return out


def recover_orphan_takes(config: Config, store: Store) -> list[str]:
    """Move aside take-named files no take references (a crash between rename and commit).

    Run on start, after :meth:`Store.recover`. Returns log lines (also written as events).
    """
    lines = []
    for collection, path in _unreferenced(config, store):
        if _TAKE_NAME.match(path.name):
            target = _move_aside(config, collection, path)
            line = (
                f"{path.name} was written but never recorded (interrupted run) -> moved to "
                f"{target.relative_to(config.root) if target.is_relative_to(config.root) else target}"
            )
            key = match["key"] if (match := _TAKE_NAME.match(path.name)) else None
            store.log("warning", "recovered", line, collection=collection, key=key)
            lines.append(line)
    return lines


def reconcile(
    config: Config, store: Store, *, fix: bool = False, verify_hashes: bool = True
) -> list[Finding]:
    """Compare the store with the disk; with ``fix`` repair every mismatch (see the module docstring).

    Args:
        verify_hashes: also re-hash every take file (reads every byte; without it only
            existence is checked).

    Returns:
        The findings, in collection and item order.
    """
    findings: list[Finding] = []
    for entry in store.all_takes():
        path = config.root / entry.take.path
        current = entry.current
        which = "its file" if current else f"take {entry.take.number}'s file"
        if not path.is_file():
            if current:
                findings.append(
                    Finding(
                        entry.collection,
                        entry.key,
                        f"{entry.item_status} but its file is missing",
                        "pending",
                    )
                )
                if fix:
                    store.requeue(entry.take.item_id, "completed but its file is missing -> pending")
                    store.forget_take(entry.take.id, "forgotten: its file is missing")
            else:
                findings.append(Finding(entry.collection, entry.key, f"{which} is missing", "take forgotten"))
                if fix:
                    store.forget_take(entry.take.id, "forgotten: its file is missing")
            continue
        if verify_hashes and sha256_file(path) != entry.take.sha256:
            action = "file moved to orphans, " + ("pending" if current else "take forgotten")
            findings.append(
                Finding(entry.collection, entry.key, f"{which} differs from its recorded sha256", action)
            )
            if fix:
                _move_aside(config, entry.collection, path)
                if current:
                    store.requeue(entry.take.item_id, "file differs from its recorded sha256 -> pending")
                store.forget_take(
                    entry.take.id, "forgotten: its file differs from its sha256 (moved to orphans)"
                )
    for item in store.completed_without_take():
        findings.append(Finding(item.collection, item.key, "completed without a current take", "pending"))
        if fix:
            store.requeue(item.id, "completed without a current take -> pending")
    for collection, path in _unreferenced(config, store):
        findings.append(
            Finding(
                collection,
                path.name,
                "file not referenced by any take",
                f"moved to {orphans_dir(config, collection).relative_to(config.root)}"
                if orphans_dir(config, collection).is_relative_to(config.root)
                else "moved to orphans",
            )
        )
        if fix:
            _move_aside(config, collection, path)
    return findings


@dataclass
class CleanupReport:
    """What :func:`cleanup` deleted (or would delete): take rows, files and bytes."""

    takes: int = 0
    files: int = 0
    bytes: int = 0
    lines: list[str] = field(default_factory=list)


def cleanup(config: Config, store: Store, *, keep: int = 1, dry_run: bool = False) -> CleanupReport:
    """Delete superseded takes beyond the newest ``keep`` per item, and the orphans folder.

    The current take of an item is never deleted. Bytes count only data actually
    freed (a file hard-linked by the generation cache is freed with its last name).

    Raises:
        ValueError: ``keep`` < 0.
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    report = CleanupReport()
    by_item: dict[int, list[TakeFile]] = {}
    for entry in store.all_takes():
        by_item.setdefault(entry.take.item_id, []).append(entry)
    for takes in by_item.values():
        superseded = sorted((t for t in takes if not t.current), key=lambda t: t.take.number, reverse=True)
        for entry in superseded[keep:]:
            path = config.root / entry.take.path
            size = _freed(path)
            report.takes += 1
            report.files += size is not None
            report.bytes += size or 0
            report.lines.append(
                f"{entry.collection}/{entry.key}: take {entry.take.number} ({(size or 0) / 1024:.0f} KB)"
            )
            if not dry_run:
                path.unlink(missing_ok=True)
                store.forget_take(entry.take.id, "deleted by cleanup")
    root = config.state_path.parent / "orphans"
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            size = _freed(path) or 0
            report.files += 1
            report.bytes += size
            report.lines.append(
                f"{path.relative_to(config.root) if path.is_relative_to(config.root) else path} "
                f"({size / 1024:.0f} KB)"
            )
        if not dry_run:
            shutil.rmtree(root)
    return report


def _freed(path: Path) -> int | None:
    """Bytes deleting ``path`` frees (0 when other hard links remain), None when it does not exist."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size if st.st_nlink <= 1 else 0
