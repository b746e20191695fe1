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
newest N, take-named files no take records (what a killed cleanup, run or ``choose`` left)
and everything in ``data/orphans/``, and reports the bytes reclaimed.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .files import is_temp, sha256_file
from .settings import Config
from .store import DiskState, Store, TakeFile

#: Sub-folder of a collection's output that holds its finals (``finals/KEY.takeN.png``).
FINALS = "finals"

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


@dataclass(frozen=True)
class _Stray:
    """A file in an output folder (or its ``finals/``) that no take or final references."""

    collection: str
    path: Path
    final: bool


def _listing(config: Config) -> list[tuple[str, Path, bool]]:
    """``(collection, path, is_final)`` of every file in the output folders and their ``finals/``."""
    out = []
    for coll in config.collections.values():
        for folder, final in ((coll.output, False), (coll.output / FINALS, True)):
            if not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if entry.is_file(follow_symlinks=False) and not is_temp(Path(entry.path)):
                    out.append((coll.name, Path(entry.path), final))
    return out


def _strays(config: Config, listing: list[tuple[str, Path, bool]], state: DiskState) -> list[_Stray]:
    """Files of ``listing`` that no take or final of ``state`` references and no claim may still record.

    ``listing`` must be read *before* ``state``: a file listed then existed before the
    snapshot, so either its take was recorded by then, or its item was still
    ``generating`` (its claim may record it: skipped), or nothing will ever record it.
    The same holds for a final whose chosen item's current take has no final yet.
    """
    referenced = {str((config.root / t.take.path).resolve()) for t in state.takes}
    referenced |= {str((config.root / f.final.path).resolve()) for f in state.finals}
    out = []
    for collection, path, final in listing:
        if str(path.resolve()) in referenced:
            continue
        match = _TAKE_NAME.match(path.name)
        if match:
            key, number = match["key"], int(match["number"])
            if not final and (collection, key) in state.generating:
                continue
            if final and state.finalizing.get((collection, key)) == number:
                continue
        out.append(_Stray(collection, path, final))
    return out


def recover_orphan_takes(config: Config, store: Store) -> list[str]:
    """Move aside take-named files no take references and no claim may record (a crash between
    rename and commit). Run on start, after :meth:`Store.recover`.

    Returns log lines (also written as events).
    """
    lines = []
    listing = _listing(config)
    for stray in _strays(config, listing, store.disk_state()):
        match = _TAKE_NAME.match(stray.path.name)
        if match is None:
            continue
        target = _move_aside(config, stray.collection, stray.path)
        line = (
            f"{stray.path.name} was written but never recorded (interrupted run) -> moved to "
            f"{_shown(config, target)}"
        )
        store.log("warning", "recovered", line, collection=stray.collection, key=match["key"])
        lines.append(line)
    return lines


def _shown(config: Config, path: Path) -> Path:
    """``path`` relative to the project root when it is inside it."""
    return path.relative_to(config.root) if path.is_relative_to(config.root) else path


