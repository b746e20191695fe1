"""Scheduling: the engine, per-provider throttles, the retry policy and the regeneration debouncer."""

from .core import Engine, EngineEvent, RunStats, resolve_seed
from .debounce import RegenerateDebouncer
from .retry import RetryPolicy, is_retryable_status
from .throttle import Throttle

__all__ = [
    "Engine",
    "EngineEvent",
    "RegenerateDebouncer",
    "RetryPolicy",
    "RunStats",
    "Throttle",
    "is_retryable_status",
    "resolve_seed",
]
