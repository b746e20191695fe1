"""One real Piper synthesis with the bundled voice (the `local` extra)."""

from __future__ import annotations

import io
import wave

import anyio
import pytest

from tui_app.config import ProviderConfig
from tui_app.providers import Request

pytest.importorskip("piper", reason="the local extra (piper-tts) is not installed")


def test_real_piper_synthesis_of_a_short_sentence(tmp_path):
    from tui_app.providers.piper import PiperProvider

    provider = PiperProvider(ProviderConfig("piper", "piper", options={"workers": 1}), tmp_path)
    text = "Author of the danger trail, Philip Steels, etc."
    request = Request("dataset", "speech", "arctic_a0001", text, {}, {"speed": 1.0})
    output = anyio.run(provider.generate, request)
    with wave.open(io.BytesIO(output.data)) as w:
        rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
        pcm = w.readframes(frames)
    assert (rate, channels, width) == (22050, 1, 2)
    duration = frames / rate
    # 8 words: natural speech is 2 to 4 words/s, so 2 to 5 s is plausible; silence would be suspicious
    assert 1.5 < duration < 6.0, duration
    assert output.duration_s == pytest.approx(duration)
    assert (
        max(abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) for i in range(0, len(pcm), 2)) > 3000
    )
    assert output.model == "en_US-joe-medium"
