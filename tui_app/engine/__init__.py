"""Scheduling: the engine, take writing, per-provider throttles, the retry policy and the debouncer."""

from .core import REGENERATE_PRIORITY, RETRY_PRIORITY, Engine, RunStats
from .debounce import RegenerateDebouncer
from .retry import RetryPolicy
from .takes import CachedTake, TakeWriter, request_cache_key
from .throttle import Throttle

__all__ = [
    "REGENERATE_PRIORITY",
    "RETRY_PRIORITY",
    "CachedTake",
    "Engine",
    "RegenerateDebouncer",
    "RetryPolicy",
    "RunStats",
    "TakeWriter",
    "Throttle",
    "request_cache_key",
]