def reconcile(
    config: Config, store: Store, *, fix: bool = False, verify_hashes: bool = True
) -> list[Finding]:
    """Compare the store with the disk; with ``fix`` repair every mismatch (see the module docstring).

    Safe beside running generation, in this process or another: the folders are
    listed before the store is read (one snapshot), files whose item is still
    ``generating`` are left alone, and every repair is guarded (an item goes back to
    ``pending`` only while the take found missing is still its current take).

    Args:
        verify_hashes: also re-hash every take and final file (reads every byte; without it
            only existence is checked).

    Returns:
        The findings, in collection and item order.
    """
    listing = _listing(config)  # first: see _strays
    state = store.disk_state()
    findings: list[Finding] = []
    for entry in state.takes:
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
                    reason = "its current take's file is missing -> pending"
                    store.requeue(entry.take.item_id, reason, take_id=entry.take.id)
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
                    reason = "file differs from its recorded sha256 -> pending"
                    store.requeue(entry.take.item_id, reason, take_id=entry.take.id)
                store.forget_take(
                    entry.take.id, "forgotten: its file differs from its sha256 (moved to orphans)"
                )
    for f in state.finals:
        path = config.root / f.final.path
        if not path.is_file():
            findings.append(Finding(f.collection, f.key, "its final is missing", "final forgotten (rebuilt)"))
            if fix:
                store.forget_final(f.final.item_id, "forgotten: its file is missing")
        elif verify_hashes and sha256_file(path) != f.final.sha256:
            action = "file moved to orphans, final forgotten (rebuilt)"
            findings.append(
                Finding(f.collection, f.key, "its final differs from its recorded sha256", action)
            )
            if fix:
                _move_aside(config, f.collection, path)
                store.forget_final(f.final.item_id, "forgotten: its file differs from its sha256")
    for item in store.completed_without_take():
        findings.append(Finding(item.collection, item.key, "completed without a current take", "pending"))
        if fix:
            store.requeue(item.id, "completed without a current take -> pending", take_id=item.current_take)
    for stray in _strays(config, listing, state):
        what = "final not referenced by any chosen take" if stray.final else "file not referenced by any take"
        findings.append(
            Finding(
                stray.collection,
                stray.path.name,
                what,
                f"moved to {_shown(config, orphans_dir(config, stray.collection))}",
            )
        )
        if fix and stray.path.exists():
            _move_aside(config, stray.collection, stray.path)
    return findings


@dataclass
class CleanupReport:
    """What :func:`cleanup` deleted (or would delete): take rows, files and bytes."""

    takes: int = 0
    files: int = 0
    bytes: int = 0
    lines: list[str] = field(default_factory=list)


def cleanup(config: Config, store: Store, *, keep: int = 1, dry_run: bool = False) -> CleanupReport:
    """Delete superseded takes beyond the newest ``keep`` per item (with any final made from
    them), take and final files no take records, and the orphans folder.

    The current take of an item is never deleted: each take's row is forgotten (guarded:
    not current) before its file is deleted. Bytes count only data actually freed (a file
    hard-linked by the generation cache is freed with its last name).

    A cleanup killed between forgetting a take's row and deleting its file leaves a take-named
    file no row references (so does a run or a ``choose`` killed between its commit and its
    deletes): the next cleanup deletes it, unless a claim may still record it (its item is
    ``generating``, or it is the final being built for a chosen item's current take; see
    :func:`_strays`), so a re-run finishes what a killed one started.

    Raises:
        ValueError: ``keep`` < 0.
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    report = CleanupReport()
    listing = _listing(config)  # first: see _strays
    state = store.disk_state()
    unrecorded = [s for s in _strays(config, listing, state) if _TAKE_NAME.match(s.path.name)]
    # unrecorded files first: the shortest time after the snapshot that judged them
    for stray in unrecorded:
        size = _freed(stray.path)
        if size is None:
            continue
        report.files += 1
        report.bytes += size
        what = "final" if stray.final else "take file"
        line = f"{stray.collection}/{stray.path.name}: {what} no take records ({size / 1024:.0f} KB)"
        report.lines.append(line)
        if not dry_run:
            stray.path.unlink(missing_ok=True)
            store.log("info", "cleanup", f"deleted {line}", collection=stray.collection)
    finals = {f.final.take_id: config.root / f.final.path for f in state.finals}
    by_item: dict[int, list[TakeFile]] = {}
    for entry in state.takes:
        by_item.setdefault(entry.take.item_id, []).append(entry)
    for takes in by_item.values():
        superseded = sorted((t for t in takes if not t.current), key=lambda t: t.take.number, reverse=True)
        for entry in superseded[keep:]:
            paths = [config.root / entry.take.path] + (
                [finals[entry.take.id]] if entry.take.id in finals else []
            )
            sizes = [_freed(p) for p in paths]
            report.takes += 1
            report.files += sum(size is not None for size in sizes)
            freed = sum(size or 0 for size in sizes)
            report.bytes += freed
            report.lines.append(
                f"{entry.collection}/{entry.key}: take {entry.take.number} ({freed / 1024:.0f} KB)"
            )
            # the row goes first: a take that became current meanwhile (a revert) is refused and kept
            if not dry_run and store.forget_take(entry.take.id, "deleted by cleanup"):
                for path in paths:
                    path.unlink(missing_ok=True)
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
