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


def _samples(wav: bytes) -> list[int]:
    with wave.open(io.BytesIO(wav)) as w:
        pcm = w.readframes(w.getnframes())
    return [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]


def test_emotions_change_the_reading_and_the_take_records_the_settings(tmp_path):
    """One text as neutral, sad and excited: three different readings (duration and waveform), each
    recording the settings it used; a configured [emotions.NAME] table overrides the defaults."""
    from tui_app.providers.piper import EMOTIONS, PiperProvider

    config = ProviderConfig(
        "piper", "piper", options={"workers": 1}, emotions={"sad": {"length_scale": 1.5}, "dreamy": {}}
    )
    provider = PiperProvider(config, tmp_path)
    text = "The sun went down behind the hills. Then the night came."

    def speak(emotion: str | None) -> object:
        params = {"emotion": emotion} if emotion else {}
        return anyio.run(provider.generate, Request("dataset", "speech", "k", text, params, {}))

    neutral, sad, excited = speak(None), speak("sad"), speak("Excited")
    assert neutral.params["emotion"] == "neutral" and excited.params["emotion"] == "excited"
    assert sad.params["length_scale"] == 1.5 and sad.params["noise_scale"] == EMOTIONS["sad"].noise_scale
    assert excited.params["noise_w_scale"] == EMOTIONS["excited"].noise_w_scale
    # sad is slower and excited faster than neutral; the waveforms differ, not only in length
    assert sad.duration_s > neutral.duration_s * 1.2 > excited.duration_s * 1.2
    a, b = _samples(neutral.data), _samples(excited.data)
    assert a[: len(b)] != b[: len(a)]
    # a new emotion starts from neutral; an unknown one is one line naming it
    assert speak("dreamy").duration_s == pytest.approx(neutral.duration_s, rel=0.25)
    with pytest.raises(Exception, match=r"emotion 'grumpy' has no Piper settings .* \[emotions\.grumpy\]"):
        speak("grumpy")
