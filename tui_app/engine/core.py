"""The scheduler: items of every collection onto their providers, under each provider's throttle.

One dispatcher task per collection claims items from the store (highest
priority first, then source order) whenever its provider's throttle has a free
slot, and starts one task per item. Each item task:

1. builds the provider request (the collection kind's text and seed rules),
2. reuses an identical earlier take (the generation cache) or waits for its
   turn (cooldown, min interval, rate limit, learned pace) and calls the
   provider under ``timeout_s``,
3. hands the answer to the :class:`~.takes.TakeWriter`, which writes the file
   atomically and records the take with the guarded final write (shielded from
   cancellation: an item is either completed with its file in place or not at all),
4. on failure backs off (retryable, attempts left) or fails the item; one
   item's failure never stops the others.

Regenerate requests are written to the store first (durable), then the
dispatchers are woken; because claims go by priority, requests accepted while a
run is in progress are served before the remaining queue.

Every event (started, completed, retry, failed, cooldown, ...) is written by
the store in the transaction of its change; listeners (:meth:`Engine.subscribe`)
receive that same event after the commit.

Other processes' commits (a command from a shell, another worker's progress) reach a worker through
its keepalive task: on PostgreSQL it waits on the store's :meth:`~tui_app.store.base.Store.listen`
listener (``LISTEN tui_app`` in a thread, woken within milliseconds of a commit, and at least every
``LISTEN_POLL_S`` to look anyway); on SQLite it polls ``PRAGMA data_version`` every ``WATCH_S``.

A lost database connection (PostgreSQL restarted, network down; the store itself reconnects with
backoff for up to ``reconnect_s`` within each call, blocking this event loop meanwhile) never stops a
worker: the heartbeat, the claims and the bookkeeping of an item are tried again on the next turn;
an item whose state could not be written is given back once the connection returns (a lease this
worker holds but no task serves is released on the next heartbeat), and after an outage the worker
registers itself again (another worker may have removed its row). A finished take is never lost: its
file stays in place while its record is retried with backoff until the connection returns; then
either it is recorded (also when the commit that seemed lost had landed: the take is found by its
path), or the guard refuses it (its lease expired and another worker took the item over) and the file
is removed. Only a worker stopped (cancelled) during an outage leaves such a file unrecorded; the
next start's recovery moves it aside, once no live lease may still record it.

A take folder this machine cannot reach: on a project whose store is PostgreSQL, the take folders
are shared by every machine (NFS, SMB), so a missing folder (its parent missing: the share is not
mounted) or one this machine may not write (permission denied, read-only mount, a stale NFS handle)
is this machine's problem, not the disk's, and not a reason to stop the other machines' work: each
item whose take this worker could not write fails at once (no retry) with one line naming the folder,
``cannot reach the shared take folder /mnt/takes/dataset: not mounted or not writable (...)``, and
the worker stops claiming that collection's items until the folder is back (a ``--batch`` stops
serving that collection; a ``worker`` checks again every ``REACH_S``), so it does not fail the whole
queue that other machines can serve. On such a project the engine never creates the missing parent
of a take folder outside the project folder (that would write takes to this machine's disk under
the mount point), only the take folder itself inside an existing parent. A full disk (no space,
quota, file size limit, I/O error) stays a storage error as on SQLite (every machine shares that
disk: the item goes back and the run stops, exit 74), and on a SQLite project every write error
keeps its :mod:`tui_app.storage_errors` treatment: a full, read-only or unwritable disk puts the
item back and stops the run (exit 74), any other error fails its item.

Nothing here imports Textual: the TUI and the headless runner both drive this class.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import anyio

from ..files import IntegrityError
from ..kinds import get_kind
from ..project import HOST, Project, new_worker_id
from ..providers import Output, Provider, ProviderError, build_provider
from ..settings import CollectionConfig
from ..storage_errors import storage_error
from ..store import Claim, Event, Final, Item, Outage, Take, Worker, tolerate_outage
from .checks import Checker, build_checker
from .finals import FinalBuilder
from .retry import RetryPolicy
from .takes import WRITER_THREADS, CachedTake, TakeWriter, Unreachable, reachable, request_cache_key
from .throttle import Throttle

log = logging.getLogger(__name__)

REGENERATE_PRIORITY = 10
RETRY_PRIORITY = 5
#: How often a worker looks for commits of other processes (``PRAGMA data_version``), seconds.
WATCH_S = 0.1
#: How often a dispatcher whose claim other workers' leases refused looks for their commits, seconds.
COMMIT_POLL_S = 0.002
#: A request that took at least this long wakes the dispatchers as soon as it ends, seconds (see
#: :meth:`Engine._serve_item`).
SLOW_REQUEST_S = 0.02
#: With a listener (PostgreSQL), how often a worker looks anyway, in case a notification is lost, seconds.
LISTEN_POLL_S = 1.0
#: After a lost database connection, the wait before a task tries the store again, seconds.
RETRY_S = 0.5
#: How often a worker checks whether an unreachable shared take folder is back, seconds.
REACH_S = 2.0
#: errno values of a write into a shared take folder this machine cannot reach (see the module docstring).
UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.ESTALE,
        errno.ENOTCONN,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
    }
)


@dataclass
class RunStats:
    """Live counters of one collection during this process's run (not stored: the DB holds the truth;
    rates and ETAs are the front ends' :class:`tui_app.views.Throughput`)."""

    in_flight: int = 0
    completed: int = 0
    failed: int = 0


