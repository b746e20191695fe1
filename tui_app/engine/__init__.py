"""Scheduling: the engine (workers with leases), take writing, finals, throttles and the retry policy."""

from .core import REGENERATE_PRIORITY, RETRY_PRIORITY, Engine, RunStats
from .retry import RetryPolicy
from .takes import CachedTake, TakeWriter, request_cache_key
from .throttle import Throttle

__all__ = [
    "REGENERATE_PRIORITY",
    "RETRY_PRIORITY",
    "CachedTake",
    "Engine",
    "RetryPolicy",
    "RunStats",
    "TakeWriter",
    "Throttle",
    "request_cache_key",
]
