"""The provider interface shared by every generator.

A provider turns one :class:`Request` (an item plus its collection's
parameters) into one :class:`Output` (the bytes of a WAV or image file and
their metadata). Providers never write take files or touch the store: the
engine writes the bytes atomically and records the take, so every provider
gets durability and the guarded final write for free.

Failures are raised as :class:`ProviderError`; ``retryable`` decides whether
the engine backs off and tries again (timeouts, connection errors, 408, 409,
429, 5xx) or fails the item at once (other 4xx, bad input, malformed answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..redact import redact

#: HTTP statuses worth another attempt besides every 5xx: timeout, conflict, rate limit.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    """True for 408, 409, 429 and every 5xx (as openai-python's ``_base_client.py`` decides)."""
    return status in RETRYABLE_STATUS or 500 <= status <= 599


class ProviderError(Exception):
    """A failed generation.

    The message is redacted here (:func:`tui_app.redact.redact`), so an error built
    anywhere, from any text (a server's answer, another exception's ``str``), holds no
    registered secret.

    Args:
        message: one line for the log and the item's ``last_error``; secrets are removed.
        retryable: True for transient faults worth another attempt.
        retry_after_s: server-requested delay before the next request, seconds (provider-wide).
        status: HTTP status code, when there was one.
        lower_concurrency: the server refused because too many requests were in
            flight (ElevenLabs' ``too_many_concurrent_requests``): the engine lowers
            the provider's concurrency limit to one below what was in flight.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        status: int | None = None,
        lower_concurrency: bool = False,
    ):
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.status = status
        self.lower_concurrency = lower_concurrency


#: What a provider is asked to make: speech from text, a picture from a prompt, a variant of a photo.
#: Collection kinds map to tasks (:attr:`tui_app.kinds.Kind.task`); providers know only tasks.
TASKS = ("speech", "picture", "variant")


@dataclass(frozen=True)
class Request:
    """Everything a provider needs to generate one take.

    Attributes:
        collection: collection name.
        task: what to make, one of :data:`TASKS` (``speech``, ``picture``, ``variant``).
        key: item key (entry id, ``page_003``, ``astronaut.s1-balanced``).
        text: entry text / page text / photo file name.
        params: the item's params merged with any regenerate overrides
            (emotion, normalized, prompt, seed, slot, variant, temperature, ...).
        options: the collection's parameters from the config (voice, width, height, style, ...).
        source: for variants, the absolute path of the photo; else None.
        take_number: the number this take will get (1 for the first).
        fresh: True for an explicit regeneration (a provider that takes a seed picks a new one).
    """

    collection: str
    task: str
    key: str
    text: str
    params: Mapping[str, Any]
    options: Mapping[str, Any]
    source: Path | None = None
    take_number: int = 1
    fresh: bool = False


@dataclass(frozen=True)
class Output:
    """One generated file, not yet written.

    Attributes:
        data: the whole file (WAV or PNG/JPEG/WebP bytes).
        suffix: file name suffix with the dot (``.wav``, ``.png``).
        duration_s, sample_rate: for audio (seconds, Hz).
        width, height: for images, pixels.
        model: model or voice name used.
        seed: the seed actually used, when the generator takes one.
        params: the generation parameters worth recording with the take.
    """

    data: bytes
    suffix: str
    duration_s: float | None = None
    sample_rate: int | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    seed: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """A generator. ``generate`` may be called concurrently up to the throttle's limit."""

    name: str

    async def prepare(self, options: Mapping[str, Any] | None = None) -> None:
        """Load what the collection with these parameters needs (a voice, a key) before its first item.

        Raises:
            ProviderError: the provider cannot work (missing package, voice or API key).
        """
        ...

    async def generate(self, request: Request) -> Output:
        """Produce one take; raise :class:`ProviderError` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...


def lone_provider_error(group: BaseExceptionGroup) -> ProviderError | None:
    """The one :class:`ProviderError` of ``group`` when it holds nothing else, else None.

    A provider that cannot start (``prepare``) fails inside a task group; callers raise it as
    itself, so the command line shows its one-line message instead of an exception group.
    """
    failed = group.subgroup(ProviderError)
    if failed is None or len(failed.exceptions) != 1 or group.split(ProviderError)[1] is not None:
        return None
    inner = failed.exceptions[0]
    return inner if isinstance(inner, ProviderError) else None
