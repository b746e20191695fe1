"""Per-provider throttle: concurrency limit, request stagger, rate limit, shared cooldown.

One :class:`Throttle` per provider is shared by every collection that uses it:

* ``concurrency``: at most this many requests in flight (:meth:`slot`).
* ``min_interval_s``: at least this long between two request starts (the old
  system's 1.5 s heartbeat between variant requests).
* ``requests_per_minute``: a steady rate without bursts: one start every 60 / rpm
  seconds (a leaky bucket with a capacity of one request).
* a provider-wide cooldown (:meth:`cool_down`): when a server says Retry-After,
  every worker of that provider waits, not only the one that was told.
* across worker processes (the ``reserve`` of :meth:`wait_turn`): each request start is
  taken in the store, so the interval and the rate hold over all workers; cooldowns and the
  learned pace that one worker writes to the store are adopted by the others
  (:meth:`adopt`).
* a learned pace (:meth:`note_rate_limited`): after an HTTP 429 the provider is
  paced at 95 % of the rate the server accepted over the last 5 s, then probes
  upwards by 1 % per second until the next 429 (additive increase, multiplicative
  decrease, as in botocore's "adaptive" retry mode). So a provider whose
  ``requests_per_minute`` is unknown or too high settles just under the server's
  limit instead of bursting into it after every cooldown.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from ..settings import ProviderConfig


class Throttle:
    """See the module docstring. Use from one event loop.

    Args:
        name: the provider name (for display).
        concurrency: slots (>= 1); :attr:`limit` may be lowered later (e.g. on
            ElevenLabs' ``too_many_concurrent_requests``).
        min_interval_s: seconds between request starts.
        requests_per_minute: 0 for none.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        name: str,
        concurrency: int = 1,
        min_interval_s: float = 0.0,
        requests_per_minute: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.name = name
        self.limit = max(1, int(concurrency))
        self.min_interval_s = float(min_interval_s)
        self.requests_per_minute = float(requests_per_minute)
        self.clock = clock
        self.in_use = 0
        self.cooldown_until = 0.0  # on ``clock``
        self._waiters: deque[anyio.Event] = deque()
        self._gate = anyio.Lock()
        self._last_start = -math.inf
        self._last_send = -math.inf  # when this process last sent a paced request (see space_send)
        self._send_gate = anyio.Lock()
        self.starts: deque[float] = deque(maxlen=10_000)  # recent request starts on ``clock``
        self.learned_rps: float | None = None  # pace learned from 429s, requests/s at the last 429
        self._accepted: deque[float] = deque(maxlen=10_000)  # times of answers that were not 429
        self._last_429 = -math.inf
        #: live workers sharing this provider: a 429 measures this worker's share of the accepted rate
        self.share = 1

    @classmethod
    def from_config(cls, config: ProviderConfig) -> Throttle:
        """The throttle a ``[providers.NAME]`` table describes."""
        return cls(config.name, config.concurrency, config.min_interval_s, config.requests_per_minute)

    # --------------------------------------------------------------- concurrency

    async def acquire(self) -> None:
        """Wait for a free concurrency slot and take it.

        Waiters are served first come, first served, so collections sharing a
        provider take turns instead of the busiest one starving the others.
        """
        if self.try_acquire():
            return
        waiter = anyio.Event()
        self._waiters.append(waiter)
        try:
            await waiter.wait()
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.is_set():
                self.release()  # the slot was handed to us as we were cancelled: pass it on
            raise

    def try_acquire(self) -> bool:
        """Take a free slot without waiting: False when none is free or others wait for one."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        return False

    def release(self) -> None:
        """Give a slot back (any task may release a slot another task took)."""
        self.in_use -= 1
        self._hand_over()

    def _hand_over(self) -> None:
        while self._waiters and self.in_use < self.limit:
            self.in_use += 1
            self._waiters.popleft().set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with throttle.slot():`` holds one concurrency slot."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def set_limit(self, limit: int) -> None:
        """Change the concurrency limit (>= 1); lowering it takes effect as slots free up."""
        self.limit = max(1, int(limit))
        self._hand_over()

    # --------------------------------------------------------------- pacing

    def cool_down(self, seconds: float) -> None:
        """Hold every request start of this provider for ``seconds`` from now (never shortens)."""
        self.cooldown_until = max(self.cooldown_until, self.clock() + max(0.0, seconds))

    def cooling_down_for(self) -> float:
        """Seconds left of the current cooldown (0 when none)."""
        return max(0.0, self.cooldown_until - self.clock())

    # --------------------------------------------------------------- learned pace

    #: seconds of accepted answers a 429 measures the server's rate over
    LEARN_WINDOW_S = 5.0
    #: the pace after a 429, as a fraction of the accepted rate
    LEARN_MARGIN = 0.95
    #: growth of the pace per second without a 429
    PROBE_STEP = 0.01

    def note_accepted(self) -> None:
        """The server answered a request without a 429 (success or another error)."""
        self._accepted.append(self.clock())

    def note_rate_limited(self) -> float | None:
        """The server answered 429: lower the pace (at most once a second).

        Returns:
            The new pace, requests/s, or None when it was not changed.
        """
        now = self.clock()
        if now - self._last_429 < 1.0:
            return None  # one burst of 429s is one signal
        recent = [t for t in self._accepted if now - t <= self.LEARN_WINDOW_S]
        if not recent:
            return None  # nothing accepted lately to measure: the Retry-After cooldown alone applies
        new = len(recent) / max(now - recent[0], 1.0) * self.LEARN_MARGIN * self.share
        current = self.paced_rps(now)
        if current:
            new = min(new, current)
        self.learned_rps = max(0.05, new)
        self._last_429 = now
        return self.learned_rps

    def paced_rps(self, now: float | None = None) -> float | None:
        """The learned pace now, requests/s (it grows by PROBE_STEP per second since the last 429)."""
        if self.learned_rps is None:
            return None
        now = self.clock() if now is None else now
        return self.learned_rps * (1.0 + self.PROBE_STEP) ** max(0.0, now - self._last_429)

    def _interval(self, now: float) -> float:
        paced = self.paced_rps(now)
        return max(self.min_interval_s, 1.0 / paced if paced else 0.0)

    def adopt(
        self, cooldown_until: float, learned_rps: float | None, learned_at: float | None, now: float
    ) -> None:
        """Take over a cooldown and a learned pace another worker wrote to the store (unix times;
        ``now`` is the unix time): they hold for this worker too."""
        mono = self.clock()
        if cooldown_until > now:
            self.cooldown_until = max(self.cooldown_until, mono + cooldown_until - now)
        if learned_rps is not None and learned_at is not None and learned_rps != self.learned_rps:
            self.learned_rps = learned_rps
            self._last_429 = mono - max(0.0, now - learned_at)

    @property
    def pacing(self) -> bool:
        """True when a request start may have to wait (interval, rate, learned pace or cooldown)."""
        return (
            self.requests_per_minute > 0
            or self.min_interval_s > 0
            or self.learned_rps is not None
            or self.cooldown_until > self.clock()
        )

    async def space_send(self) -> None:
        """Right before sending a request whose turn was taken with its claim: at least the interval
        after this process's previous paced send, so the scheduling between a claim and its send
        (a busy event loop) cannot bunch two requests up at the server."""
        async with self._send_gate:
            rate = 60.0 / self.requests_per_minute if self.requests_per_minute > 0 else 0.0
            wait = self._last_send + max(self._interval(self.clock()), rate) - self.clock()
            if wait > 0:
                await anyio.sleep(wait)
            self._last_send = self.clock()

    async def wait_turn(self, reserve: Callable[[float], float] | None = None) -> bool:
        """Wait until a request may start (cooldown, min interval, rate, learned pace); take the start.

        Args:
            reserve: takes the provider's next request start across every worker process
                (:meth:`tui_app.store.Store.reserve_start`, or a claim that is also the start):
                called with the interval, seconds, it returns 0 when the start was taken, the
                seconds to wait before asking again, or a negative number when there is nothing
                to start (no start is taken then). None: this process paces alone.

        Returns:
            True when the start was taken (and recorded in :attr:`starts`), False when ``reserve``
            had nothing to start.
        """
        if not self.pacing:  # nothing to wait for, here or in the store
            self.starts.append(self.clock())
            return True
        async with self._gate:
            cooling = self.cooldown_until - self.clock()  # the store's cooldown is in the reservation
            if cooling > 0:
                await anyio.sleep(cooling)
            rate = 60.0 / self.requests_per_minute if self.requests_per_minute > 0 else 0.0
            interval = max(self._interval(self.clock()), rate)
            # exactly between this worker's own starts (monotonic clock), then the turn of the
            # whole project, taken from the store once it is due
            own = self._last_start + interval - self.clock()
            if own > 0:
                await anyio.sleep(own)
            if reserve is not None:
                while (wait := reserve(interval)) > 0:  # noqa: ASYNC110 - the turn is in the store
                    await anyio.sleep(wait)
                if wait < 0:
                    return False
            self._last_start = self.clock()
            self.starts.append(self._last_start)
        return True
