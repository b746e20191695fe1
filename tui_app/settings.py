"""The configuration's frozen dataclasses and typed access to its TOML tables.

This module is the bottom of the configuration: :mod:`tui_app.config` loads a
file into these dataclasses, and the collection kinds and providers validate
their own keys through :class:`TableReader`, whose errors name the file, the
line and the dotted key::

    config.toml:27: providers.piper.concurrency: must be an integer >= 1, got 0
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .qa_limits import ASRSettings, QAThresholds

#: The largest seed a config may set: 31 bits fit every generator's seed field (as random seeds do).
MAX_SEED = 2**31 - 1
#: The most new takes one regenerate makes per item (``--takes N``, or the values of a ``--sweep``).
MAX_TAKES = 100
#: The most processes ``--workers N`` starts (on ``--batch`` and on ``worker``; also the most the
#: ``worker`` default of one per core starts): more is refused before anything starts (each process
#: holds a state connection and its own provider sessions: a Piper voice is about 120 MB).
MAX_PROCESSES = 64


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
        emotions: the config's ``[emotions.NAME]`` tables (``{name: {key: value}}``), for the
            providers that map an emotion to synthesis settings (``piper``).
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
    emotions: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


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
        state_path: the SQLite state file (default ``data/state.sqlite``); with a PostgreSQL
            state, where that file would be (its folder holds the orphans folder).
        debounce_s: quiet window that merges regenerate requests into one batch, seconds.
        lease_s: how long a claim holds an item without a heartbeat, seconds (then any worker
            may take it back).
        heartbeat_s: how often a worker renews its leases, seconds (< ``lease_s``).
        collections: by name, in file order.
        providers: by name.
        presets: ``[presets.NAME]`` tables for variant slots.
        emotions: ``[emotions.NAME]`` tables: Piper synthesis settings per emotion.
        qa: the ``[qa]`` table: the speech QA on or off and the limits of its flags.
        asr: the ``[qa.asr]`` table: the ASR check.
        state_uri: the PostgreSQL connection URI when ``[project] state`` is one, else None.
        state_password_env: the name of the environment variable holding the PostgreSQL
            password (``[project] state_password_env``), or None; never the password itself.
    """

    path: Path
    root: Path
    state_path: Path
    debounce_s: float
    collections: Mapping[str, CollectionConfig]
    providers: Mapping[str, ProviderConfig]
    presets: Mapping[str, Mapping[str, Any]]
    lease_s: float = 30.0
    heartbeat_s: float = 5.0
    emotions: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    qa: QAThresholds = field(default_factory=QAThresholds)
    asr: ASRSettings = field(default_factory=ASRSettings)
    state_uri: str | None = None
    state_password_env: str | None = None

    @property
    def state_location(self) -> Path | str:
        """What :func:`tui_app.store.open_store` opens: the PostgreSQL URI, else the SQLite file."""
        return self.state_uri if self.state_uri is not None else self.state_path


# --------------------------------------------------------------------------- helpers

