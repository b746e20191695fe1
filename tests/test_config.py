"""Config loading: the demo config, and one-line errors naming file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tui_app.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_loads():
    config = load_config(ROOT / "config.toml")
    assert list(config.collections) == ["dataset", "pages", "variants"]
    assert config.collections["dataset"].source == ROOT / "data" / "arctic" / "cmuarctic.data"
    assert config.providers["piper"].concurrency == 2
    assert config.debounce_s == pytest.approx(0.3)
    assert config.state_path == ROOT / "data" / "state.sqlite"
    assert config.presets["vivid"]["temperature"] == 0.6


BASE = """\
[collections.dataset]
source = "data/m.csv"
provider = "sim"

[providers.sim]
kind = "simulated"
concurrency = 2
"""


@pytest.mark.parametrize(
    "change,line,needle",
    [
        (
            ("concurrency = 2", "concurrency = 0"),
            7,
            "providers.sim.concurrency: must be an integer >= 1, got 0",
        ),
        (("concurrency = 2", 'concurrency = "two"'), 7, "providers.sim.concurrency: must be an integer"),
        (
            ('provider = "sim"', 'provider = "nope"'),
            3,
            "collections.dataset.provider: no [providers.nope] table",
        ),
        (('kind = "simulated"', 'kind = "dalle"'), 6, "providers.sim.kind: unknown provider kind 'dalle'"),
        (("concurrency = 2", "concurency = 2"), 7, "providers.sim.concurency: unknown key"),
        (("concurrency = 2", 'api_key = "sk-secret"'), 7, "secrets do not belong in the config file"),
        (('source = "data/m.csv"', 'source = "data/m.csv'), 2, "invalid TOML"),
        (
            ("concurrency = 2", "concurrency = 2\n\n[emotions.sad]\nlength_scale = 9"),
            10,
            "emotions.sad.length_scale: must be",
        ),
        (
            ("concurrency = 2", "concurrency = 2\n\n[emotions.sad]\npitch = 2"),
            10,
            "emotions.sad.pitch: unknown key",
        ),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, change, line, needle):
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert needle in text
    assert "\n" not in text
    assert "sk-secret" not in text


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_cli_config_error_exit_2_and_nothing_written(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace("concurrency = 2", "concurrency = -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "tui_app", "--config", str(path), "--batch"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tui-app: error: {path}:7: providers.sim.concurrency: must be an integer >= 1, got -1"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_emotion_tables_reach_the_providers(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE + "\n[emotions.sad]\nlength_scale = 1.4\n\n[emotions.dreamy]\nvolume = 0.5\n")
    config = load_config(path)
    assert config.emotions == {"sad": {"length_scale": 1.4}, "dreamy": {"volume": 0.5}}
    assert config.providers["sim"].emotions == config.emotions
