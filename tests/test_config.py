"""Config loading: the demo config, and one-line errors naming file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MINIMAL_CONFIG

from tui_app.config import ConfigError, load_config
from tui_app.qa_limits import ASRSettings, QAThresholds

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_loads():
    config = load_config(ROOT / "config.toml")
    assert list(config.collections) == ["dataset", "pages", "variants"]
    assert config.collections["dataset"].source == ROOT / "data" / "arctic" / "cmuarctic.data"
    assert config.providers["piper"].concurrency == 2
    assert config.debounce_s == pytest.approx(0.3)
    assert config.state_path == ROOT / "data" / "state.sqlite"
    assert config.presets["vivid"]["temperature"] == 0.6


BASE = MINIMAL_CONFIG


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


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m tui_app --config CONFIG ARGS`` run to its end in the config's folder."""
    return subprocess.run(
        [sys.executable, "-m", "tui_app", "--config", str(config), *args],
        capture_output=True,
        text=True,
        cwd=config.parent,
    )


def test_cli_config_error_exit_2_and_nothing_written(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace("concurrency = 2", "concurrency = -1"))
    proc = _cli(path, "--batch")
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


@pytest.mark.parametrize(
    "tables,line,needle",
    [
        # [qa]: keys, types, ranges
        ("[qa]\nmax_ceer = 0.3", 10, "qa.max_ceer: unknown key"),
        ('[qa]\nenabled = "no"', 10, "qa.enabled: must be true or false, got 'no'"),
        ('[qa]\nmax_cer = "0.3"', 10, "qa.max_cer: must be a number, got '0.3'"),
        ("[qa]\nmax_cer = true", 10, "qa.max_cer: must be a number, got True"),
        ("[qa]\nmax_cer = inf", 10, "qa.max_cer: must be a finite number"),
        ("[qa]\nmax_cer = -0.1", 10, "qa.max_cer: must be a number >= 0, got -0.1"),
        ("[qa]\ntruncation_asr_ratio = 1.5", 10, "qa.truncation_asr_ratio: must be a number between 0 and 1"),
        ("[qa]\nmin_snr_db = 121", 10, "qa.min_snr_db: must be a number between 0 and 120, got 121"),
        ("[qa]\nmin_loudness_lufs = -121", 10, "qa.min_loudness_lufs: must be a number between -120 and 0"),
        ("[qa]\nrate_min_words = 4.5", 10, "qa.rate_min_words: must be an integer, got 4.5"),
        ("[qa]\nrate_min_words = 0", 10, "qa.rate_min_words: must be an integer >= 1, got 0"),
        ("[qa]\noutlier_min_takes = 2", 10, "qa.outlier_min_takes: must be an integer >= 3, got 2"),
        ("[qa]\nmax_clip_runs = 1.0", 10, "qa.max_clip_runs: must be an integer, got 1.0"),
        ("[qa]\nmax_cer = 0.2\noutlier_k = 0", 11, "qa.outlier_k: must be a number > 0, got 0"),
        ("[qa]\nmin_duration_s = 0\nmax_duration_s = 0", 11, "qa.max_duration_s: must be a number > 0"),
        ("[qa]\nmin_duration_s = 30.0", 10, "qa.min_duration_s: must be below max_duration_s (20), got 30"),
        ("[qa]\nmax_duration_s = 0.2", 10, "qa.max_duration_s: must be above min_duration_s (0.3), got 0.2"),
        ('[qa]\nasr = "pocketsphinx"', 10, "qa.asr: must be a table ([qa.asr]), got 'pocketsphinx'"),
        # [qa.asr]
        ('[qa.asr]\nengin = "http"', 10, "qa.asr.engin: unknown key"),
        ("[qa.asr]\nengine = 3", 10, "qa.asr.engine: must be a string, got 3"),
        ("[qa.asr]\nmodel = 3", 10, "qa.asr.model: must be a string, got 3"),
        ('[qa.asr]\nengine = "whisper"', 10, "qa.asr.engine: must be one of pocketsphinx, http, none"),
        ('[qa.asr]\nengine = "http"', 10, "qa.asr.engine: http needs base_url, an http:// or https:// URL"),
        (
            '[qa]\nmax_cer = 0.2\n\n[qa.asr]\nengine = "http"\nbase_url = "localhost:8000/v1"',
            14,
            "qa.asr.base_url: engine http needs an http:// or https:// URL, got 'localhost:8000/v1'",
        ),
        ("[qa.asr]\ntimeout_s = 0", 10, "qa.asr.timeout_s: must be a number > 0, got 0"),
        ('[qa.asr]\ntimeout_s = "60"', 10, "qa.asr.timeout_s: must be a number, got '60'"),
        ("[qa.asr]\nconcurrency = 1.5", 10, "qa.asr.concurrency: must be an integer, got 1.5"),
        ("[qa.asr]\nconcurrency = 0", 10, "qa.asr.concurrency: must be an integer >= 1, got 0"),
        ("[qa.asr]\nmax_attempts = true", 10, "qa.asr.max_attempts: must be an integer, got True"),
        ("[qa.asr]\nmax_attempts = 0", 10, "qa.asr.max_attempts: must be an integer >= 1, got 0"),
    ],
)
def test_qa_errors_name_file_line_and_key(tmp_path, tables, line, needle):
    path = tmp_path / "config.toml"
    path.write_text(BASE + "\n" + tables + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert needle in text, text
    assert "\n" not in text


def test_qa_tables_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        BASE + "\n[qa]\nenabled = false\nmax_cer = 0.25\nmax_lead_silence_s = 2\nrate_min_words = 4\n"
        '\n[qa.asr]\nengine = "http"\nbase_url = "https://asr.example/v1"\ntimeout_s = 30\nmax_attempts = 5\n'
    )
    config = load_config(path)
    assert (config.qa.enabled, config.qa.max_cer, config.qa.max_lead_silence_s) == (False, 0.25, 2.0)
    assert isinstance(config.qa.max_lead_silence_s, float) and config.qa.rate_min_words == 4
    assert config.qa.min_snr_db == QAThresholds().min_snr_db
    assert config.asr == ASRSettings(
        engine="http", base_url="https://asr.example/v1", timeout_s=30.0, max_attempts=5
    )
    path.write_text(BASE)
    config = load_config(path)
    assert (config.qa, config.asr) == (QAThresholds(), ASRSettings())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # a misspelled required key: named first, with its line, not only "provider: is required"
        (
            ('provider = "sim"', 'providr = "sim"'),
            "{path}:3: collections.dataset.providr: unknown key "
            "(did you mean 'provider'? provider is required)",
        ),
        # a misspelled optional key: the closest known key is suggested
        (
            ("concurrency = 2", "concurency = 2"),
            "{path}:7: providers.sim.concurency: unknown key for a simulated provider "
            "(latency_ms, jitter_ms, failure_rate, seed, trace); did you mean 'concurrency'?",
        ),
        # a misspelled table
        (("[providers.sim]", "[provider.sim]"), "{path}:5: provider: unknown top-level table (did you mean"),
    ],
)
def test_cli_misspelled_key_is_named_with_its_line_and_a_suggestion(tmp_path, change, expected):
    path = tmp_path / "config.toml"
    path.write_text(BASE.replace(*change))
    proc = _cli(path, "status")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tui-app: error: " + expected.format(path=path)), lines
