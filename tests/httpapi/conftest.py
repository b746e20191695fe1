"""Fixtures for the HTTP provider tests: a loopback server per test and projects pointing at it."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

from httpapi.loopback import API_KEY, BASIC, XI_KEY, LoopbackServer
from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.project import Project
from tui_app.store import Store

DEMO = Path(__file__).resolve().parents[2] / "data"


@pytest.fixture
def server():
    """A loopback server on a free port, in a background thread."""
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def keys(monkeypatch):
    """The API keys the loopback server expects, in the environment."""
    monkeypatch.setenv("LOOPBACK_OPENAI_KEY", API_KEY)
    monkeypatch.setenv("LOOPBACK_XI_KEY", XI_KEY)
    monkeypatch.setenv("LOOPBACK_A1111_PASSWORD", BASIC[1])
    return {"openai": API_KEY, "elevenlabs": XI_KEY, "a1111": BASIC[1]}


def http_project(
    root: Path,
    server: LoopbackServer,
    *,
    dataset: str | None = None,
    pages: str | None = None,
    variants: str | None = None,
    entries: int = 6,
    page_count: int = 3,
    photos: int = 2,
    providers: str = "",
    slots: str = '["forensic", "balanced", "creative"]',
    provider_settings: str = "",
    concurrency: int = 4,
) -> Path:
    """A project whose collections use the named providers; ``providers`` is extra TOML.

    The tables of the providers used (``openai``, ``a1111``, ``elevenlabs``) point at the
    server with fast backoff; ``provider_settings`` is appended to each of them.
    """
    (root / "data" / "photos").mkdir(parents=True, exist_ok=True)
    prompts = (DEMO / "arctic" / "cmuarctic.data").read_text().splitlines()[:entries]
    (root / "data" / "prompts.data").write_text("\n".join(prompts) + "\n")
    blocks = (DEMO / "story" / "peter_rabbit.md").read_text().split("\n---\n")[:page_count]
    (root / "data" / "story.md").write_text("\n---\n".join(blocks) + "\n")
    for photo in sorted((DEMO / "photos").iterdir())[:photos]:
        shutil.copy(photo, root / "data" / "photos" / photo.name)
    text = ""
    if dataset:
        text += f'[collections.dataset]\nsource = "data/prompts.data"\nprovider = "{dataset}"\n\n'
    if pages:
        text += (
            f'[collections.pages]\nsource = "data/story.md"\nprovider = "{pages}"\n'
            "width = 128\nheight = 96\n\n"
        )
    if variants:
        text += (
            f'[collections.variants]\nsource = "data/photos"\nprovider = "{variants}"\nslots = {slots}\n\n'
        )
    common = f"backoff_base_s = 0.05\nbackoff_max_s = 0.2\nconcurrency = {concurrency}\n{provider_settings}\n"
    tables = {
        "openai": f'[providers.openai]\nkind = "openai"\nbase_url = "{server.url}/v1"\n'
        'api_key_env = "LOOPBACK_OPENAI_KEY"\n',
        "a1111": f'[providers.a1111]\nkind = "a1111"\nbase_url = "{server.url}"\n',
        "elevenlabs": f'[providers.elevenlabs]\nkind = "elevenlabs"\nbase_url = "{server.url}"\n'
        'api_key_env = "LOOPBACK_XI_KEY"\nvoice_id = "21m00Tcm4TlvDq8ikWAM"\n',
    }
    for name in dict.fromkeys(p for p in (dataset, pages, variants) if p in tables):
        text += tables[name] + common + "\n"
    text += providers
    # the loopback server's speech is a tone, not words: no ASR round trip (tests/test_qa_step.py has it)
    text += '\n[qa.asr]\nengine = "none"\n'
    config = root / "config.toml"
    config.write_text(text)
    return config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def run_engine(config_path: Path, names=None, timeout_s: float = 60) -> tuple[Engine, Store]:
    """Import the project's sources and run its engine until idle (at most ``timeout_s`` seconds)."""
    project = Project.open(load_config(config_path))
    project.import_sources()
    engine = Engine(project)

    async def main():
        await engine.prepare(names)
        with anyio.fail_after(timeout_s):
            await engine.run(names)
        await engine.aclose()

    anyio.run(main)
    return engine, project.store
