"""Load ``config.toml`` into frozen dataclasses, with one-line errors.

The file format is TOML 1.0 (read with the standard :mod:`tomllib`). Every
problem is reported as a :class:`ConfigError` whose message names the file,
the dotted key and, where it can be found, the line, for example::

    config.toml:27: providers.piper.concurrency: must be an integer >= 1, got 0

Loading never writes anything.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .kinds import KINDS
from .providers import PROVIDER_KINDS, validate_provider_options
from .providers.piper import EMOTION_RANGES
from .qa_limits import ENGINES, QA_INTEGER_FIELDS, QA_POSITIVE_FIELDS, QA_RANGES, ASRSettings, QAThresholds
from .settings import (
    MAX_SEED,
    CollectionConfig,
    Config,
    ConfigError,
    ProviderConfig,
    TableReader,
    check_values,
    close_key,
    closest,
    find_line,
    show,
)
from .store import ENV_NAME, UriProblem, check_postgres_uri, is_postgres_uri

__all__ = ["CollectionConfig", "Config", "ConfigError", "ProviderConfig", "load_config", "read_qa_table"]

# --------------------------------------------------------------------------- loading

#: ``[presets.NAME]`` tuning keys and their ranges (see :func:`tui_app.render.variants.render_variant`):
#: Pillow enhance factors (1.0 = unchanged), denoise strength, warmth (-1 cool .. 1 warm).
_PRESET_RANGES = (
    ("contrast", 0.0, None),
    ("sharpness", 0.0, None),
    ("color", 0.0, None),
    ("brightness", 0.0, None),
    ("denoise", 0.0, 1.0),
    ("warmth", -1.0, 1.0),
)

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


def load_config(path: Path | str) -> Config:
    """Read and validate a config file.

    Args:
        path: the ``config.toml`` path.

    Returns:
        A frozen :class:`Config`; paths are absolute.

    Raises:
        ConfigError: the file is missing, not UTF-8, not TOML, or a key is wrong: unknown, of
            the wrong type (a string for a number, ``true`` for a number, a number for an
            array...), out of range, NaN or infinite, or a string holding a control character.
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

    check_values(path, text, data)
    root = path.resolve().parent
    top = TableReader(path, text, "", data)
    top.used.update({"project", "collections", "providers", "presets", "emotions", "qa"})
    for key in data:
        if key not in top.used:
            raise ConfigError(
                path,
                key,
                "unknown top-level table"
                + (
                    close_key(key, top.used)
                    or " (expected project, collections, providers, presets, emotions, qa)"
                ),
                find_line(text, key),
            )

    project = TableReader(path, text, "project", _table(path, text, data, "project"))
    state = project.location("state", "data/state.sqlite")
    state_uri, password_env = _state_database(project, state)
    debounce_ms = project.number("debounce_ms", 300, minimum=0)
    lease_s = project.number("lease_s", 30.0, minimum=1.0)
    heartbeat_s = project.number("heartbeat_s", 5.0, minimum=0.1)
    if heartbeat_s >= lease_s:
        raise project.error("heartbeat_s", f"must be shorter than lease_s ({lease_s:g}), got {heartbeat_s:g}")
    project.check_unknown()

    presets: dict[str, dict[str, Any]] = {}
    for name, table in _table(path, text, data, "presets").items():
        reader = TableReader(
            path, text, f"presets.{name}", _require_table(path, text, f"presets.{name}", table)
        )
        preset: dict[str, Any] = {"temperature": reader.number("temperature", 0.4, maximum=1)}
        seed = reader.number("seed", None, maximum=MAX_SEED, integer=True)
        if seed is not None:
            preset["seed"] = seed
        for key, low, high in _PRESET_RANGES:
            value = reader.number(key, None, minimum=low, maximum=high)
            if value is not None:
                preset[key] = value
        reader.check_unknown()
        presets[name] = preset

    qa_reader = TableReader(path, text, "qa", _table(path, text, data, "qa"))
    qa = _qa(qa_reader)
    asr = _asr(TableReader(path, text, "qa.asr", qa_reader.table.get("asr", {})))

    emotions: dict[str, dict[str, float]] = {}
    for name, table in _table(path, text, data, "emotions").items():
        reader = TableReader(
            path, text, f"emotions.{name}", _require_table(path, text, f"emotions.{name}", table)
        )
        if not re.fullmatch(r"[a-z][a-z0-9_\-]*", name):
            raise reader.error("", "emotion names are lower case: letters, digits, '_' and '-'")
        settings = {}
        for key, (low, high) in EMOTION_RANGES.items():
            value = reader.number(key, None, minimum=low, maximum=high)
            if value is not None:
                settings[key] = float(value)
        reader.check_unknown()
        emotions[name] = settings

    providers: dict[str, ProviderConfig] = {}
    for name, table in _table(path, text, data, "providers").items():
        reader = TableReader(
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
            emotions=emotions,
        )
        validate_provider_options(providers[name], _suggesting(reader))

    collections: dict[str, CollectionConfig] = {}
    for name, table in _table(path, text, data, "collections").items():
        prefix = f"collections.{name}"
        reader = TableReader(path, text, prefix, _require_table(path, text, prefix, table))
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise reader.error("", "collection names may use letters, digits, '_' and '-' only")
        kind = reader.get("kind", str, name if name in KINDS else ...)
        if kind not in KINDS:
            raise reader.error("kind", f"unknown collection kind {kind!r} (one of {', '.join(KINDS)})")
        source = root / reader.location("source")
        output = root / reader.location("output", f"data/out/{name}")
        provider = reader.get("provider", str)
        if provider not in providers:
            raise reader.error(
                "provider", f"no [providers.{provider}] table (have: {', '.join(providers) or 'none'})"
            )
        if KINDS[kind].task not in PROVIDER_KINDS[providers[provider].kind].serves:
            raise reader.error(
                "provider", f"provider kind {providers[provider].kind!r} cannot generate {kind}"
            )
        params = KINDS[kind].parse_params(reader, presets)
        reader.check_unknown()
        collections[name] = CollectionConfig(name, kind, source, output, provider, params)
    if not collections:
        raise ConfigError(path, "collections", "no collections configured", find_line(text, "collections"))
    state_path = (root / ("data/state.sqlite" if state_uri else state)).resolve()
    _check_folders(path, text, root, state_path, collections)

    return Config(
        path=path.resolve(),
        root=root,
        state_path=state_path,
        debounce_s=debounce_ms / 1000.0,
        lease_s=lease_s,
        heartbeat_s=heartbeat_s,
        collections=collections,
        providers=providers,
        presets=presets,
        emotions=emotions,
        qa=qa,
        asr=asr,
        state_uri=state_uri,
        state_password_env=password_env,
    )


