"""Config checks of the HTTP providers, and the README's examples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tui_app.config import ConfigError, load_config

README = Path(__file__).resolve().parents[2] / "README.md"


def _write(tmp_path: Path, provider: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        '[collections.dataset]\nsource = "prompts.data"\nprovider = "p"\n\n[providers.p]\n' + provider
    )
    return path


@pytest.mark.parametrize(
    "provider,key,needle",
    [
        ('kind = "openai"\nvoise = "alloy"\n', "voise", "unknown key for a provider of kind openai"),
        ('kind = "openai"\nresponse_format = "mp3"\n', "response_format", "must be one of wav, pcm"),
        (
            'kind = "openai"\nbase_url = "https://user:pw@api.example.com/v1"\n',
            "base_url",
            "must not hold credentials",
        ),
        ('kind = "openai"\nbase_url = "api.example.com"\n', "base_url", "http:// or https:// URL"),
        ('kind = "openai"\napi_key = "sk-abc"\n', "api_key", "secrets do not belong in the config file"),
        ('kind = "openai"\nread_timeout_s = 0\n', "read_timeout_s", "must be a number > 0"),
        ('kind = "openai"\nsample_rate = 22.05\n', "sample_rate", "whole number of Hz"),
        ('kind = "elevenlabs"\noutput_format = "mp3_44100_128"\n', "output_format", "pcm_16000, pcm_22050"),
        ('kind = "elevenlabs"\nstability = 1.5\n', "stability", "between 0 and 1"),
    ],
)
def test_bad_http_provider_options_name_the_key_and_line(tmp_path, provider, key, needle):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, provider))
    text = str(info.value)
    assert f"providers.p.{key}" in text and needle in text
    assert re.match(r".*config\.toml:\d+: ", text)  # file and line


def test_a1111_provider_cannot_serve_a_dataset(tmp_path):
    with pytest.raises(ConfigError, match="cannot generate dataset"):
        load_config(_write(tmp_path, 'kind = "a1111"\n'))


def test_every_readme_http_example_loads(tmp_path):
    section = README.read_text().split("## HTTP providers", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    for n, block in enumerate(blocks):
        if "[collections." not in block:
            name = re.search(r"\[providers\.(\w+)\]", block).group(1)
            block += f'\n[collections.dataset]\nsource = "x.data"\nprovider = "{name}"\n'
        path = tmp_path / f"example{n}.toml"
        path.write_text(block)
        config = load_config(path)
        assert {p.kind for p in config.providers.values()} <= {"openai", "a1111", "elevenlabs"}
