"""Shared fixtures: small real projects built in tmp_path from the demo data."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data"
#: The smallest valid config.toml: one dataset collection on a simulated provider of concurrency 2.
MINIMAL_CONFIG = """\
[collections.dataset]
source = "data/m.csv"
provider = "sim"

[providers.sim]
kind = "simulated"
concurrency = 2
"""


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Background processes of a test: SIGKILLed at its end if still running."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _open_after(location: str, barrier: Any) -> None:
    from tui_app.store import open_store

    barrier.wait()
    open_store(location).close()


def open_together(location: str, processes: int = 4, timeout_s: float = 30.0) -> list[int | None]:
    """Open the store at ``location`` (a SQLite path or a PostgreSQL URI) from ``processes`` forked
    processes released at the same moment; their exit codes (0: opened and closed; None: still
    running after ``timeout_s``)."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    started = [context.Process(target=_open_after, args=(location, barrier)) for _ in range(processes)]
    for proc in started:
        proc.start()
    for proc in started:
        proc.join(timeout_s)
    return [proc.exitcode for proc in started]


def write_project(
    root: Path,
    *,
    entries: int = 12,
    pages: int = 4,
    photos: int = 2,
    provider: str = "simulated",
    latency_ms: float = 0,
    jitter_ms: float = 0,
    failure_rate: float = 0.0,
    concurrency: int = 4,
    max_attempts: int = 3,
    extra: str = "",
    slots: str = '["forensic", "balanced", "creative"]',
) -> Path:
    """A project folder with the first ``entries`` ARCTIC prompts, a story of ``pages``
    pages (plus cover) and ``photos`` demo photos; returns the config path."""
    (root / "data" / "photos").mkdir(parents=True, exist_ok=True)
    prompts = (DEMO / "arctic" / "cmuarctic.data").read_text().splitlines()[:entries]
    prompts += [
        f'( extra_{n:05d} "Synthetic prompt number {n} for a larger test project." )'
        for n in range(entries - len(prompts))
    ]
    (root / "data" / "prompts.data").write_text("\n".join(prompts) + "\n")
    blocks = (DEMO / "story" / "peter_rabbit.md").read_text().split("\n---\n")[:pages]
    (root / "data" / "story.md").write_text("\n---\n".join(blocks) + "\n")
    for photo in sorted((DEMO / "photos").iterdir())[:photos]:
        shutil.copy(photo, root / "data" / "photos" / photo.name)
    config = root / "config.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [project]
        debounce_ms = 300

        [collections.dataset]
        source = "data/prompts.data"
        provider = "{provider}"

        [collections.pages]
        source = "data/story.md"
        provider = "{provider}"
        width = 128
        height = 96

        [collections.variants]
        source = "data/photos"
        provider = "{provider}"
        slots = {slots}

        [providers.{provider}]
        kind = "simulated"
        concurrency = {concurrency}
        latency_ms = {latency_ms}
        jitter_ms = {jitter_ms}
        failure_rate = {failure_rate}
        max_attempts = {max_attempts}
        backoff_base_s = 0.01
        backoff_max_s = 0.05
        """)
        + extra
    )
    return config


def sql(db_path: Path | str, statement: str, *args: Any) -> list[tuple]:
    """Run one SQL statement on the state file through a connection of its own (committed, closed).

    For tests that deliberately poke the database behind the store's back; returns the fetched rows.
    """
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(statement, args).fetchall()
        conn.commit()
    finally:
        conn.close()
    return rows


async def until(pilot: Any, condition: Any, timeout: float = 20.0) -> None:  # noqa: ASYNC109 - a polling helper's limit
    """Let a Textual pilot run until ``condition()`` holds; AssertionError after ``timeout`` seconds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Config path of a small simulated project (12 entries, cover + 4 pages, 2 photos x 3 slots)."""
    return write_project(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, like Textual."""
    return "asyncio"


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One PostgreSQL server for the test session (pgserver's binaries; see tests/pg.py), on 127.0.0.1
    and a socket; skipped when pgserver or psycopg is not installed."""
    import pg

    if pg.MISSING:
        pytest.skip(pg.MISSING)
    server = pg.PgServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_uri(pg_server: Any) -> str:
    """The TCP URI of a fresh, empty database on the session's server."""
    return str(pg_server.uri(pg_server.create_database()))


class StoreFactory:
    """Opens stores of one backend for a test: each ``name`` is one state (a file, or a database).

    Attributes:
        backend: ``sqlite`` or ``postgres``.
        bind_error: what binding a parameter of an unknown type raises on this backend.
    """

    def __init__(self, backend: str, tmp_path: Path, server: Any = None):
        self.backend = backend
        self.tmp_path = tmp_path
        self.server = server
        self._databases: dict[str, str] = {}
        if backend == "sqlite":
            self.bind_error: type[Exception] = sqlite3.Error
        else:
            import psycopg

            self.bind_error = psycopg.Error

    def location(self, name: str = "state") -> str:
        """The path or URI of state ``name`` (a new database the first time)."""
        if self.backend == "sqlite":
            return str(self.tmp_path / f"{name}.sqlite")
        if name not in self._databases:
            self._databases[name] = self.server.create_database()
        return str(self.server.uri(self._databases[name]))

    def open(self, name: str = "state") -> Any:
        """Open (creating) state ``name`` through :func:`tui_app.store.open_store`."""
        from tui_app.store import open_store

        return open_store(self.location(name))

    def sql(self, statement: str, *args: Any, name: str = "state") -> list[tuple]:
        """One statement (``?`` placeholders) behind the store's back, through a connection of its own."""
        if self.backend == "sqlite":
            return sql(self.location(name), statement, *args)
        self.location(name)
        return list(self.server.sql(self._databases[name], statement, *args))


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A :class:`StoreFactory` of each backend in turn (the store contract runs on both)."""
    if request.param == "sqlite":
        return StoreFactory("sqlite", tmp_path)
    return StoreFactory("postgres", tmp_path, request.getfixturevalue("pg_server"))