def read_qa_table(table: Mapping[str, Any], path: Path | str = "--set") -> QAThresholds:
    """:class:`QAThresholds` from a ``[qa]`` table that comes from elsewhere than a config file
    (``bench/qa.py --set KEY=VALUE``), read as :func:`load_config` reads the file's: omitted keys
    keep their defaults; a sub-table ``asr`` is allowed (and not read).

    Args:
        table: the keys of ``[qa]`` and their values (TOML types: bool, int, float).
        path: what the errors name in place of the config file.

    Raises:
        ConfigError: ``"PATH: qa.KEY: what is wrong"`` (no line): the same problems as in a file,
            see :func:`_qa`, and NaN or infinite numbers.
    """
    path = Path(path)
    check_values(path, "", table, "qa")
    return _qa(TableReader(path, "", "qa", table))


def _qa(reader: TableReader) -> QAThresholds:
    """:class:`QAThresholds` from the ``[qa]`` table: its keys are the field names, numbers within
    :data:`~tui_app.qa_limits.QA_RANGES`; a sub-table ``asr`` is left to :func:`_asr`.

    Raises:
        ConfigError: an unknown key, ``asr`` that is not a table, ``enabled`` not true or false,
            a number of the wrong type (an integer for the
            :data:`~tui_app.qa_limits.QA_INTEGER_FIELDS`), out of range or not finite, 0 for one
            of the :data:`~tui_app.qa_limits.QA_POSITIVE_FIELDS`, or ``min_duration_s`` not below
            ``max_duration_s``.
    """
    defaults = QAThresholds()
    values: dict[str, Any] = {}
    for key in (f.name for f in fields(QAThresholds)):
        default = getattr(defaults, key)
        if key == "enabled":
            values[key] = reader.get(key, bool, default)
            continue
        low, high = QA_RANGES[key]
        value = reader.number(key, default, minimum=low, maximum=high, integer=key in QA_INTEGER_FIELDS)
        if key in QA_POSITIVE_FIELDS:
            _check_positive(reader, key, value)
        values[key] = value
    if "asr" in reader.table and not isinstance(reader.table["asr"], Mapping):
        raise reader.error("asr", f"must be a table ([qa.asr]), got {show(reader.table['asr'])}")
    reader.check_unknown({"asr"})
    qa = QAThresholds(**values)
    if qa.min_duration_s >= qa.max_duration_s:
        if "min_duration_s" in reader.table:
            raise reader.error(
                "min_duration_s",
                f"must be below max_duration_s ({qa.max_duration_s:g}), got {qa.min_duration_s:g}",
            )
        raise reader.error(
            "max_duration_s",
            f"must be above min_duration_s ({qa.min_duration_s:g}), got {qa.max_duration_s:g}",
        )
    return qa