_HEADER = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def find_line(text: str, dotted: str) -> int | None:
    """Best-effort line number (1-based) of ``dotted`` key in TOML ``text`` (a table: its header, or
    the first header of its sub-tables)."""
    parts = dotted.split(".")
    table, key = ".".join(parts[:-1]), parts[-1]
    current = ""
    header_line = sub_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1).replace('"', "").replace(" ", "")
            if current == dotted:
                header_line = number
            elif sub_line is None and current.startswith(dotted + "."):
                sub_line = number  # a table only seen through its sub-tables: [provider.sim]
            continue
        m = _KEY.match(line)
        if m and current == table and m.group(1).strip("\"'") == key:
            return number
    return header_line or sub_line


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
            ConfigError: missing required key (naming the table's line; or, first, a key of the
                table that looks like its misspelling: ``providr: unknown key (did you mean
                'provider'? ...)``), or a value of another type (``true`` is not a number).
        """
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                # a misspelling of the key is the likely cause: name it first, with its line
                for other in self.table:
                    if other != key and close_key(other, [key]):
                        raise self.error(other, f"unknown key (did you mean {key!r}? {key} is required)")
                error = self.error(key, "is required")
                if error.line is None and self.prefix:  # name the table's header line
                    error = ConfigError(
                        self.path, error.key, error.message, find_line(self.text, self.prefix)
                    )
                raise error
            return default
        value = self.table[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok:
            raise self.error(key, f"must be {what or _type_name(kind)}, got {show(value)}")
        return value

    def number(
        self,
        key: str,
        default: float | None,
        *,
        minimum: float = 0.0,
        maximum: float | None = None,
        integer: bool = False,
    ) -> Any:
        """A finite number (an int with ``integer``) between ``minimum`` and ``maximum`` (inclusive).

        ``default`` is returned unchecked when the key is absent (None: optional).

        Raises:
            ConfigError: not a number (``true`` is not one), NaN or infinite, or out of range.
        """
        value = self.get(
            key, int if integer else (int, float), default, what="an integer" if integer else "a number"
        )
        if value is None:
            return None
        if key in self.table and (
            (isinstance(value, float) and not math.isfinite(value))
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            kind = "an integer" if integer else "a number"
            low = _number(minimum)
            want = f"between {low} and {_number(maximum)}" if maximum is not None else f">= {low}"
            raise self.error(key, f"must be {kind} {want}, got {show(value)}")
        return value if integer else float(value)

    def strings(
        self, key: str, default: list[str] | None, *, pattern: str = "", what: str = "", empty: bool = False
    ) -> list[str] | None:
        """An array of strings (``default`` when absent), each matching the regular expression
        ``pattern`` when one is given; an empty array only with ``empty``.

        Raises:
            ConfigError: not an array, an element that is not a string or does not match
            (``what`` describes the elements in the message), or an empty array.
        """
        value = self.get(key, list, default)
        if key not in self.table:
            return value
        what = what or "strings"
        for element in value:
            if not isinstance(element, str) or (pattern and not re.fullmatch(pattern, element)):
                raise self.error(key, f"must be an array of {what}, got {show(element)} in it")
        if not value and not empty:
            raise self.error(key, f"must be a non-empty array of {what}")
        return list(value)

    def location(self, key: str, default: str | None = None) -> str:
        """A file or folder path: a non-empty string (``default`` when absent; required if None).

        Raises:
            ConfigError: missing, not a string, or empty.
        """
        value = self.get(key, str, ... if default is None else default, what="a path (a string)")
        if not value.strip():
            raise self.error(key, "must be a path, got an empty string")
        return str(value)

    def check_unknown(self, allowed: set[str] | None = None) -> None:
        """Refuse any key that was not read (nor listed in ``allowed``): usually a misspelling.

        Raises:
            ConfigError: naming the first unknown key.
        """
        allowed = self.used if allowed is None else allowed | self.used
        for key in self.table:
            if key not in allowed:
                hint = (
                    close_key(key, allowed)
                    or " (check the spelling; see the README's configuration reference)"
                )
                raise self.error(key, "unknown key" + hint)


#: Unicode category Cc: C0 controls, DEL and C1 controls (what a terminal may act on).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1; tab and line breaks too) written as
    ``repr`` writes it (``\\x1b``, ``\\n``, ``\\t``): a user-supplied name (a file name, a key)
    quoted in a one-line message cannot move the cursor, recolour the terminal or break the line."""
    return _CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)


def parse_seed(text: str) -> int:
    """A seed typed as an override (``--set seed=N``, the regenerate dialog): an integer from 0 to
    :data:`MAX_SEED` (2147483647), the range every generator's seed field holds.

    Raises:
        ValueError: not an integer, or out of that range.
    """
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed is 0 to {MAX_SEED}")
    return value


def closest(key: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``key`` looks like a misspelling of (:func:`difflib.get_close_matches`,
    similarity at least 0.75), or None."""
    match = difflib.get_close_matches(key, sorted(set(known)), n=1, cutoff=0.75)
    return match[0] if match else None


def close_key(key: str, known: Iterable[str]) -> str:
    """`` (did you mean 'provider'?)`` when ``key`` looks like a misspelling of one of ``known``
    (:func:`closest`), else ``""``."""
    match = closest(key, known)
    return f" (did you mean {match!r}?)" if match else ""


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks the cut), for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_values(path: Path, text: str, data: Mapping[str, Any], prefix: str = "") -> None:
    """Refuse what is wrong whatever the key, at any depth: NaN or infinite floats (TOML ``nan``,
    ``inf``), and control characters other than tab, newline and carriage return (Unicode
    category Cc) in strings and in key names.

    Raises:
        ConfigError: naming the first such key (file, line, dotted key).
    """
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            problem = _problem(key)
        else:
            problem = _problem(key) or _problem(value)
        if problem:
            raise ConfigError(path, dotted, problem, find_line(text, dotted))
        if isinstance(value, dict):
            check_values(path, text, value, dotted)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _problem(value: Any) -> str:
    """What is wrong with a scalar (or anywhere inside an array or inline table), else ``""``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if isinstance(value, str):
        m = _CONTROL.search(value)
        return f"control character U+{ord(m.group()):04X} in {show(value)}" if m else ""
    if isinstance(value, list):
        return next((p for p in map(_problem, value) if p), "")
    if isinstance(value, dict):
        return next((p for k, v in value.items() for p in (_problem(k), _problem(v)) if p), "")
    return ""


def _number(value: float) -> str:
    """``2147483647`` or ``0.1`` (``:g`` would turn large integers into exponents)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
