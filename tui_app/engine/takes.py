"""Take writing: the file, the generation cache, QA, and the guarded record.

The scheduler (:mod:`.core`) hands over a provider's answer; :class:`TakeWriter`
writes it atomically under a free ``KEY.takeN.EXT`` name (never overwriting),
measures it when its kind measures takes, and records it with the store's
guarded final write. When the guard refuses (the item was regenerated,
cancelled or reset meanwhile) the file is removed again and a ``discarded``
event says so. When the record meets a lost database connection (PostgreSQL),
the file stays in place and the record is tried again with backoff until the
connection returns (see :mod:`.core`); a record whose commit landed although
its answer was lost is recognised by its path.

On a shared project (a PostgreSQL store: every machine writes into the same take
folders), a missing take folder outside the project folder (a share mounted
elsewhere, ``/mnt/takes/dataset``) is created only inside an existing parent: a
missing parent means the share is not mounted here (:class:`Unreachable`). One
inside the project folder is made with its parents, as on SQLite (the project
folder is there, so its share is mounted).

The generation cache: a request identical to an earlier one (same provider,
options, text, params and seed: :func:`request_cache_key`) reuses that take's
file (a hard link or a copy) instead of calling the provider.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import anyio
import anyio.lowlevel

from .. import pngmeta
from ..files import atomic_write, free_take_path, link_or_copy
from ..kinds import get_kind
from ..providers import Output, Request
from ..qa import take_flags
from ..settings import CollectionConfig, Config, ProviderConfig
from ..store import Item, Store, Take, TakeRecord, tolerate_outage

#: Thread calls writing take files (write, fsync, rename) at once, each for a group of takes.
WRITER_THREADS = 16
#: The first and the longest wait between tries of a take's record while the database is unreachable, seconds.
RECORD_RETRY_S = (0.1, 2.0)

log = logging.getLogger(__name__)


class Unreachable(OSError):
    """A shared take folder this machine cannot reach: not mounted (its parent is missing) or not
    writable. ``str()`` is the one line an item fails with."""

    def __str__(self) -> str:
        return str(self.strerror)

    @classmethod
    def of(cls, folder: Path, exc: OSError) -> Unreachable:
        """The error for ``folder`` that ``exc`` (any write error there) stands for."""
        if isinstance(exc, Unreachable):
            return exc
        detail = exc.strerror or str(exc)
        code = exc.errno or errno.EIO
        return cls(
            code, f"cannot reach the shared take folder {folder}: not mounted or not writable ({detail})"
        )


def reachable(folder: Path, root: Path) -> bool:
    """True when this machine may write take files into ``folder`` of the project at ``root``: it is a
    writable folder, or it is missing and would be made (see :func:`_shared_folder`) in a writable one."""
    try:
        target = folder
        if not target.is_dir():
            target = target.parent
            while folder.is_relative_to(root) and not target.is_dir() and target.is_relative_to(root):
                target = target.parent  # made with its parents inside the project folder
        return target.is_dir() and os.access(target, os.W_OK)
    except OSError:
        return False


def _shared_folder(folder: Path, root: Path) -> None:
    """Make a missing shared take folder: with its parents inside the project folder ``root``, else
    only inside an existing parent.

    Raises:
        Unreachable: outside the project folder, the parent is missing (the share is not mounted here).
        OSError: the folder cannot be made.
    """
    if folder.is_dir():
        return
    if folder.is_relative_to(root):
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.parent.is_dir():
        raise Unreachable.of(folder, FileNotFoundError(errno.ENOENT, f"{folder.parent} does not exist"))
    folder.mkdir(exist_ok=True)


class _Unrecorded(Exception):
    """A take's record was given up (the engine stopped while the database was unreachable)."""


@dataclass(frozen=True)
class CachedTake:
    """A generation-cache hit: an earlier take whose file an identical request reuses.

    Attributes:
        take: the earlier take (its sha256, size and metadata are copied).
        path: its file, absolute.
    """

    take: Take
    path: Path