def _asr(reader: TableReader) -> ASRSettings:
    """:class:`ASRSettings` from the ``[qa.asr]`` table: its keys are the field names; a field
    with a string default takes a string, with an integer default an integer >= 1, with a float
    default a number above 0.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, a number out of range, an
            ``engine`` not in :data:`~tui_app.qa_limits.ENGINES`, or ``engine = "http"`` without
            an ``http://`` or ``https://`` ``base_url``.
    """
    defaults = ASRSettings()
    values: dict[str, Any] = {}
    for key in (f.name for f in fields(ASRSettings)):
        default = getattr(defaults, key)
        if isinstance(default, str):
            values[key] = reader.get(key, str, default)
        elif isinstance(default, int):
            values[key] = reader.number(key, default, minimum=1, integer=True)
        else:
            values[key] = _check_positive(reader, key, reader.number(key, default))
    reader.check_unknown()
    asr = ASRSettings(**values)
    if asr.engine not in ENGINES:
        raise reader.error("engine", f"must be one of {', '.join(ENGINES)}, got {show(asr.engine)}")
    if asr.engine == "http" and not re.match(r"https?://[^/\s]+", asr.base_url):
        if "base_url" not in reader.table:
            raise reader.error("engine", "http needs base_url, an http:// or https:// URL")
        raise reader.error(
            "base_url", f"engine http needs an http:// or https:// URL, got {show(asr.base_url)}"
        )
    return asr


def _check_positive(reader: TableReader, key: str, value: float) -> float:
    """``value`` when it is above 0 (:meth:`TableReader.number` only bounds inclusively).

    Raises:
        ConfigError: ``value`` is 0 or less.
    """
    if not value > 0:
        raise reader.error(key, f"must be a number > 0, got {value:g}")
    return value


def _state_database(project: TableReader, state: str) -> tuple[str | None, str | None]:
    """``(uri, password_env)`` of a PostgreSQL state (``[project] state`` a ``postgresql://`` URI), or
    ``(None, None)`` for a SQLite file.

    Raises:
        ConfigError: a password in the URI, ``state_password_env`` that is not the name of a set
            environment variable or beside a file path, or psycopg not installed.
    """
    password_env = project.get("state_password_env", str, None, what="the name of an environment variable")
    if password_env is not None and not ENV_NAME.fullmatch(password_env):
        raise project.error(
            "state_password_env",
            f"must be the name of an environment variable (letters, digits, '_'), got {show(password_env)}",
        )
    if not is_postgres_uri(state):
        if password_env is not None:
            raise project.error("state_password_env", "only works with a postgresql:// state")
        return None, None
    try:
        check_postgres_uri(state)
    except UriProblem as problem:
        if problem.reason == "password":
            raise project.error(
                "state",
                "a password does not belong in the config file: set state_password_env "
                "to the name of an environment variable instead",
            ) from None
        raise project.error("state", str(problem)) from None
    if password_env is not None and password_env not in os.environ:
        raise project.error("state_password_env", f"the environment variable {password_env} is not set")
    return state, password_env


def _nested(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` are the same path or one is inside the other."""
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def _check_folders(
    path: Path, text: str, root: Path, state_path: Path, collections: Mapping[str, CollectionConfig]
) -> None:
    """No output folder may contain the state file, overlap the orphans folder beside it, a source,
    or another collection's output (sync would move the state or the sources into the orphans,
    and a photo folder would import its own variants as photos).

    Raises:
        ConfigError: one line naming both keys and both paths.
    """

    def shown(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    resolved = {name: (c.output.resolve(), c.source.resolve()) for name, c in collections.items()}
    orphans = state_path.parent / "orphans"
    for name, (output, _) in resolved.items():
        clashes: list[tuple[str, str, Path]] = []  # (how, the other key, its path)
        if state_path.is_relative_to(output):
            clashes.append(("contains the state file of", "project.state", state_path))
        if _nested(output, orphans):
            clashes.append(("overlaps", "the orphans folder beside project.state", orphans))
        for other, (other_output, source) in resolved.items():
            if _nested(output, source):
                clashes.append(("overlaps", f"collections.{other}.source", source))
            if other != name and _nested(output, other_output):
                clashes.append(("overlaps", f"collections.{other}.output", other_output))
        if clashes:
            how, other_key, other_path = clashes[0]
            key = f"collections.{name}.output"
            raise ConfigError(
                path,
                key,
                f"{shown(output)} {how} {other_key} ({shown(other_path)}): "
                "give each output a folder of its own",
                find_line(text, key) or find_line(text, f"collections.{name}"),
            )


def _suggesting(reader: TableReader) -> Callable[[str, str], ConfigError]:
    """``reader.error`` for a provider's own options: an unknown option that looks like a misspelled
    generic key (``concurency``) gets ``; did you mean 'concurrency'?`` after the provider's message."""

    def error(key: str, message: str) -> ConfigError:
        match = closest(key, _GENERIC_PROVIDER_KEYS) if message.startswith("unknown key") else None
        return reader.error(key, f"{message}; did you mean {match!r}?" if match else message)

    return error


def _table(path: Path, text: str, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    return _require_table(path, text, key, value)


def _require_table(path: Path, text: str, dotted: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, dotted, f"must be a table, got {value!r}", find_line(text, dotted))
    return value
