"""Retry policy: which failures are retried and how long to back off.

Modelled on openai-python's ``_base_client.py``: exponential backoff from
0.5 s doubling to a cap of 8 s, reduced by up to 25 % jitter
(``delay = min(base * 2**(n-1), cap) * (1 - 0.25 * random())``), and a
server's Retry-After honoured when it is between 0 and 120 s (DESIGN.md).
Which failures are retryable is the provider's call (:class:`~tui_app.providers.ProviderError`,
:func:`~tui_app.providers.base.is_retryable_status`): timeouts, connection errors, HTTP 408,
409, 429 and 5xx; anything else (other 4xx, ``insufficient_quota``, bad input) fails at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..settings import ProviderConfig


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff of one provider.

    Attributes:
        max_attempts: tries per item, the first included (>= 1).
        base_s: first backoff, seconds.
        max_s: backoff cap, seconds.
        max_retry_after_s: longest server-requested delay that is honoured as given, seconds.
    """

    max_attempts: int = 3
    base_s: float = 0.5
    max_s: float = 8.0
    max_retry_after_s: float = 120.0

    @classmethod
    def from_config(cls, config: ProviderConfig) -> RetryPolicy:
        """The policy of a ``[providers.NAME]`` table."""
        return cls(config.max_attempts, config.backoff_base_s, config.backoff_max_s)

    def should_retry(self, retryable: bool, attempts: int) -> bool:
        """Whether a failure after ``attempts`` tries (>= 1) gets another one."""
        return retryable and attempts < self.max_attempts

    def delay(
        self, attempts: int, retry_after_s: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before try ``attempts + 1``.

        Args:
            attempts: tries made so far (>= 1).
            retry_after_s: the server's Retry-After, seconds, if it sent one.
            rand: a uniform [0, 1) source (injectable for tests).
        """
        if retry_after_s is not None and 0 <= retry_after_s <= self.max_retry_after_s:
            return float(retry_after_s)
        backoff = min(self.base_s * 2.0 ** max(0, attempts - 1), self.max_s)
        return backoff * (1.0 - 0.25 * rand())