#: Items one claim transaction takes at most (as many as there are free slots, up to this)
CLAIM_BATCH = 32


class Engine:
    """Runs generation for an open project.

    Args:
        project: the open project (its config and store; the store is used from this event loop only).
        providers: provider instances by provider name; built from the config when omitted.
    """

    def __init__(self, project: Project, providers: Mapping[str, Provider] | None = None):
        self.project = project
        self.config = project.config
        self.store = project.store
        self.providers: dict[str, Provider] = dict(providers or {})
        self.throttles = {name: Throttle.from_config(pc) for name, pc in self.config.providers.items()}
        self.policies = {name: RetryPolicy.from_config(pc) for name, pc in self.config.providers.items()}
        self.stats = {name: RunStats() for name in self.config.collections}
        self.takes = TakeWriter(self.config, self.store)
        self.takes.stopping = lambda: self._cancelled
        self.takes.on_lost = functools.partial(self._lost, "recording a take")
        self._cancelled = False  # cancel() was called: a take's record is no longer retried without end
        self.finals = FinalBuilder(self.config, self.store)
        #: the ASR check of speech takes (built by :meth:`run`; None: not built yet)
        self.checker: Checker | None = None
        self._wake: dict[str, anyio.Event] = {}
        #: other processes' commits are found by polling ``data_version`` (no listener: SQLite)
        self._polled = True
        self._stopping = False
        #: per collection, the lowest priority served: 0 = everything pending, 1 = only
        #: requested items (the TUI starts so, until the user asks to generate all pending).
        self.min_priority: dict[str, int] = dict.fromkeys(self.config.collections, 0)
        self._cancel_scope: anyio.CancelScope | None = None
        self._finals_due: anyio.Event | None = None  # set when another process committed (see run)
        #: the processes of this worker's ``--workers N`` group: each holds at most 1/N of a provider's
        #: slots, so every process gets work (the one that frees a slot would otherwise take it again
        #: before the others, who learn of it through the store, can). Once the whole group has
        #: registered, the live workers split the slots (:meth:`_share_slots`; this is then 1), so a
        #: member that dies leaves its part to the others.
        self.processes = 1
        self._shared_at = 0.0  # monotonic time of the last :meth:`_share_slots`
        #: this engine's worker id in the store: its claims' lease owner
        self.worker_id = new_worker_id()
        self._items: dict[int, anyio.CancelScope] = {}  # in-flight items -> their task's scope
        #: ids of the items this worker claimed and still serves (from the claim on, before their task
        #: starts): a lease it holds on any other item is an orphan of a lost connection (released)
        self._claimed: set[int] = set()
        self._outage = False  # a store call met a lost connection: register again once it is back
        self._serving: list[str] = []  # the collections of this run (its worker row)
        #: collections whose shared take folder this machine cannot reach -> when it was last checked
        self._unreachable: dict[str, float] = {}
        # the collections sharing each provider: its concurrency is counted over all of their leases
        self._shared: dict[str, list[str]] = {}
        for coll in self.config.collections.values():
            self._shared.setdefault(coll.provider, []).append(coll.name)

    # ------------------------------------------------------------------ events

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for every event the project's store writes (after its commit, on the
        committing thread: keep it cheap). A listener's exception never stops generation."""
        self.store.subscribe(listener)

    def notify(self, collection: str | None = None) -> None:
        """Wake the dispatcher of ``collection`` (all of them when None)."""
        names = [collection] if collection else list(self._wake)
        for name in names:
            event = self._wake.pop(name, None)
            if event is not None:
                event.set()

    # ------------------------------------------------------------------ providers

    def provider(self, name: str) -> Provider:
        """The provider instance called ``name`` (built on first use)."""
        if name not in self.providers:
            self.providers[name] = build_provider(self.config.providers[name], self.config.root)
        return self.providers[name]

    async def prepare(self, names: Sequence[str] | None = None) -> None:
        """Let each provider load what it needs (a Piper voice) before the first item.

        Raises:
            ProviderError: a provider cannot work (missing package or voice).
        """
        for coll in self.project.collections(names):
            provider = self.provider(coll.provider)
            prepare = getattr(provider, "prepare", None)
            if prepare is not None:
                await prepare(dict(coll.params))  # the collection's parameters (e.g. its voice)

    async def aclose(self) -> None:
        """Close every provider and the ASR check's transcriber."""
        for provider in self.providers.values():
            await provider.aclose()
        if self.checker is not None:
            await self.checker.aclose()

    # ------------------------------------------------------------------ requests

    def regenerate(
        self,
        collection: str,
        item_ids: Iterable[int],
        *,
        overrides: Mapping[str, Any] | None = None,
        debounce: bool = False,
    ) -> list[Item]:
        """Queue items for a new take now, with priority (durable before this returns).

        With ``debounce`` the request joins the project's open regenerate batch (requests
        within ``[project] debounce_ms`` of each other, from any process, form one batch,
        served once the window closes); without, it is served at once.
        """
        debounce_s = self.config.debounce_s if debounce else 0.0
        _, items = self.store.regenerate(
            list(item_ids),
            debounce_s=debounce_s,
            priority=REGENERATE_PRIORITY,
            overrides=dict(overrides or {}),
        )
        self.notify(collection)
        return items

    def serve_all(self, names: Sequence[str] | None = None) -> None:
        """Generate every pending item of the selected collections (not only requested ones)."""
        for coll in self.project.collections(names):
            self.min_priority[coll.name] = 0
            self.notify(coll.name)

    def stop(self) -> None:
        """Start no new work; in-flight items finish (use :meth:`cancel` to abort them)."""
        self._stopping = True
        self.notify()

    def cancel(self) -> None:
        """Abort the run: in-flight items are cancelled and go back to ``pending``."""
        self._stopping = True
        self._cancelled = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()
        self.notify()

    # ------------------------------------------------------------------ finals

    async def build_final(self, collection: str, item_id: int) -> Final | None:
        """Build the final of a chosen item's current take, unless it is already built.

        Returns the item's current final, or None when it is not chosen or has no take.

        Raises:
            IntegrityError: the take's file is missing or differs from its sha256.
            ProviderError: the provider's upscale failed.
            OSError: the final cannot be written.
        """
        coll = self.config.collections[collection]
        for item, take in self.store.finals_to_build(collection):
            if item.id == item_id:
                return await self.finals.build(coll, self.provider(coll.provider), item, take)
        final, now = self.store.final(item_id), self.store.get_item(item_id)
        if final is None or now is None or now.chosen != 1 or now.current_take != final.take_id:
            return None
        return final

    async def build_finals(self, names: Sequence[str] | None = None) -> int:
        """Build every missing or out-of-date final of the selected collections; returns how many.

        A final that cannot be built is logged (an ``error`` event) and the others go on.
        """
        built = 0
        for coll in self.project.collections(names):
            if not get_kind(coll.kind).choosable:
                continue
            for item, take in self.store.finals_to_build(coll.name):
                built += await self._build_one(coll, item, take)
        return built

    async def _build_one(self, coll: CollectionConfig, item: Item, take: Take) -> bool:
        try:
            return await self.finals.build(coll, self.provider(coll.provider), item, take) is not None
        except (IntegrityError, ProviderError, OSError, ValueError) as exc:
            message = exc.message if isinstance(exc, ProviderError) else str(exc)
            self.store.log(
                "error", "finalized", f"{item.key}: cannot build its final: {message}", collection=coll.name
            )
            return False

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
        self._stopping = self._cancelled = False
        colls = self.project.collections(names)
        self._serving = [c.name for c in colls]
        self.store.register_worker(self.worker_id, HOST, os.getpid(), self._serving)
        self._reclaim()
        self._adopt_paces()
        if self.checker is None:
            self.checker = build_checker(self.project)
        checked = self.checker.collections(names) if self.checker.transcriber is not None else []
        try:
            await self.build_finals(names)  # finals a crash or an earlier run left out of date
            with anyio.CancelScope() as scope:
                self._cancel_scope = scope
                async with anyio.create_task_group() as outer:
                    outer.start_soon(self._keepalive)
                    if any(get_kind(c.kind).choosable for c in colls):
                        self._finals_due = anyio.Event()
                        outer.start_soon(self._watch_finals, names)
                    async with anyio.create_task_group() as checks:
                        if checked:  # the ASR check, beside generation, at its own concurrency
                            checks.start_soon(functools.partial(self.checker.run, names, until_idle=False))
                        async with anyio.create_task_group() as tg:
                            for coll in colls:
                                tg.start_soon(self._dispatch, coll, limit, until_idle)
                        if checked and until_idle and not self._stopping:
                            self.checker.drain()  # a --batch ends once what is left is checked
                        else:
                            checks.cancel_scope.cancel()
                    outer.cancel_scope.cancel()
        finally:
            self._cancel_scope = None
            with tolerate_outage(self.store) as outage:
                self.store.retire_worker(self.worker_id)  # anything still held goes back to pending
            if outage.error is not None:
                log.warning(
                    "worker %s: the database is unreachable; its leases expire instead", self.worker_id
                )

    async def _keepalive(self) -> None:
        """Renew this worker's leases every ``heartbeat_s``, take back the items of workers that are
        gone, and react to other processes' commits (new requests, pauses, cancels): the dispatchers
        are woken and in-flight items this worker no longer holds are abandoned. A commit is heard
        through the store's listener (PostgreSQL's ``LISTEN``, waited on in a thread) or, without
        one, by polling ``data_version`` every ``WATCH_S`` (it changes whenever another connection
        commits). A lost database connection is waited out (see the module docstring)."""
        listener = self.store.listen()
        self._polled = listener is None
        try:
            version = self._guarded(self.store.data_version, -1)
            beat = time.monotonic()
            while True:
                changed = False
                if listener is None:
                    await anyio.sleep(WATCH_S)
                else:
                    wait_s = max(0.0, min(LISTEN_POLL_S, beat + self.config.heartbeat_s - time.monotonic()))
                    changed = await anyio.to_thread.run_sync(listener.wait, wait_s, abandon_on_cancel=True)
                with self._unless_lost("the heartbeat") as outage:
                    if time.monotonic() - beat >= self.config.heartbeat_s or self._outage:
                        beat = time.monotonic()
                        self._beat()
                    now = self.store.data_version()
                    if changed or now != version:
                        version = now
                        self._changed()
                if outage.error is not None:
                    await anyio.sleep(RETRY_S)
        finally:
            if listener is not None:
                listener.close()

    def _beat(self) -> None:
        """Renew this worker's leases; after an outage, or when another worker took this one for dead,
        register again; release the orphan leases (held, but served by no task: a claim or a release
        whose outcome a lost connection hid); take back the items of workers that are gone."""
        held = self.store.heartbeat(self.worker_id, self.config.lease_s)
        if held is None or self._outage:  # taken for dead by the others, or after an outage
            self.store.register_worker(self.worker_id, HOST, os.getpid(), self._serving)
            self.notify()
        if held is None:
            # renewed nothing for longer than a lease (stopped with SIGSTOP or Ctrl-Z, a suspended
            # machine): the others took its items and its row, and, not seeing it, would leave it no
            # slot of a shared provider; its late results were discarded
            message = (
                f"worker {self.worker_id} renewed nothing for longer than its lease"
                f" ({self.config.lease_s:g} s: stopped or suspended?); its items went back to the queue;"
                " it registered again"
            )
            log.warning("%s", message)
            self.store.log("warning", "worker", message)
            held = set()
        if self._outage:
            self._outage = False
            self.store.log("info", "reconnected", f"worker {self.worker_id}: the database is reachable again")
        self._abandon(held)
        for item_id in sorted(held - self._claimed):
            item = self.store.get_item(item_id)
            if item is not None and item.worker_id == self.worker_id:
                self.store.release(item, "held but not served after a lost database connection -> pending")
                self.notify(item.collection)
        self._reclaim()

    def _changed(self) -> None:
        """Another connection committed: what this worker holds, paces, shares and finals may differ."""
        self._abandon(self.store.held(self.worker_id))
        self._adopt_paces()
        if time.monotonic() - self._shared_at >= 1.0:  # a worker came, went, or found work
            self._share_slots()
        self.notify()
        if self._finals_due is not None:
            self._finals_due.set()

    def _guarded(self, call: Callable[[], Any], default: Any) -> Any:
        """``call()``, or ``default`` when the database connection is lost."""
        with self._unless_lost("a read"):
            return call()
        return default

    def _event(self, level: str, kind: str, message: str, collection: str) -> None:
        """Write an event of ``collection``; without a database connection it is not written (the
        outage is noted, see :meth:`_unless_lost`)."""
        with self._unless_lost(f"a {kind} event"):
            self.store.log(level, kind, message, collection=collection)

    @contextmanager
    def _unless_lost(self, what: str) -> Iterator[Outage]:
        """:func:`~tui_app.store.tolerate_outage`, the lost connection noted by :meth:`_lost` (as
        ``what`` met it); the caller decides what to do without the database."""
        with tolerate_outage(self.store) as outage:
            yield outage
        if outage.error is not None:
            self._lost(what, outage.error)

    def _lost(self, what: str, exc: BaseException) -> None:
        """Note a lost database connection (logged once per outage: the store itself cannot say it)."""
        if not self._outage:
            log.warning(
                "worker %s: %s met a lost database connection (%s); trying again",
                self.worker_id,
                what,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
        self._outage = True

    async def _watch_finals(self, names: Sequence[str] | None) -> None:
        """Build the finals other processes asked for (a ``tui-app choose`` or ``revert``, another TUI):
        after each commit of another connection, the missing finals of the served collections."""
        while self._finals_due is not None:
            await self._finals_due.wait()
            self._finals_due = anyio.Event()
            with self._unless_lost("building finals"):  # else built after the next commit heard
                await self.build_finals(names)

    def _adopt_paces(self) -> None:
        """Cooldowns and learned paces other workers wrote to the store hold here too."""
        now = time.time()
        for name, (cooldown_until, rps, learned_at) in self.store.paces().items():
            if name in self.throttles:
                self.throttles[name].adopt(cooldown_until, rps, learned_at, now)

    def _abandon(self, held: set[int]) -> None:
        """Cancel the in-flight items this worker no longer holds (cancelled, regenerated, taken back)."""
        for item_id, scope in list(self._items.items()):
            if item_id not in held:
                scope.cancel()

    def _reclaim(self) -> None:
        """Items of workers that stopped renewing (or whose process is gone) go back to pending."""
        live, back = self.project.reclaim(keep=self.worker_id)
        self._share_slots(live)
        if back:
            self.notify()

    def _share_slots(self, live: Sequence[Worker] | None = None) -> None:
        """A provider's slots are shared evenly among the live workers that have work for it (pending
        items in a collection they serve): each claims at most its part, so one that reacts faster
        cannot starve the others, and one with nothing to do leaves its part to them."""
        live = self.store.workers() if live is None else live
        self._shared_at = time.monotonic()
        waiting = self.store.waiting(sorted({c for w in live for c in w.collections}))
        for name, throttle in self.throttles.items():
            wanted = set(self._shared.get(name, [])) & waiting
            throttle.share = max(1, sum(1 for w in live if wanted & set(w.collections)))
            if throttle.share >= self.processes:
                self.processes = 1  # the group is all there: the live workers split the slots from now on

    def take_back(self) -> None:
        """Take back at once the items of workers that are gone (a child process just seen dead), and
        split the providers' slots among the live workers again."""
        with self._unless_lost("taking back a dead worker's items"):
            self._reclaim()

    def _wake_event(self, collection: str) -> anyio.Event:
        """The event :meth:`notify` sets for ``collection``'s dispatcher (made when none is pending)."""
        event = self._wake.get(collection)
        if event is None:
            event = self._wake[collection] = anyio.Event()
        return event

    async def _wait_wake(self, collection: str, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._wake_event(collection).wait()

    async def _wait_commit(self, collection: str, seconds: float) -> None:
        """:meth:`_wait_wake`, but for its first :data:`WATCH_S` also woken by another process's commit,
        looked for every :data:`COMMIT_POLL_S` (a store without a listener: SQLite). A claim that other
        workers' leases refused can be tried again as soon as one of them records its take: the
        heartbeat's poll every ``WATCH_S`` left a CPU-bound provider idle up to that long, 0.3 to 0.6 s
        of a 17 s run of 300 clips on two processes (``bench/speech.py``)."""
        deadline = time.monotonic() + seconds
        if self._polled:
            version = self._guarded(self.store.data_version, None)
            watch_until = min(deadline, time.monotonic() + WATCH_S)
            while version is not None and time.monotonic() < watch_until:
                with anyio.move_on_after(COMMIT_POLL_S):
                    await self._wake_event(collection).wait()
                    return
                if self._guarded(self.store.data_version, version) != version:
                    return
        await self._wait_wake(collection, max(0.0, deadline - time.monotonic()))

    async def _reach(self, coll: CollectionConfig, until_idle: bool) -> bool:
        """Whether this worker may claim ``coll``'s items again: its shared take folder is reachable
        (checked every ``REACH_S``). The first time it is not, one warning event; a ``--batch``
        (``until_idle``) then stops serving the collection (False), a worker waits for the folder."""
        while not self._stopping:
            checked = self._unreachable[coll.name]
            if time.monotonic() - checked >= REACH_S:
                self._unreachable[coll.name] = time.monotonic()
                if await anyio.to_thread.run_sync(reachable, coll.output, self.config.root):
                    del self._unreachable[coll.name]
                    self._event(
                        "info",
                        "reachable",
                        f"worker {self.worker_id}: the shared take folder {coll.output} is reachable again",
                        coll.name,
                    )
                    return True
                if checked == -math.inf:  # the first check after a write failed
                    what = "stops serving" if until_idle else "claims no more"
                    self._event(
                        "warning",
                        "unreachable",
                        f"worker {self.worker_id} {what} {coll.name} items: cannot reach the shared take"
                        f" folder {coll.output} (not mounted or not writable); other workers go on",
                        coll.name,
                    )
            if until_idle:
                return False
            await self._wait_wake(coll.name, REACH_S)
        return True

    async def _dispatch(self, coll: CollectionConfig, limit: int | None, until_idle: bool) -> None:
        throttle = self.throttles[coll.provider]
        provider = self.provider(coll.provider)
        stats = self.stats[coll.name]
        cover_first = get_kind(coll.kind).cover_first(coll.params)
        claimed = 0
        async with anyio.create_task_group() as tg:
            while not self._stopping and (limit is None or claimed < limit):
                # a slot is freed when the provider answers, before the take is written: bound the items
                # whose outputs wait for the disk, so a fast provider cannot pile them up in memory
                while stats.in_flight >= throttle.limit + WRITER_THREADS and not self._stopping:
                    await self._wait_wake(coll.name, 1.0)
                if coll.name in self._unreachable and not await self._reach(coll, until_idle):
                    break  # a --batch leaves the items of an unreachable take folder to other machines
                parts = max(self.processes, throttle.share)
                share = math.ceil(throttle.limit / parts)  # this process's part of the slots
                while throttle.in_use >= share and parts > 1 and not self._stopping:
                    await self._wait_wake(coll.name, 1.0)
                await throttle.acquire()
                if self._stopping:
                    throttle.release()
                    break
                how = Claim(
                    worker_id=self.worker_id,
                    lease_s=self.config.lease_s,
                    provider=coll.provider,
                    shared_with=self._shared[coll.provider],
                    cover_first=cover_first,
                    min_priority=self.min_priority.get(coll.name, 0),
                )
                slots = 1
                items: list[Item] = []
                # a paced provider's claim is its request's start (taken in the same transaction), so
                # a claimed item is one whose request starts now (what "in flight" counts), not one
                # waiting for the throttle, and a worker with nothing to claim takes no one's turn
                turned = asked = False
                # a claim whose commit a lost connection cut may have landed: the next heartbeat releases it
                with self._unless_lost("a claim"):
                    if throttle.pacing:
                        items, asked = await self._claim_turn(coll.name, throttle, how)
                        turned = bool(items)
                    if not asked:
                        # the free slots at once, in one claim transaction (the store's writes are the
                        # bottleneck of fast providers)
                        room = min(
                            CLAIM_BATCH,
                            throttle.limit + WRITER_THREADS - stats.in_flight,
                            share - throttle.in_use + 1 if parts > 1 else CLAIM_BATCH,
                            limit - claimed if limit is not None else CLAIM_BATCH,
                        )
                        while slots < room and throttle.try_acquire():
                            slots += 1
                        # concurrency over every live lease: what the others hold, plus this worker's
                        # own requests (the slots just taken not included) stays within the provider's limit
                        items = self.store.claim(
                            coll.name, slots, replace(how, limit=throttle.limit - (throttle.in_use - slots))
                        )
                        self._claimed.update(i.id for i in items)
                for _ in range(slots - len(items)):
                    throttle.release()
                if not items:
                    with self._unless_lost("a claim") as outage:
                        wake_at = self.store.next_wakeup([coll.name])
                        # pending items another worker or a pause holds back keep a --batch waiting
                        idle = until_idle and stats.in_flight == 0 and wake_at is None
                        if idle and not self.store.counts([coll.name])[coll.name]["pending"]:
                            break
                    if outage.error is not None:
                        await self._wait_wake(coll.name, RETRY_S)
                        continue
                    timeout = (
                        (wake_at - time.time() + 0.001) if wake_at else (math.inf if not until_idle else 1.0)
                    )
                    if parts > 1 and throttle.in_use < throttle.limit:
                        # other workers' leases may fill the provider's slots: one may free any moment
                        await self._wait_commit(coll.name, max(0.0, timeout))
                    else:
                        await self._wait_wake(coll.name, max(0.0, timeout))
                    continue
                for item in items:
                    claimed += 1
                    stats.in_flight += 1
                    tg.start_soon(self._run_item, coll, item, provider, throttle, turned)

    async def _claim_turn(self, collection: str, throttle: Throttle, how: Claim) -> tuple[list[Item], bool]:
        """Claim one item of a paced provider as its next request start (:meth:`Store.claim_turn`),
        once the throttle lets a request start. Returns the item (or none) and whether the store
        was asked at all (False: the provider stopped pacing meanwhile; claim as usual)."""
        items: list[Item] = []
        asked = False

        def take(interval_s: float) -> float:
            nonlocal asked
            asked = True
            # the slot this dispatcher holds is in in_use: the others may hold the rest
            limit = throttle.limit - throttle.in_use + 1
            got, wait = self.store.claim_turn(collection, interval_s, replace(how, limit=limit))
            self._claimed.update(i.id for i in got)
            items.extend(got)
            return wait if wait > 0 else (0.0 if got else -1.0)

        await throttle.wait_turn(take)
        return items, asked

    async def _run_item(
        self, coll: CollectionConfig, item: Item, provider: Provider, throttle: Throttle, turned: bool
    ) -> None:
        """Serve one claimed item (``turned``: its request's turn was taken before the claim);
        :meth:`_abandon` cancels it when this worker no longer holds it."""
        with anyio.CancelScope() as scope:
            self._items[item.id] = scope
            try:
                # a state that could not be written: the lease is released once the connection is
                # back (or expires, and another worker takes the item over); no attempt is spent
                with self._unless_lost(f"{coll.name} {item.key}"):
                    await self._serve_item(coll, item, provider, throttle, turned)
            finally:
                self._items.pop(item.id, None)
                self._claimed.discard(item.id)

    async def _serve_item(
        self, coll: CollectionConfig, item: Item, provider: Provider, throttle: Throttle, turned: bool
    ) -> None:
        stats = self.stats[coll.name]
        pc = self.config.providers[coll.provider]
        policy = self.policies[coll.provider]
        holding = True
        rebuild_final = False
        try:
            take_number = item.next_take or self.store.next_take_number(item.id)
            request = get_kind(coll.kind).build_request(coll, item, take_number)
            started = time.perf_counter()
            error: ProviderError | None = None
            cache_key = request_cache_key(coll, pc, request)
            cached = None if request.fresh else self.takes.cached(cache_key)
            result: Output | CachedTake | None = cached
            try:
                if cached is None:
                    if turned:
                        await throttle.space_send()
                    else:  # a cooldown may have begun since the claim: wait for it too
                        await throttle.wait_turn(functools.partial(self.store.reserve_start, coll.provider))
                    with anyio.fail_after(pc.timeout_s):
                        result = await provider.generate(request)
                    if not result.data:
                        raise ProviderError("the provider returned an empty file")
            except ProviderError as exc:
                error = exc
            except TimeoutError:
                error = ProviderError(f"timed out after {pc.timeout_s:g} s", retryable=True)
            except anyio.get_cancelled_exc_class():
                with self._unless_lost(f"{coll.name} {item.key}"):  # else its lease expires instead
                    self.store.release(item, "interrupted -> pending")  # synchronous: never cut short
                raise
            except Exception as exc:  # noqa: BLE001 - a provider bug fails this item only
                error = ProviderError(f"{type(exc).__name__}: {exc}")
            if cached is None and (error is None or error.status not in (None, 429)):
                throttle.note_accepted()  # the server answered without a 429: the rate it accepts
            # the provider is done with this request: its slot goes to the next one while the take is
            # written. After a slow request the dispatchers are woken now (a CPU-bound provider would
            # idle meanwhile: 5 ms per Piper clip); after a quick one, once the take is recorded, so that
            # the slots freed meanwhile are claimed together (one claim transaction for many items)
            in_use = throttle.in_use  # with this request, for a "too many concurrent requests" answer
            holding = False
            throttle.release()
            if time.perf_counter() - started >= SLOW_REQUEST_S:
                self._wake_sharing(coll)
            if error is None and result is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        elapsed = time.perf_counter() - started
                        if await self.takes.write(coll, item, request, result, elapsed, cache_key):
                            stats.completed += 1
                            if self.checker is not None:
                                self.checker.notify()
                            rebuild_final = get_kind(coll.kind).choosable  # the chosen one may have changed
                    except OSError as exc:
                        # a full, read-only or over-quota disk is not this item's fault: the item goes
                        # back to pending (no attempt spent) and the run stops with a StorageError
                        # (exit 74 headless); any other OSError fails this item only, the run goes on;
                        # a shared take folder this machine cannot reach fails the item and holds off
                        # this worker's claims of the collection (see the module docstring)
                        problem = storage_error(exc, path=coll.output)
                        if self.takes.shared and (
                            isinstance(exc, Unreachable)
                            or (
                                exc.errno in UNREACHABLE_ERRNOS
                                and not reachable(coll.output, self.config.root)
                            )
                        ):
                            error = ProviderError(str(Unreachable.of(coll.output, exc)))
                            self._unreachable.setdefault(coll.name, -math.inf)
                        elif problem is None:
                            error = ProviderError(f"cannot write the take file: {exc}")
                        else:
                            try:
                                self.store.release(item, f"not written, {problem.cause} -> pending")
                            except Exception:  # noqa: BLE001 - the state may be on that disk: recovery resets it
                                pass
                            self.cancel()
                            raise problem from exc
            if error is not None:
                self._failed(coll, item, error, policy, throttle, in_use)
            elif rebuild_final:
                await self.build_finals([coll.name])
        finally:
            stats.in_flight -= 1
            if holding:
                throttle.release()
            self._wake_sharing(coll)  # a slot of the provider is free, and room for one more take

    def _wake_sharing(self, coll: CollectionConfig) -> None:
        """Wake the dispatchers of the collections that share ``coll``'s provider (``coll`` included)."""
        for name in self._shared[coll.provider]:
            self.notify(name)

    def _throttle_event(self, coll: CollectionConfig, what: str) -> None:
        """Log a change of the provider's throttle: ``PROVIDER: what``."""
        self.store.log("warning", "cooldown", f"{coll.provider}: {what}", collection=coll.name)

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
                self.store.learn_pace(coll.provider, paced)
                self._throttle_event(coll, f"rate limited, pacing requests at {paced:.1f}/s")
        if error.retry_after_s:
            seconds = min(error.retry_after_s, policy.max_retry_after_s)
            if throttle.clock() + seconds > throttle.cooldown_until + 0.05:  # log each new cooldown once
                self._throttle_event(coll, f"server asked to wait, all requests cooling down {seconds:.1f} s")
            throttle.cool_down(seconds)
            self.store.cool_down(coll.provider, time.time() + seconds)
        tries = item.attempts + 1  # the claim did not count this try: only a real error does
        if policy.should_retry(error.retryable, tries):
            delay = policy.delay(tries, error.retry_after_s)
            self.store.fail(
                item, error.message, retry_at=time.time() + delay, max_attempts=policy.max_attempts
            )
        elif self.store.fail(item, error.message):
            stats.failed += 1
