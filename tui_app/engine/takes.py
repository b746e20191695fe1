"""Take writing: the file, the generation cache, QA, and the guarded record.

The scheduler (:mod:`.core`) hands over a provider's answer; :class:`TakeWriter`
writes it atomically under a free ``KEY.takeN.EXT`` name (never overwriting),
measures it when its kind measures takes, and records it with the store's
guarded final write. When the guard refuses (the item was regenerated,
cancelled or reset meanwhile) the file is removed again and a ``discarded``
event says so.

The generation cache: a request identical to an earlier one (same provider,
options, text, params and seed: :func:`request_cache_key`) reuses that take's
file (a hard link or a copy) instead of calling the provider.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.lowlevel

from .. import pngmeta
from ..files import atomic_write, free_take_path, link_or_copy
from ..kinds import get_kind
from ..providers import Output, Request
from ..qa import take_flags
from ..qa_limits import parse_qa_table
from ..settings import CollectionConfig, Config, ProviderConfig
from ..store import Item, Store, Take, TakeRecord

#: Threads writing take files (write, fsync, rename) at once; more only add contention on 2 cores.
WRITER_THREADS = 16


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


@dataclass
class _Pending:
    """A take waiting for its group commit."""

    item: Item
    record: TakeRecord
    done: anyio.Event = field(default_factory=anyio.Event)
    take_id: int | None = None
    error: BaseException | None = None


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
        self._thresholds = parse_qa_table(config.qa_table)  # the [qa] limits of the flags
        self._group: list[_Pending] = []  # takes waiting for the next group commit (:meth:`_record`)

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

        Raises:
            OSError: the file cannot be written (disk full, permissions); nothing is recorded.
        """
        if isinstance(result, CachedTake):
            path, record = await self._reuse(coll, item, request, result, elapsed_s, cache_key)
        else:
            path, record = await self._new(coll, item, request, result, elapsed_s, cache_key)
        if await self._record(item, record) is None:
            await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
            self.store.log(
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

    async def _record(self, item: Item, record: TakeRecord) -> int | None:
        """The guarded final write, grouped: takes finished in the same turn of the event loop are
        recorded in one transaction (the store's commits bound the throughput, not the disk)."""
        pending = _Pending(item, record)
        self._group.append(pending)
        if len(self._group) > 1:  # a leader of this group is waiting: it records this take too
            await pending.done.wait()
        else:
            await anyio.lowlevel.checkpoint()  # let the takes that finished meanwhile join
            group, self._group = self._group, []
            try:
                ids = self.store.complete_many([(p.item, p.record) for p in group])
            except BaseException as exc:
                for p in group:
                    p.error = exc
                    p.done.set()
                raise
            for p, take_id in zip(group, ids, strict=True):
                p.take_id = take_id
                p.done.set()
        if pending.error is not None:
            raise pending.error
        return pending.take_id

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
        path, number = await anyio.to_thread.run_sync(
            _link_file, cached.path, coll.output, item.key, request.take_number
        )
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

        path, number, sha, data, unstamped = await anyio.to_thread.run_sync(write, limiter=self._threads)
        if unstamped is not None:
            self.store.log(
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
