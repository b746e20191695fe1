"""The configuration's frozen dataclasses and typed access to its TOML tables.

This module is the bottom of the configuration: :mod:`tui_app.config` loads a
file into these dataclasses, and the collection kinds and providers validate
their own keys through :class:`TableReader`, whose errors name the file, the
line and the dotted key::

    config.toml:27: providers.piper.concurrency: must be an integer >= 1, got 0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A bad configuration: ``str(err)`` is one line naming file, line and key."""

    def __init__(self, path: Path | str, key: str, message: str, line: int | None = None):
        self.path = Path(path)
        self.key = key
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line else f"{self.path}"
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class ProviderConfig:
    """One ``[providers.NAME]`` table.

    Attributes:
        name: the table name, referenced by collections' ``provider`` key.
        kind: a provider kind (see :data:`tui_app.providers.PROVIDER_KINDS`).
        concurrency: requests in flight at once (>= 1).
        min_interval_s: minimum seconds between two request starts (0 = none).
        requests_per_minute: steady request rate cap without bursts (0 = none).
        max_attempts: tries per item before it is marked failed (>= 1).
        timeout_s: seconds one request may take before it counts as a retryable timeout.
        backoff_base_s, backoff_max_s: exponential backoff start and cap, seconds.
        options: the remaining, provider-specific keys (voice, base_url, ...).
    """

    name: str
    kind: str
    concurrency: int = 1
    min_interval_s: float = 0.0
    requests_per_minute: float = 0.0
    max_attempts: int = 3
    timeout_s: float = 120.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionConfig:
    """One ``[collections.NAME]`` table.

    Attributes:
        name: the table name (used in the CLI, the DB and ``status --json``).
        kind: a collection kind (see :mod:`tui_app.kinds`): ``dataset`` (text -> WAV), ``pages``
            (story -> PNG) or ``variants`` (photo x slot -> image).
        source: input file or folder, resolved against the project root.
        output: folder for take files, resolved against the project root.
        provider: name of a ``[providers.NAME]`` table.
        params: kind-specific parameters (voice, width, height, style, seed, slots, columns, ...).
    """

    name: str
    kind: str
    source: Path
    output: Path
    provider: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole project configuration.

    Attributes:
        path: the config file.
        root: the project folder (the config file's folder); relative paths resolve here.
        state_path: the SQLite state file (default ``data/state.sqlite``).
        debounce_s: quiet window that merges regenerate requests into one batch, seconds.
        collections: by name, in file order.
        providers: by name.
        presets: ``[presets.NAME]`` tables for variant slots.
    """

    path: Path
    root: Path
    state_path: Path
    debounce_s: float
    collections: Mapping[str, CollectionConfig]
    providers: Mapping[str, ProviderConfig]
    presets: Mapping[str, Mapping[str, Any]]


# --------------------------------------------------------------------------- helpers

_HEADER = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def find_line(text: str, dotted: str) -> int | None:
    """Best-effort line number (1-based) of ``dotted`` key in TOML ``text``."""
    parts = dotted.split(".")
    table, key = ".".join(parts[:-1]), parts[-1]
    current = ""
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1).replace('"', "").replace(" ", "")
            if current == dotted:
                header_line = number
            continue
        m = _KEY.match(line)
        if m and current == table and m.group(1).strip("\"'") == key:
            return number
    return header_line


class TableReader:
    """Typed access to one TOML table; every problem is a :class:`ConfigError` naming file, line and key.

    Args:
        path: the config file (for messages).
        text: its text (to find line numbers).
        prefix: the dotted name of the table (``collections.dataset``).
        table: the parsed table.
    """

    def __init__(self, path: Path, text: str, prefix: str, table: Mapping[str, Any]):
        self.path, self.text, self.prefix, self.table = path, text, prefix, table
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about ``key`` of this table (raise it)."""
        dotted = f"{self.prefix}.{key}" if key else self.prefix
        return ConfigError(self.path, dotted, message, find_line(self.text, dotted))

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = "") -> Any:
        """The value of ``key``, checked to be of type ``kind`` (``default`` when absent; required if none).

        Raises:
            ConfigError: missing required key, or a value of another type (``true`` is not a number).
        """
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self.error(key, "is required")
            return default
        value = self.table[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok:
            raise self.error(key, f"must be {what or _type_name(kind)}, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0, integer: bool = False) -> Any:
        """A number (an int with ``integer``) of at least ``minimum``.

        Raises:
            ConfigError: not a number, or below ``minimum``.
        """
        value = self.get(
            key, int if integer else (int, float), default, what="an integer" if integer else "a number"
        )
        if value < minimum:
            raise self.error(
                key, f"must be {'an integer' if integer else 'a number'} >= {minimum:g}, got {value!r}"
            )
        return value if integer else float(value)

    def check_unknown(self, allowed: set[str] | None = None) -> None:
        """Refuse any key that was not read (nor listed in ``allowed``): usually a misspelling.

        Raises:
            ConfigError: naming the first unknown key.
        """
        allowed = self.used if allowed is None else allowed | self.used
        for key in self.table:
            if key not in allowed:
                raise self.error(
                    key, "unknown key (check the spelling; see the README's configuration reference)"
                )


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))
