"""Throttle (concurrency, min interval, shared cooldown, rate) and retry policy."""

from __future__ import annotations

import time

import anyio
import pytest

from tui_app.engine import RetryPolicy, Throttle
from tui_app.providers import is_retryable_status


async def _hammer(throttle: Throttle, n: int, work_s: float) -> tuple[int, list[float]]:
    peak = 0
    starts: list[float] = []

    async def one() -> None:
        nonlocal peak
        async with throttle.slot():
            await throttle.wait_turn()
            starts.append(time.monotonic())
            peak = max(peak, throttle.in_use)
            await anyio.sleep(work_s)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return peak, starts


def test_concurrency_never_above_limit():
    throttle = Throttle("t", concurrency=3)
    peak, starts = anyio.run(_hammer, throttle, 20, 0.01)
    assert peak == 3 and len(starts) == 20 and throttle.in_use == 0


def test_min_interval_between_request_starts():
    throttle = Throttle("t", concurrency=8, min_interval_s=0.05)
    _, starts = anyio.run(_hammer, throttle, 8, 0.0)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.05 - 0.002, gaps


def test_requests_per_minute_without_bursts():
    throttle = Throttle("t", concurrency=10, requests_per_minute=1200)  # one per 50 ms
    _, starts = anyio.run(_hammer, throttle, 6, 0.0)
    assert starts[-1] - starts[0] >= 4 * 0.05 * 0.9  # no burst of 6 at once


def test_cooldown_holds_every_worker():
    async def main() -> list[float]:
        throttle = Throttle("t", concurrency=4)
        throttle.cool_down(0.2)
        t0 = time.monotonic()
        _, starts = await _hammer(throttle, 4, 0.0)
        return [s - t0 for s in starts]

    assert min(anyio.run(main)) >= 0.19


def test_lowering_the_limit():
    throttle = Throttle("t", concurrency=4)
    throttle.set_limit(1)
    peak, _ = anyio.run(_hammer, throttle, 5, 0.005)
    assert peak == 1


@pytest.mark.parametrize(
    "status,retry",
    [
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (422, False),
    ],
)
def test_retryable_statuses(status, retry):
    assert is_retryable_status(status) is retry


def test_backoff_doubles_with_jitter_and_caps():
    policy = RetryPolicy(max_attempts=5, base_s=0.5, max_s=8.0)
    assert policy.delay(1, rand=lambda: 0.0) == 0.5
    assert policy.delay(2, rand=lambda: 0.0) == 1.0
    assert policy.delay(3, rand=lambda: 0.999) == pytest.approx(2.0 * 0.75, rel=1e-3)
    assert policy.delay(10, rand=lambda: 0.0) == 8.0


def test_retry_after_honoured_up_to_120_s():
    policy = RetryPolicy()
    assert policy.delay(1, retry_after_s=30.0) == 30.0
    assert policy.delay(1, retry_after_s=500.0, rand=lambda: 0.0) == 0.5


def test_should_retry():
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(True, 1) and policy.should_retry(True, 2)
    assert not policy.should_retry(True, 3)
    assert not policy.should_retry(False, 1)


def test_a_429_paces_the_provider_at_the_rate_the_server_accepted():
    now = [0.0]
    throttle = Throttle("t", concurrency=8, clock=lambda: now[0])
    for i in range(100):  # 20 accepted answers per second for 5 s
        now[0] = i * 0.05
        throttle.note_accepted()
    now[0] = 5.0
    assert throttle.note_rate_limited() == pytest.approx(19.0)  # 100 answers over 5 s = 20/s, x 0.95
    learned = throttle.learned_rps
    now[0] = 5.5
    assert throttle.note_rate_limited() is None  # the same burst of 429s is one signal
    now[0] = 15.0
    assert throttle.paced_rps() == pytest.approx(learned * 1.01**10)  # probing upwards without 429s
    for i in range(30):  # the server took 30/s for a second, then said 429
        now[0] = 15.0 + i / 30
        throttle.note_accepted()
    now[0] = 16.0
    assert throttle.note_rate_limited() == pytest.approx(
        learned * 1.01**11
    )  # never above the pace that failed


def test_no_accepted_answers_means_no_pace_to_learn():
    throttle = Throttle("t", concurrency=8)
    assert throttle.note_rate_limited() is None and throttle.learned_rps is None


def test_learned_pace_spaces_request_starts():
    throttle = Throttle("t", concurrency=8)
    for _ in range(10):
        throttle.note_accepted()
    assert throttle.note_rate_limited() == pytest.approx(9.5)  # 10 in under a second: 10/s x 0.95
    _, starts = anyio.run(_hammer, throttle, 5, 0.0)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 1 / 9.6
