"""Snapshot tests (pytest-textual-snapshot) of each tab on a small simulated demo project.

Regenerate the baselines after an intended change with ``pytest tests/tui --snapshot-update``
and look at the SVGs under ``tests/tui/__snapshots__`` before committing them.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import sql, write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.project import Project
from tui_app.store import open_store
from tui_app.tui.app import build_app

SIZE = (150, 24)


def _project(tmp_path: Path, generate: bool = True):
    config = load_config(write_project(tmp_path, entries=14, pages=4, photos=2))
    if generate:  # dataset and pages are deterministic on the simulated provider; variants stay pending
        with Project.open(config) as project:
            project.import_sources()
            engine = Engine(project)
            anyio.run(lambda: engine.run(["dataset", "pages"]))
            sql(
                config.state_path,
                "UPDATE items SET status='failed', last_error='HTTP 500: upstream error'"
                " WHERE key='arctic_a0003'",
            )
    return config


@pytest.mark.parametrize("tab", ["1", "2", "3"])
def test_collection_tabs(snap_compare, tmp_path, tab):
    app = build_app(_project(tmp_path), clock_free=True, import_in_background=False)
    assert snap_compare(app, terminal_size=SIZE, press=[tab, "space", "down", "space"])


def test_log_tab(snap_compare, tmp_path):
    config = _project(tmp_path, generate=False)
    store = open_store(config.state_path)
    store.log("info", "batch", "3 regenerations queued as batch 12")
    store.log("warning", "retry", "page_012 failed: HTTP 500, retry 2/3 in 4.0 s", collection="pages")
    store.log("error", "failed", "arctic_a0007 failed: HTTP 401: invalid API key", collection="dataset")
    store.close()
    app = build_app(config, clock_free=True, import_in_background=False)
    assert snap_compare(app, terminal_size=SIZE, press=["4"])


def test_regenerate_dialog(snap_compare, tmp_path):
    app = build_app(_project(tmp_path), clock_free=True, import_in_background=False)
    assert snap_compare(app, terminal_size=SIZE, press=["2", "down", "R"])


def test_last_row_after_end_in_a_wide_terminal(snap_compare, tmp_path):
    """At 160 x 45 (no horizontal scrollbar) ``end`` shows the last row, highlighted, above the footer."""
    config = load_config(write_project(tmp_path, entries=60, pages=1, photos=1))
    app = build_app(config, clock_free=True, import_in_background=False)
    assert snap_compare(app, terminal_size=(160, 45), press=["end"])
