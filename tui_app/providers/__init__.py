"""Providers: one module per generator kind, behind :class:`~tui_app.providers.base.Provider`.

:data:`PROVIDER_KINDS` is the one list of provider kinds: which module
implements each and which collection kinds it can serve. Each module offers
``validate_options(options, error)`` (config-time checks; ``error(key,
message)`` returns a ConfigError to raise) and ``create(config, root)``.
Modules are imported only when a project uses them (the HTTP ones pull in httpx).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import ConfigError, ProviderConfig
from .base import TASKS, Output, Provider, ProviderError, Request, is_retryable_status, lone_provider_error


@dataclass(frozen=True)
class ProviderKind:
    """One provider kind.

    Attributes:
        name: the value of ``[providers.NAME] kind``.
        module: the module under ``tui_app.providers`` that implements it.
        serves: the tasks it can do (see :data:`~.base.TASKS`).
    """

    name: str
    module: str
    serves: frozenset[str]

    def load(self) -> Any:
        """The implementing module (imported on first use)."""
        return importlib.import_module(f".{self.module}", __name__)


#: Every provider kind by name.
PROVIDER_KINDS: dict[str, ProviderKind] = {
    spec.name: spec
    for spec in (
        ProviderKind("piper", "piper", frozenset({"speech"})),
        ProviderKind("pillow", "pillow", frozenset({"picture", "variant"})),
        ProviderKind("simulated", "simulated", frozenset({"speech", "picture", "variant"})),
        ProviderKind("openai", "openai_api", frozenset({"speech", "picture", "variant"})),
        ProviderKind("a1111", "a1111", frozenset({"picture", "variant"})),
        ProviderKind("elevenlabs", "elevenlabs", frozenset({"speech"})),
    )
}


def validate_provider_options(config: ProviderConfig, error: Callable[[str, str], ConfigError]) -> None:
    """Check a provider table's kind-specific keys.

    Raises:
        ConfigError: built by ``error(key, message)`` for the first bad key.
    """
    PROVIDER_KINDS[config.kind].load().validate_options(dict(config.options), error)


def build_provider(config: ProviderConfig, root: Path) -> Provider:
    """Instantiate a validated ``[providers.NAME]`` table; ``root`` is the project folder."""
    provider: Provider = PROVIDER_KINDS[config.kind].load().create(config, root)
    return provider


__all__ = [
    "PROVIDER_KINDS",
    "Output",
    "Provider",
    "ProviderError",
    "lone_provider_error",
    "ProviderKind",
    "Request",
    "TASKS",
    "build_provider",
    "is_retryable_status",
    "validate_provider_options",
]
