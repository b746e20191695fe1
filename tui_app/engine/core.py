"""The generation engine: schedules items of every collection onto their providers.

One dispatcher task per collection claims items from the store (highest
priority first, then source order) whenever its provider's throttle has a free
slot, and starts one task per item. Each item task:

1. waits for its turn (cooldown, min interval, rate limit),
2. calls the provider under ``timeout_s``,
3. writes the file atomically and records the take with the guarded final write
   (this step is shielded from cancellation, so an item is either completed
   with its file in place or not at all),
4. on failure backs off (retryable, attempts left) or fails the item; one
   item's failure never stops the others.

Regenerate requests are written to the store first (durable), then the
dispatchers are woken; because claims go by priority, requests accepted while a
run is in progress are served before the remaining queue.

Nothing here imports Textual: the TUI and the headless runner both drive this class.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from ..config import CollectionConfig, Config, ProviderConfig
from ..files import atomic_write, free_take_path, link_or_copy, remove_temp_files
from ..providers import Provider, ProviderError, Request, build_provider
from ..qa import audio_metrics
from ..qa import flags as qa_flags
from ..sources import load_items
from ..store import ImportReport, Item, Store, TakeRecord
from .retry import RetryPolicy
from .throttle import Throttle

REGENERATE_PRIORITY = 10
RETRY_PRIORITY = 5
#: Threads writing take files (fsync) and computing QA; more only add contention on 2 cores.
WRITER_THREADS = 16


@dataclass(frozen=True)
class CachedOutput:
    """A generation-cache hit: the earlier take (a store row) whose file is reused."""

    take: dict[str, Any]
    path: Path
    data: bytes = b""


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


def _write_take(folder: Path, key: str, number: int, suffix: str, data: bytes) -> tuple[Path, int, str]:
    """Write a take file atomically under a free take name (never overwriting).

    Returns (path, take number, sha256)."""
    path, number = free_take_path(folder, key, number, suffix)
    return path, number, atomic_write(path, data, overwrite=False)


def _speech_qa(data: bytes, text: str) -> dict[str, Any] | None:
    """QA metrics of a speech take, or None when the file is not 16-bit PCM."""
    try:
        return audio_metrics(data, text)
    except ValueError:
        return None


def _link_take(src: Path, folder: Path, key: str, number: int) -> tuple[Path, int]:
    """Reuse a cached take's file under a free take name (hard link, or copy)."""
    path, number = free_take_path(folder, key, number, src.suffix)
    link_or_copy(src, path)
    return path, number


@dataclass(frozen=True)
class EngineEvent:
    """Something that happened to an item or the engine, for live displays.

    Attributes:
        kind: started, completed, retry, failed, released, discarded, batch, cooldown, recovered.
        collection: collection name (None for engine-wide events).
        key: item key, when about one item.
        item_id: item id, when about one item.
        message: one human-readable line (the same text goes to the events table).
        ts: unix time, seconds.
    """

    kind: str
    collection: str | None
    key: str | None
    item_id: int | None
    message: str
    ts: float = field(default_factory=time.time)


@dataclass
class RunStats:
    """Live counters of one collection during this process's run (not stored: the DB holds the truth)."""

    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    _done_times: deque = field(default_factory=lambda: deque(maxlen=2000))

    _busy_since: float = -math.inf

    def note_start(self, now: float) -> None:
        """An item was claimed; the first after an idle spell starts a new stretch (for :meth:`rate`)."""
        if self.in_flight == 0:
            self._busy_since = now
        self.in_flight += 1

    def note_done(self, now: float) -> None:
        self._done_times.append(now)

    def rate(self, now: float | None = None, window_s: float = 30.0) -> float:
        """Items completed per second over the last ``window_s`` seconds of the current stretch of work.

        While work is in flight: completions since ``max(now - window_s, stretch start)`` over that
        time (at least 1 s). Once idle: the rate of the finished stretch, not decaying with idle time.
        An earlier stretch never counts, so an ETA after a pause is not diluted by it.
        """
        now = time.monotonic() if now is None else now
        # idle: the window ends at the last completion, so the rate does not decay with idle time
        end = now if self.in_flight or not self._done_times else self._done_times[-1]
        times = [t for t in self._done_times if end - t <= window_s and t >= self._busy_since]
        if self.in_flight:
            begin = max(now - window_s, self._busy_since)
            return len(times) / max(now - begin, 1.0) if times else 0.0
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-6)


