"""Shared fixtures: small real projects built in tmp_path from the demo data."""

from __future__ import annotations

import shutil
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data"


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
