"""Load ``config.toml`` into frozen dataclasses, with one-line errors.

The file format is TOML 1.0 (read with the standard :mod:`tomllib`). Every
problem is reported as a :class:`ConfigError` whose message names the file,
the dotted key and, where it can be found, the line, for example::

    config.toml:27: providers.piper.concurrency: must be an integer >= 1, got 0

Loading never writes anything.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project needs 3.11, tomli is the documented fallback
    import tomli as tomllib

COLLECTION_KINDS = ("dataset", "pages", "variants")
PROVIDER_KINDS = ("piper", "pillow", "simulated", "openai", "a1111", "elevenlabs")
#: Which provider kinds can serve which collection kinds.
PROVIDER_SUPPORTS = {
    "piper": {"dataset"},
    "pillow": {"pages", "variants"},
    "simulated": {"dataset", "pages", "variants"},
    "openai": {"dataset", "pages", "variants"},
    "a1111": {"pages", "variants"},
    "elevenlabs": {"dataset"},
}
BUILTIN_SLOTS = ("forensic", "balanced", "creative")


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
        kind: one of :data:`PROVIDER_KINDS`.
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
        kind: ``dataset`` (text -> WAV), ``pages`` (story -> PNG) or ``variants`` (photo x slot -> image).
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

    def provider_for(self, collection: str) -> ProviderConfig:
        """The provider config serving ``collection`` (a validated name)."""
        return self.providers[self.collections[collection].provider]


# --------------------------------------------------------------------------- helpers

_HEADER = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def _find_line(text: str, dotted: str) -> int | None:
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


class _Reader:
    """Typed access to one TOML table, raising ConfigError with file/line/key."""

    def __init__(self, path: Path, text: str, prefix: str, table: Mapping[str, Any]):
        self.path, self.text, self.prefix, self.table = path, text, prefix, table
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        dotted = f"{self.prefix}.{key}" if key else self.prefix
        return ConfigError(self.path, dotted, message, _find_line(self.text, dotted))

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, what: str = "") -> Any:
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
        value = self.get(
            key, int if integer else (int, float), default, what="an integer" if integer else "a number"
        )
        if value < minimum:
            raise self.error(
                key, f"must be {'an integer' if integer else 'a number'} >= {minimum:g}, got {value!r}"
            )
        return value if integer else float(value)

    def check_unknown(self, allowed: set[str] | None = None) -> None:
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


# --------------------------------------------------------------------------- loading

_GENERIC_PROVIDER_KEYS = {
    "kind",
    "concurrency",
    "min_interval_s",
    "requests_per_minute",
    "max_attempts",
    "timeout_s",
    "backoff_base_s",
    "backoff_max_s",
}

_COLLECTION_KEYS = {
    "dataset": {"format", "columns", "voice", "model", "speed"},
    "pages": {"width", "height", "style", "seed", "cover_first", "model"},
    "variants": {"slots", "extensions", "model", "size", "prompt"},
}


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Args:
        path: the ``config.toml`` path.

    Returns:
        A frozen :class:`Config`; paths are absolute.

    Raises:
        ConfigError: the file is missing, not UTF-8, not TOML, or a key is wrong.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(path, "", "not valid UTF-8", line) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(path, "", f"invalid TOML: {msg}", int(m.group(1)) if m else None) from None

    root = path.resolve().parent
    top = _Reader(path, text, "", data)
    top.used.update({"project", "collections", "providers", "presets"})
    for key in data:
        if key not in top.used:
            raise ConfigError(
                path,
                key,
                "unknown top-level table (expected project, collections, providers, presets)",
                _find_line(text, key),
            )

    project = _Reader(path, text, "project", _table(path, text, data, "project"))
    state = project.get("state", str, "data/state.sqlite")
    debounce_ms = project.number("debounce_ms", 300, minimum=0)
    project.check_unknown()

    presets: dict[str, dict[str, Any]] = {}
    for name, table in _table(path, text, data, "presets").items():
        reader = _Reader(path, text, f"presets.{name}", _require_table(path, text, f"presets.{name}", table))
        temperature = reader.number("temperature", 0.4)
        if temperature > 1:
            raise reader.error("temperature", f"must be between 0 and 1, got {temperature}")
        preset: dict[str, Any] = {"temperature": temperature}
        seed = reader.get("seed", int, None)
        if seed is not None:
            preset["seed"] = seed
        for key in ("contrast", "sharpness", "color", "brightness", "denoise", "warmth"):
            if key in table:
                preset[key] = reader.number(key, 0.0)
        reader.check_unknown()
        presets[name] = preset

    providers: dict[str, ProviderConfig] = {}
    for name, table in _table(path, text, data, "providers").items():
        reader = _Reader(
            path, text, f"providers.{name}", _require_table(path, text, f"providers.{name}", table)
        )
        kind = reader.get("kind", str, name if name in PROVIDER_KINDS else ...)
        if kind not in PROVIDER_KINDS:
            raise reader.error("kind", f"unknown provider kind {kind!r} (one of {', '.join(PROVIDER_KINDS)})")
        options = {k: v for k, v in table.items() if k not in _GENERIC_PROVIDER_KEYS}
        if "api_key" in options:
            raise reader.error(
                "api_key",
                "secrets do not belong in the config file: set api_key_env "
                "to the name of an environment variable instead",
            )
        providers[name] = ProviderConfig(
            name=name,
            kind=kind,
            concurrency=reader.number("concurrency", 1, minimum=1, integer=True),
            min_interval_s=reader.number("min_interval_s", 0.0),
            requests_per_minute=reader.number("requests_per_minute", 0.0),
            max_attempts=reader.number("max_attempts", 3, minimum=1, integer=True),
            timeout_s=reader.number("timeout_s", 120.0, minimum=0.001),
            backoff_base_s=reader.number("backoff_base_s", 0.5),
            backoff_max_s=reader.number("backoff_max_s", 8.0),
            options=options,
        )
        from .providers import validate_provider_options  # late: providers import config

        validate_provider_options(providers[name], reader.error)

    collections: dict[str, CollectionConfig] = {}
    for name, table in _table(path, text, data, "collections").items():
        prefix = f"collections.{name}"
        reader = _Reader(path, text, prefix, _require_table(path, text, prefix, table))
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise reader.error("", "collection names may use letters, digits, '_' and '-' only")
        kind = reader.get("kind", str, name if name in COLLECTION_KINDS else ...)
        if kind not in COLLECTION_KINDS:
            raise reader.error(
                "kind", f"unknown collection kind {kind!r} (one of {', '.join(COLLECTION_KINDS)})"
            )
        source = root / reader.get("source", str)
        output = root / reader.get("output", str, f"data/out/{name}")
        provider = reader.get("provider", str)
        if provider not in providers:
            raise reader.error(
                "provider", f"no [providers.{provider}] table (have: {', '.join(providers) or 'none'})"
            )
        if kind not in PROVIDER_SUPPORTS[providers[provider].kind]:
            raise reader.error(
                "provider", f"provider kind {providers[provider].kind!r} cannot generate {kind}"
            )
        params = _collection_params(reader, kind, presets)
        reader.check_unknown()
        collections[name] = CollectionConfig(name, kind, source, output, provider, params)
    if not collections:
        raise ConfigError(path, "collections", "no collections configured", _find_line(text, "collections"))

    return Config(
        path=path.resolve(),
        root=root,
        state_path=(root / state).resolve(),
        debounce_s=debounce_ms / 1000.0,
        collections=collections,
        providers=providers,
        presets=presets,
    )


def _table(path: Path, text: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    return _require_table(path, text, key, value)


def _require_table(path: Path, text: str, dotted: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, dotted, f"must be a table, got {value!r}", _find_line(text, dotted))
    return value


def _collection_params(reader: _Reader, kind: str, presets: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if kind == "dataset":
        fmt = reader.get("format", str, "auto")
        if fmt not in ("auto", "ljspeech", "festvox"):
            raise reader.error("format", f"must be auto, ljspeech or festvox, got {fmt!r}")
        params["format"] = fmt
        columns = reader.get("columns", list, None)
        if columns is not None:
            allowed = {"id", "text", "normalized", "emotion", "ignore"}
            if (
                not all(isinstance(c, str) and c in allowed for c in columns)
                or "id" not in columns
                or "text" not in columns
            ):
                raise reader.error(
                    "columns", f"must list column names from {sorted(allowed)} including id and text"
                )
            params["columns"] = columns
        for key in ("voice", "model"):
            value = reader.get(key, str, None)
            if value is not None:
                params[key] = value
        params["speed"] = reader.number("speed", 1.0, minimum=0.1)
    elif kind == "pages":
        params["width"] = reader.number("width", 768, minimum=64, integer=True)
        params["height"] = reader.number("height", 512, minimum=64, integer=True)
        params["style"] = reader.get("style", str, "watercolour picture-book illustration, soft light")
        params["seed"] = reader.get("seed", int, 1234)
        params["cover_first"] = reader.get("cover_first", bool, True)
        model = reader.get("model", str, None)
        if model is not None:
            params["model"] = model
    else:
        slots = reader.get("slots", list, list(BUILTIN_SLOTS))
        if not slots:
            raise reader.error("slots", "must list at least one slot")
        for slot in slots:
            name = slot.removeprefix("preset:") if isinstance(slot, str) else slot
            if not isinstance(slot, str) or (slot not in BUILTIN_SLOTS and name not in presets):
                raise reader.error(
                    "slots",
                    f"unknown slot {slot!r}: use forensic, balanced, creative "
                    "or the name of a [presets.NAME] table",
                )
        params["slots"] = list(slots)
        exts = reader.get("extensions", list, [".png", ".jpg", ".jpeg", ".webp"])
        params["extensions"] = [e.lower() for e in exts]
        for key in ("model", "size", "prompt"):
            value = reader.get(key, str, None)
            if value is not None:
                params[key] = value
    return params
