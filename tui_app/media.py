"""Small, dependency-free helpers for the file formats takes are made of.

WAV per the RIFF/WAVE layout read and written by the standard :mod:`wave`
module (PCM, little-endian); image checks through Pillow.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class WavInfo:
    """Header facts of a PCM WAV: rate Hz, channels, sample width bytes, frames, duration s."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def wav_bytes(pcm: bytes, sample_rate: int, *, channels: int = 1, sample_width: int = 2) -> bytes:
    """Wrap raw little-endian PCM (``sample_width`` bytes per sample) in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sample_width)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def wav_info(data: bytes) -> WavInfo:
    """Parse a WAV header.

    Raises:
        ValueError: the bytes are not a complete PCM WAV file (message says why).
    """
    return read_wav(data)[0]


def read_wav(data: bytes) -> tuple[WavInfo, bytes]:
    """Parse a WAV once: its header facts and its sample data (``frames x channels x sample_width``
    bytes, interleaved little-endian PCM).

    Raises:
        ValueError: the bytes are not a complete PCM WAV file (message says why).
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            info = WavInfo(w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes())
            body = w.readframes(info.frames)
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"not a valid WAV file: {exc}") from None
    if len(body) < info.frames * info.channels * info.sample_width:
        raise ValueError("truncated WAV file: fewer samples than the header announces")
    return info, body


def read_pcm(wav: bytes, purpose: str) -> tuple[np.ndarray, WavInfo]:
    """The samples of a 16-bit PCM WAV, parsed once: an int16 array of shape ``(frames,
    channels)``, and its header facts (rate Hz, channels, ...).

    Args:
        purpose: who needs them, for the message (``"QA"`` gives ``QA needs 16-bit PCM, ...``).

    Raises:
        ValueError: the bytes are not a complete WAV, or not 16-bit PCM.
    """
    import numpy as np  # loaded when samples are read, not with the config

    info, body = read_wav(wav)
    if info.sample_width != 2:
        raise ValueError(f"{purpose} needs 16-bit PCM, got {8 * info.sample_width}-bit")
    samples = np.frombuffer(body, dtype="<i2")[: info.frames * info.channels]
    return samples.reshape(-1, info.channels), info


def image_info(data: bytes) -> tuple[int, int, str]:
    """``(width, height, format)`` of image bytes after a full decode.

    Raises:
        ValueError: the bytes are not a decodable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.width, img.height, str(img.format)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"not a valid image: {exc}") from None