def resolve_seed(
    kind: str, params: Mapping[str, Any], overrides: Mapping[str, Any], fresh: bool
) -> int | None:
    """The seed of the next take.

    An override wins; the forensic variant keeps its pinned seed (42); an explicit
    regeneration (``fresh``) or an item without a seed gets a new random 31-bit seed;
    otherwise the item's seed is reused. Dataset entries have no seed unless given.
    """
    if "seed" in overrides and overrides["seed"] is not None:
        return int(overrides["seed"])
    if kind == "dataset":
        return params.get("seed")
    if params.get("variant") == "forensic":
        return int(params["seed"])
    if fresh or params.get("seed") is None:
        return secrets.randbelow(2**31)
    return int(params["seed"])


class Engine:
    """Runs generation for a project.

    Args:
        config: the loaded configuration.
        store: the open state store (used from this event loop only).
        providers: provider instances by provider name; built from the config when omitted.

    Use :meth:`import_sources` and :meth:`recover` before :meth:`run`.
    """

    def __init__(self, config: Config, store: Store, providers: Mapping[str, Provider] | None = None):
        self.config = config
        self.store = store
        self.providers: dict[str, Provider] = dict(providers or {})
        self.throttles = {name: Throttle.from_config(pc) for name, pc in config.providers.items()}
        self.policies = {name: RetryPolicy.from_config(pc) for name, pc in config.providers.items()}
        self.stats = {name: RunStats() for name in config.collections}
        self.listeners: list[Callable[[EngineEvent], None]] = []
        self._wake: dict[str, anyio.Event] = {}
        self._stopping = False
        #: per collection, the lowest priority served: 0 = everything pending, 1 = only
        #: requested items (the TUI starts so, until the user asks to generate all pending).
        self.min_priority: dict[str, int] = dict.fromkeys(config.collections, 0)
        self._cancel_scope: anyio.CancelScope | None = None
        self._cache_keys: set[str] | None = None
        self._writers = anyio.CapacityLimiter(WRITER_THREADS)
        self._root_prefix = str(config.root) + os.sep
        self.running = False

    # ------------------------------------------------------------------ events

    def subscribe(self, listener: Callable[[EngineEvent], None]) -> None:
        """Call ``listener(event)`` for every engine event (on the event loop; keep it cheap)."""
        self.listeners.append(listener)

    def emit(self, kind: str, collection: str | None, message: str, item: Item | None = None) -> None:
        """Send one event to the listeners (it is already in the store's events table)."""
        event = EngineEvent(kind, collection, item.key if item else None, item.id if item else None, message)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a display bug must never stop generation
                pass

    def notify(self, collection: str | None = None) -> None:
        """Wake the dispatcher of ``collection`` (all of them when None)."""
        names = [collection] if collection else list(self._wake)
        for name in names:
            event = self._wake.pop(name, None)
            if event is not None:
                event.set()

    # ------------------------------------------------------------------ setup

    def collections(self, names: Sequence[str] | None = None) -> list[CollectionConfig]:
        """Collection configs by name, in config order (all when ``names`` is empty)."""
        if not names:
            return list(self.config.collections.values())
        return [self.config.collections[n] for n in names]

    def import_sources(self, names: Sequence[str] | None = None) -> dict[str, ImportReport]:
        """Read every selected collection's source and bring the store in line (idempotent).

        All sources are read and validated before any is written, so a bad
        source changes nothing.

        Raises:
            SourceError: a source is missing or malformed.
        """
        loaded = [(c, load_items(c, self.config.presets)) for c in self.collections(names)]
        return {c.name: self.store.import_items(c.name, items) for c, items in loaded}

    def recover(self) -> list[str]:
        """Crash recovery: reset items left ``generating``, delete leftover temp files, move aside
        take files that were written but never recorded; log each.

        Returns the log lines.
        """
        lines = [f"{coll}/{key} was left generating -> pending" for coll, key in self.store.recover()]
        for coll in self.collections():
            for path in remove_temp_files(coll.output):
                msg = f"removed leftover temp file {path.relative_to(self.config.root)}"
                self.store.log("warning", "recovered", msg, collection=coll.name)
                lines.append(msg)
        from ..sync import recover_orphan_takes

        lines.extend(recover_orphan_takes(self.config, self.store))
        return lines

    def provider(self, name: str) -> Provider:
        """The provider instance called ``name`` (built on first use)."""
        if name not in self.providers:
            self.providers[name] = build_provider(self.config, name)
        return self.providers[name]

    async def prepare(self, names: Sequence[str] | None = None) -> None:
        """Let each provider load what it needs (a Piper voice) before the first item.

        Raises:
            ProviderError: a provider cannot work (missing package or voice).
        """
        for coll in self.collections(names):
            provider = self.provider(coll.provider)
            prepare = getattr(provider, "prepare", None)
            if prepare is not None:
                await prepare(dict(coll.params))  # the collection's parameters (e.g. its voice)

    async def aclose(self) -> None:
        """Close every provider."""
        for provider in self.providers.values():
            await provider.aclose()

    # ------------------------------------------------------------------ requests

    def regenerate(
        self,
        collection: str,
        item_ids: Iterable[int],
        *,
        batch_id: int | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> list[Item]:
        """Queue items for a new take now, with priority (durable before this returns)."""
        items = self.store.request(
            list(item_ids), batch_id=batch_id, priority=REGENERATE_PRIORITY, overrides=dict(overrides or {})
        )
        self.notify(collection)
        return items

    def retry_failed(self, names: Sequence[str] | None = None) -> int:
        """Queue the failed items of the selected collections again (one ``retry`` batch)."""
        colls = [c.name for c in self.collections(names)]
        batch = self.store.create_batch("retry", "retry failed")
        n = self.store.reset_failed(colls, batch, priority=RETRY_PRIORITY)
        if n:
            self.store.log("info", "batch", f"{n} failed items queued again as batch {batch}")
        self.notify()
        return n

    def serve_all(self, names: Sequence[str] | None = None) -> None:
        """Generate every pending item of the selected collections (not only requested ones)."""
        for coll in self.collections(names):
            self.min_priority[coll.name] = 0
            self.notify(coll.name)

    def stop(self) -> None:
        """Start no new work; in-flight items finish (use :meth:`cancel` to abort them)."""
        self._stopping = True
        self.notify()

    def cancel(self) -> None:
        """Abort the run: in-flight items are cancelled and go back to ``pending``."""
        self._stopping = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()
        self.notify()

    # ------------------------------------------------------------------ running

    async def run(
        self, names: Sequence[str] | None = None, *, limit: int | None = None, until_idle: bool = True
    ) -> None:
        """Generate pending items of the selected collections.

        Args:
            names: collection names (all when None or empty).
            limit: at most this many items per collection in this run.
            until_idle: return when nothing is pending, in flight or backing off;
                with False keep serving new requests until :meth:`stop`/:meth:`cancel`.
        """
        self._stopping = False
        self.running = True
        try:
            with anyio.CancelScope() as scope:
                self._cancel_scope = scope
                async with anyio.create_task_group() as tg:
                    for coll in self.collections(names):
                        tg.start_soon(self._dispatch, coll, limit, until_idle)
        finally:
            self._cancel_scope = None
            self.running = False

    async def _wait_wake(self, collection: str, timeout: float) -> None:
        event = self._wake.get(collection)
        if event is None:
            event = self._wake[collection] = anyio.Event()
        with anyio.move_on_after(timeout):
            await event.wait()

    async def _dispatch(self, coll: CollectionConfig, limit: int | None, until_idle: bool) -> None:
        throttle = self.throttles[coll.provider]
        provider = self.provider(coll.provider)
        stats = self.stats[coll.name]
        cover_first = coll.kind == "pages" and bool(coll.params.get("cover_first", True))
        claimed = 0
        async with anyio.create_task_group() as tg:
            while not self._stopping and (limit is None or claimed < limit):
                # a slot is freed when the provider answers, before the take is written: bound the items
                # whose outputs wait for the disk, so a fast provider cannot pile them up in memory
                while stats.in_flight >= throttle.limit + WRITER_THREADS and not self._stopping:
                    await self._wait_wake(coll.name, 1.0)
                await throttle.acquire()
                if self._stopping:
                    throttle.release()
                    break
                item = self.store.claim_next(
                    coll.name, cover_first=cover_first, min_priority=self.min_priority.get(coll.name, 0)
                )
                if item is None:
                    throttle.release()
                    wake_at = self.store.next_wakeup([coll.name])
                    if until_idle and stats.in_flight == 0 and wake_at is None:
                        break
                    timeout = (
                        (wake_at - time.time() + 0.001) if wake_at else (math.inf if not until_idle else 1.0)
                    )
                    await self._wait_wake(coll.name, max(0.0, timeout))
                    continue
                claimed += 1
                stats.note_start(time.monotonic())
                self.emit("started", coll.name, f"Generating {item.key}", item)
                tg.start_soon(self._run_item, coll, item, provider, throttle)

    async def _run_item(
        self, coll: CollectionConfig, item: Item, provider: Provider, throttle: Throttle
    ) -> None:
        stats = self.stats[coll.name]
        pc = self.config.providers[coll.provider]
        policy = self.policies[coll.provider]
        holding = True
        try:
            request = self._request(coll, item)
            started = time.perf_counter()
            error: ProviderError | None = None
            cache_key = request_cache_key(coll, pc, request)
            cached = None if request.fresh else self._cache_hit(cache_key)
            try:
                if cached is not None:
                    output = cached
                else:
                    await throttle.wait_turn()
                    with anyio.fail_after(pc.timeout_s):
                        output = await provider.generate(request)
                if not output.data and not isinstance(output, CachedOutput):
                    raise ProviderError("the provider returned an empty file")
            except ProviderError as exc:
                error = exc
            except TimeoutError:
                error = ProviderError(f"timed out after {pc.timeout_s:g} s", retryable=True)
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    if self.store.release(item, "interrupted -> pending"):
                        self.emit("released", coll.name, f"{item.key}: interrupted -> pending", item)
                raise
            except Exception as exc:  # a provider bug fails this item only
                error = ProviderError(f"{type(exc).__name__}: {exc}")
            if cached is None and (error is None or error.status not in (None, 429)):
                throttle.note_accepted()  # the server answered without a 429: the rate it accepts
            # the provider is done with this request: its slot goes to the next one while the take is written
            in_use = throttle.in_use  # with this request, for a "too many concurrent requests" answer
            holding = False
            throttle.release()
            if error is None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._finish(
                            coll, item, request, output, time.perf_counter() - started, cache_key
                        )
                    except OSError as exc:  # disk full, permissions: this item fails, the run goes on
                        error = ProviderError(f"cannot write the take file: {exc}")
            if error is not None:
                self._failed(coll, item, error, policy, throttle, in_use)
        finally:
            stats.in_flight -= 1
            if holding:
                throttle.release()
            self.notify(coll.name)

    def _request(self, coll: CollectionConfig, item: Item) -> Request:
        overrides = item.overrides or {}
        params = {**item.params, **{k: v for k, v in overrides.items() if v is not None}}
        fresh = item.overrides is not None
        params["seed"] = resolve_seed(coll.kind, item.params, overrides, fresh)
        text = item.text
        if coll.kind == "dataset":
            text = params.get("normalized") or item.text
        source = coll.source / item.text if coll.kind == "variants" else None
        return Request(
            coll.name,
            coll.kind,
            item.key,
            text,
            params,
            coll.params,
            source,
            item.next_take or self.store.next_take_number(item.id),
            fresh,
        )

    def _cache_hit(self, cache_key: str) -> CachedOutput | None:
        if self._cache_keys is None:  # one query per process; this process is the project's only writer
            self._cache_keys = {
                k
                for (k,) in self.store.conn.execute("SELECT cache_key FROM takes WHERE cache_key IS NOT NULL")
            }
        if cache_key not in self._cache_keys:
            return None
        take = self.store.cache_lookup(cache_key)
        if take is None:
            return None
        path = self.config.root / take["path"]
        try:
            if path.stat().st_size != take["bytes"]:
                return None
        except OSError:
            return None
        return CachedOutput(take, path)

    async def _finish(
        self,
        coll: CollectionConfig,
        item: Item,
        request: Request,
        output: Any,
        elapsed: float,
        cache_key: str,
    ) -> None:
        cached = output if isinstance(output, CachedOutput) else None
        if cached is not None:
            t = cached.take
            path, number = await anyio.to_thread.run_sync(
                _link_take, cached.path, coll.output, item.key, request.take_number
            )
            record = TakeRecord(
                path=self._relative(path),
                sha256=t["sha256"],
                bytes=t["bytes"],
                provider=coll.provider,
                elapsed_s=elapsed,
                number=number,
                duration_s=t["duration_s"],
                sample_rate=t["sample_rate"],
                width=t["width"],
                height=t["height"],
                model=t["model"],
                params=t["params"],
                seed=t["seed"],
                qa=json.loads(t["qa"]) if t["qa"] else None,
                qa_flags=t["qa_flags"],
                cache_key=cache_key,
                cached_from=t["id"],
            )
        else:
            path, number, sha = await anyio.to_thread.run_sync(
                _write_take,
                coll.output,
                item.key,
                request.take_number,
                output.suffix,
                output.data,
                limiter=self._writers,
            )
            # QA takes tens of microseconds of numpy per clip: cheaper here than contending for the GIL
            qa = _speech_qa(output.data, request.text) if coll.kind == "dataset" else None
            record = TakeRecord(
                path=self._relative(path),
                sha256=sha,
                bytes=len(output.data),
                provider=coll.provider,
                elapsed_s=elapsed,
                number=number,
                duration_s=output.duration_s,
                sample_rate=output.sample_rate,
                width=output.width,
                height=output.height,
                model=output.model,
                params={
                    **{k: v for k, v in request.params.items() if k != "photo_sha256"},
                    **dict(output.params),
                },
                seed=output.seed if output.seed is not None else request.params.get("seed"),
                qa=qa,
                qa_flags=("; ".join(qa_flags(qa)) or None) if qa else None,
                cache_key=cache_key,
            )
        take_id = self.store.complete(item, record)
        stats = self.stats[coll.name]
        if take_id is None:
            Path(path).unlink(missing_ok=True)
            self.emit("discarded", coll.name, f"{item.key}: result discarded (item changed meanwhile)", item)
            return
        stats.completed += 1
        stats.note_done(time.monotonic())
        if self._cache_keys is not None:
            self._cache_keys.add(cache_key)
        how = " from the generation cache" if cached else ""
        self.emit("completed", coll.name, f"{item.key} completed ({elapsed:.2f} s{how})", item)

    def _relative(self, path: Path) -> str:
        text = str(path)
        return text[len(self._root_prefix) :] if text.startswith(self._root_prefix) else text

    def _throttle_event(self, coll: CollectionConfig, what: str) -> None:
        """Log (in the store) and emit a change of the provider's throttle: ``PROVIDER: what``."""
        message = f"{coll.provider}: {what}"
        self.store.log("warning", "cooldown", message, collection=coll.name)
        self.emit("cooldown", coll.name, message)

    def _failed(
        self,
        coll: CollectionConfig,
        item: Item,
        error: ProviderError,
        policy: RetryPolicy,
        throttle: Throttle,
        in_use: int,
    ) -> None:
        stats = self.stats[coll.name]
        if error.lower_concurrency and in_use > 1:
            # in_use counts this request: the server accepted one fewer than were in flight
            new_limit = min(throttle.limit, in_use - 1)
            if new_limit < throttle.limit:
                throttle.set_limit(new_limit)
                self._throttle_event(
                    coll, f"too many concurrent requests, concurrency lowered to {new_limit}"
                )
        if error.status == 429 and not error.lower_concurrency and error.retryable:
            paced = throttle.note_rate_limited()
            if paced is not None:
                self._throttle_event(coll, f"rate limited, pacing requests at {paced:.1f}/s")
        if error.retry_after_s:
            seconds = min(error.retry_after_s, policy.max_retry_after_s)
            if throttle.clock() + seconds > throttle.cooldown_until + 0.05:  # log each new cooldown once
                self._throttle_event(coll, f"server asked to wait, all requests cooling down {seconds:.1f} s")
            throttle.cool_down(seconds)
        if policy.should_retry(error.retryable, item.attempts):
            delay = policy.delay(item.attempts, error.retry_after_s)
            if self.store.fail(
                item, error.message, retry_at=time.time() + delay, max_attempts=policy.max_attempts
            ):
                stats.retried += 1
                self.emit(
                    "retry",
                    coll.name,
                    f"{item.key} failed: {error.message}, retry "
                    f"{item.attempts + 1}/{policy.max_attempts} in {delay:.1f} s",
                    item,
                )
        elif self.store.fail(item, error.message):
            stats.failed += 1
            self.emit("failed", coll.name, f"{item.key} failed: {error.message}", item)