def request_cache_key(coll: CollectionConfig, provider: ProviderConfig, request: Request) -> str:
    """sha256 (hex) identifying a request: provider, model/voice options, text or prompt, params, seed.

    Two requests with the same key would make the same output, so the second reuses
    the first's file. Only option *names* of secrets (``api_key_env``) take part, never values.
    """
    blob = json.dumps(
        {
            "provider": provider.name,
            "provider_kind": provider.kind,
            "provider_options": dict(provider.options),
            "kind": coll.kind,
            "options": dict(coll.params),
            "text": request.text,
            "params": dict(request.params),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_file(folder: Path, key: str, number: int, suffix: str, data: bytes) -> tuple[Path, int, str]:
    """Write a take file atomically under a free take name; returns (path, take number, sha256)."""
    path, number = free_take_path(folder, key, number, suffix)
    return path, number, atomic_write(path, data, overwrite=False)


def _link_file(src: Path, folder: Path, key: str, number: int) -> tuple[Path, int]:
    """Reuse a cached take's file under a free take name (hard link, or copy)."""
    path, number = free_take_path(folder, key, number, src.suffix)
    link_or_copy(src, path)
    return path, number


A = TypeVar("A")
R = TypeVar("R")


@dataclass
class _Call(Generic[A, R]):
    """One call waiting for its group (:class:`_Grouped`)."""

    arg: A
    done: anyio.Event = field(default_factory=anyio.Event)
    result: R | None = None
    error: BaseException | None = None
    dropped: bool = False  # its task was cancelled before the group ran: left out of it


class _Grouped(Generic[A, R]):
    """Calls made in the same turn of the event loop, served together: the first call (the leader)
    lets the others join, then hands the whole group to ``serve``, which sets each call's ``result``
    or ``error``; the others (followers) wait for it. Used for the take files (one thread call
    writes a group) and for the records (one transaction records a group).

    The leader is shielded from cancellation while its group is served (a cancelled leader would
    leave its followers waiting for ever); a follower cancelled while it waits is marked
    ``dropped``, and ``serve`` leaves out the calls it finds dropped when it comes to them. An
    exception ``serve`` raises becomes the error of every call still without a result or an error.

    Args:
        serve: ``await serve(calls)``: serve the group, in order.
    """

    def __init__(self, serve: Callable[[list[_Call[A, R]]], Awaitable[None]]):
        self._serve = serve
        self._waiting: list[_Call[A, R]] = []

    async def __call__(self, arg: A) -> R:
        """Serve ``arg`` with the calls of this turn; its result, or raise its error."""
        call: _Call[A, R] = _Call(arg)
        self._waiting.append(call)
        if len(self._waiting) > 1:  # a leader of this group is waiting: it serves this call too
            try:
                await call.done.wait()
            except BaseException:
                call.dropped = True  # if the group has not been served, this call is not
                raise
        else:
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # the calls finished meanwhile join
                group, self._waiting = self._waiting, []
                try:
                    await self._serve(group)
                except BaseException as exc:  # noqa: BLE001 - handed to every call it left unsettled
                    for c in group:
                        if c.error is None and c.result is None:
                            c.error = exc
                finally:
                    for c in group:
                        c.done.set()
        if call.error is not None:
            raise call.error
        return cast(R, call.result)


class TakeWriter:
    """Writes and records takes for one project (see the module docstring).

    Args:
        config: the project's configuration (its root and collections).
        store: the project's store.
    """

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self._root_prefix = str(config.root) + os.sep
        self._cache_keys: set[str] | None = None
        self._threads = anyio.CapacityLimiter(WRITER_THREADS)
        self._thresholds = config.qa  # the [qa] limits of the flags
        #: take files written by one thread call per group (:meth:`_write_files`)
        self._write = _Grouped(self._write_files)
        #: takes recorded by one transaction per group (:meth:`_record_takes`)
        self._record = _Grouped(self._record_takes)
        #: the take folders are shared by several machines (a PostgreSQL store): see the module docstring
        self.shared = config.state_uri is not None
        #: True once the engine is cancelled: a record that meets a lost connection is then given up
        #: (its file is left for the next start's recovery) instead of tried again without end
        self.stopping: Callable[[], bool] = lambda: False
        #: called with each lost-connection error a record meets (the engine registers again afterwards)
        self.on_lost: Callable[[BaseException], None] = lambda exc: None

    def cached(self, cache_key: str) -> CachedTake | None:
        """The earlier take of an identical request whose file is still there with its size, or None."""
        if self._cache_keys is None:  # one query per process; then kept up to date by :meth:`write`
            self._cache_keys = self.store.cache_keys()
        if cache_key not in self._cache_keys:
            return None
        take = self.store.cache_lookup(cache_key)
        if take is None:
            return None
        path = self.config.root / take.path
        try:
            if path.stat().st_size != take.bytes:
                return None
        except OSError:
            return None
        return CachedTake(take, path)

    async def write(
        self,
        coll: CollectionConfig,
        item: Item,
        request: Request,
        result: Output | CachedTake,
        elapsed_s: float,
        cache_key: str,
    ) -> bool:
        """Write the take's file and record it; True when recorded, False when the guard refused it.

        A record that meets a lost database connection is tried again with backoff until the
        connection returns, the file in place; False also when the engine stopped meanwhile (the
        file is then left for the next start's recovery).

        Raises:
            OSError: the file cannot be written (disk full, permissions); nothing is recorded.
            Unreachable: on a shared project, the take folder's parent is missing (not mounted).
        """
        if isinstance(result, CachedTake):
            path, record = await self._reuse(coll, item, request, result, elapsed_s, cache_key)
        else:
            path, record = await self._new(coll, item, request, result, elapsed_s, cache_key)
        try:
            take_id = await self._record((item, record))
        except _Unrecorded:
            log.warning(
                "%s %s: take file %s kept but not recorded (the database is unreachable)",
                coll.name,
                item.key,
                path,
            )
            return False
        if take_id is None:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
            self._log(
                "warning",
                "discarded",
                f"{item.key}: result discarded (item changed meanwhile)",
                collection=coll.name,
                key=item.key,
            )
            return False
        if self._cache_keys is not None:
            self._cache_keys.add(cache_key)
        return True

    async def _write_files(self, group: list[_Call[Callable[[], Any], Any]]) -> None:
        """Run the writes of a group (each a take file's write, fsync and rename) in one worker
        thread, one after the other, keeping each one's result or error. A thread call per file
        made the event loop and 16 threads trade Python's GIL around every system call (93 futex
        calls per take): grouped, zero-latency items ran at 1,760 to 1,860 items/s on tmpfs
        instead of 1,140 to 1,210 (``bench/workers.py``)."""

        def run() -> None:
            for call in group:
                if call.dropped:  # its task was cancelled while it waited: the file is not written
                    continue
                try:
                    call.result = call.arg()
                except Exception as exc:  # noqa: BLE001 - handed to the take's own task, which raises it
                    call.error = exc

        await anyio.to_thread.run_sync(run, limiter=self._threads)

    async def _record_takes(self, group: list[_Call[tuple[Item, TakeRecord], int | None]]) -> None:
        """The guarded final write of a group's takes, in one transaction (the store's commits
        bound the throughput, not the disk); each call's result is its take id, None when the
        guard refused it."""
        group = [call for call in group if not call.dropped]
        ids = await self._complete([call.arg for call in group])
        for call, take_id in zip(group, ids, strict=True):
            call.result = take_id

    async def _complete(self, done: list[tuple[Item, TakeRecord]]) -> list[int | None]:
        """``store.complete_many(done)``, tried again with backoff while the database connection is
        lost. After a lost try, a take the guard refuses may be one whose commit landed: it is looked
        up by its path.

        Raises:
            _Unrecorded: the engine stopped while the database was unreachable.
        """
        delay, longest = RECORD_RETRY_S
        lost = False
        while True:
            with tolerate_outage(self.store) as outage:
                ids = self.store.complete_many(done)
                if lost:
                    ids = [
                        take_id if take_id is not None else self._recorded(item, record)
                        for (item, record), take_id in zip(done, ids, strict=True)
                    ]
                return ids
            exc = outage.error
            assert exc is not None  # the block returns unless the connection was lost
            self.on_lost(exc)
            if self.stopping():
                raise _Unrecorded() from exc
            if not lost:
                keys = ", ".join(item.key for item, _ in done[:3]) + (", ..." if len(done) > 3 else "")
                log.warning("recording %s met a lost database connection; trying again (%s)", keys, exc)
            lost = True
            await anyio.sleep(delay)
            delay = min(delay * 2, longest)

    def _recorded(self, item: Item, record: TakeRecord) -> int | None:
        """The id of ``item``'s take recorded with ``record``'s file, or None."""
        return next((t.id for t in self.store.takes(item.id) if t.path == record.path), None)

    def _log(self, level: str, kind: str, message: str, *, collection: str, key: str) -> None:
        """Write an event; without a database connection, log it instead (the take's fate is what matters)."""
        with tolerate_outage(self.store) as outage:
            self.store.log(level, kind, message, collection=collection, key=key)
        if outage.error is not None:
            log.warning("%s %s: %s", collection, key, message)

    async def _reuse(
        self,
        coll: CollectionConfig,
        item: Item,
        request: Request,
        cached: CachedTake,
        elapsed_s: float,
        cache_key: str,
    ) -> tuple[Path, TakeRecord]:
        t = cached.take

        def link() -> tuple[Path, int]:
            if self.shared:
                _shared_folder(coll.output, self.config.root)
            return _link_file(cached.path, coll.output, item.key, request.take_number)

        path, number = await anyio.to_thread.run_sync(link)
        record = TakeRecord(
            path=self._relative(path),
            sha256=t.sha256,
            bytes=t.bytes,
            provider=coll.provider,
            elapsed_s=elapsed_s,
            number=number,
            duration_s=t.duration_s,
            sample_rate=t.sample_rate,
            width=t.width,
            height=t.height,
            model=t.model,
            params=t.params,
            seed=t.seed,
            qa=t.qa,
            qa_flags=t.qa_flags,
            cache_key=cache_key,
            cached_from=t.id,
        )
        return path, record

    async def _new(
        self,
        coll: CollectionConfig,
        item: Item,
        request: Request,
        output: Output,
        elapsed_s: float,
        cache_key: str,
    ) -> tuple[Path, TakeRecord]:
        params = {k: v for k, v in request.params.items() if k != "photo_sha256"}
        seed = output.seed if output.seed is not None else request.params.get("seed")

        def write() -> tuple[Path, int, str, bytes, str | None]:
            """Write the file (a PNG with its parameters chunks, see :mod:`tui_app.pngmeta`);
            returns (path, number, sha256, the bytes written, why a PNG was left unstamped)."""
            data, unstamped = output.data, None
            number = request.take_number
            if self.shared:
                _shared_folder(coll.output, self.config.root)
            if output.suffix.lower() == ".png":
                number = free_take_path(coll.output, item.key, number, output.suffix)[1]
                chunks = pngmeta.take_chunks(
                    provider=coll.provider,
                    model=output.model,
                    collection=coll.name,
                    kind=coll.kind,
                    key=item.key,
                    take=number,
                    task=request.task,
                    text=request.text,
                    params={**params, **dict(output.params)},
                    options=request.options,
                    seed=seed,
                    width=output.width,
                    height=output.height,
                    source=request.source.name if request.source is not None else None,
                )
                try:
                    data = pngmeta.add_text(output.data, chunks)
                except ValueError as exc:
                    unstamped = str(exc)
            return (*_write_file(coll.output, item.key, number, output.suffix, data), data, unstamped)

        path, number, sha, data, unstamped = await self._write(write)
        if unstamped is not None:
            self._log(
                "warning",
                "png_metadata",
                f"{item.key}: take {number} written without its parameters chunks: {unstamped}",
                collection=coll.name,
                key=item.key,
            )
        # QA takes tens of microseconds of numpy per clip: cheaper here than contending for the GIL
        qa = get_kind(coll.kind).measure(output.data, request.text) if self._thresholds.enabled else None
        record = TakeRecord(
            path=self._relative(path),
            sha256=sha,
            bytes=len(data),
            provider=coll.provider,
            elapsed_s=elapsed_s,
            number=number,
            duration_s=output.duration_s,
            sample_rate=output.sample_rate,
            width=output.width,
            height=output.height,
            model=output.model,
            params={**params, **dict(output.params)},
            seed=seed,
            qa=qa,
            qa_flags=(", ".join(take_flags(qa, self._thresholds)) or None) if qa else None,
            cache_key=cache_key,
        )
        return path, record

    def _relative(self, path: Path) -> str:
        text = str(path)
        return text[len(self._root_prefix) :] if text.startswith(self._root_prefix) else text
