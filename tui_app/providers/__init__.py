"""Providers: one module per generator kind, behind :class:`~tui_app.providers.base.Provider`.

Each module ``tui_app/providers/<kind>.py`` offers ``validate_options(options, error)``
(config-time checks; ``error(key, message)`` returns a ConfigError to raise) and a
provider class; :func:`build_provider` maps a ``[providers.NAME]`` table to an instance.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..config import Config, ConfigError, ProviderConfig
from .base import Output, Provider, ProviderError, Request

__all__ = ["Output", "Provider", "ProviderError", "Request", "build_provider", "validate_provider_options"]

_MODULES = {
    "piper": "piper",
    "pillow": "pillow",
    "simulated": "simulated",
    "openai": "openai_api",
    "a1111": "a1111",
    "elevenlabs": "elevenlabs",
}


def _module(kind: str) -> Any:
    try:
        return importlib.import_module(f".{_MODULES[kind]}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(__name__):
            return None
        raise


def validate_provider_options(config: ProviderConfig, error: Callable[[str, str], ConfigError]) -> None:
    """Check a provider table's kind-specific keys.

    Raises:
        ConfigError: built by ``error(key, message)`` for the first bad key.
    """
    module = _module(config.kind)
    if module is None:
        raise error("kind", f"provider kind {config.kind!r} is not available in this version of tui_app")
    module.validate_options(dict(config.options), error)


def build_provider(config: Config, name: str) -> Provider:
    """Instantiate the provider ``name`` of a validated config."""
    pc = config.providers[name]
    if pc.kind == "piper":
        from .piper import PiperProvider

        return PiperProvider(pc, config.root)
    if pc.kind == "pillow":
        from .pillow import PillowProvider

        return PillowProvider(pc)
    if pc.kind == "simulated":
        from .simulated import SimulatedProvider

        return SimulatedProvider(pc)
    module = _module(pc.kind)
    return module.create(pc, config)
