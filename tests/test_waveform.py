"""Text waveforms of speech takes (the compare screen's drawing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tui_app.media import wav_bytes
from tui_app.waveform import BARS, draw

RATE = 16_000


def _wav(*parts: tuple[float, float]) -> bytes:
    """A WAV of (seconds, amplitude 0..1) parts of a 220 Hz tone (amplitude 0: silence)."""
    chunks = []
    for seconds, amplitude in parts:
        t = np.arange(int(seconds * RATE)) / RATE
        chunks.append(amplitude * np.sin(2 * math.pi * 220 * t))
    pcm = (np.concatenate(chunks) * 32767).astype("<i2").tobytes()
    return wav_bytes(pcm, RATE)


def test_silence_is_marked_and_loudness_sets_the_height():
    wave = draw(_wav((1.0, 0.0), (2.0, 0.9), (1.0, 0.0)), width=40, height=2)
    assert len(wave.rows) == 2 and all(len(r) == 40 for r in wave.rows)
    assert wave.duration_s == pytest.approx(4.0)
    assert wave.lead == 10 and wave.trail == 30  # 1 s of 4 s on each side
    assert set(wave.rows[1][: wave.lead]) == {" "} and set(wave.rows[1][wave.trail :]) == {" "}
    assert set(wave.rows[1][12:28]) == {BARS[-1]}  # a loud tone fills the lower row ...
    assert all(c != " " for c in wave.rows[0][12:28])  # ... and reaches into the upper one


def test_quiet_speech_is_lower_than_loud_speech():
    wave = draw(_wav((1.0, 0.05), (1.0, 0.8)), width=20, height=1)
    quiet, loud = wave.rows[0][2:8], wave.rows[0][12:18]
    assert max(BARS.index(c) for c in quiet) < min(BARS.index(c) for c in loud)
    assert wave.lead == 0 and wave.trail == 20


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="width and height"):
        draw(_wav((0.1, 0.5)), width=0)
    with pytest.raises(ValueError, match="16-bit"):
        draw(wav_bytes(b"\x00" * 30, RATE, sample_width=1), width=10)


def test_a_chunk_before_the_samples_is_skipped_even_when_it_says_data():
    """The samples are read from the data chunk, not from the first b"data" in the file (here in a
    LIST chunk of metadata placed before it, as some editors write)."""
    import struct

    plain = _wav((0.5, 0.0), (1.0, 0.8), (0.5, 0.0))
    fmt_end = 12 + 8 + struct.unpack("<I", plain[16:20])[0]  # RIFF header, then the fmt chunk
    info = b"INFOICMT" + struct.pack("<I", 12) + b"data is bad!"
    listed = plain[:fmt_end] + b"LIST" + struct.pack("<I", len(info)) + info + plain[fmt_end:]
    listed = listed[:4] + struct.pack("<I", len(listed) - 8) + listed[8:]
    assert draw(listed, width=30) == draw(plain, width=30)
