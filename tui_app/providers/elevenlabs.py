"""The ``elevenlabs`` provider: ElevenLabs text to speech.

``POST {base_url}/v1/text-to-speech/{voice_id}?output_format=pcm_22050`` with the
``xi-api-key`` header and JSON ``text``, ``model_id`` and ``voice_settings``
(``stability``, ``similarity_boost``, ``style``, ``use_speaker_boost``); the
answer is raw 16-bit little-endian mono PCM at the rate the format names, which
is written as a WAV (shapes from https://elevenlabs.io/docs/api-reference/text-to-speech/convert).

An entry's emotion sets ``stability`` and ``style`` (:data:`EMOTION_SETTINGS`):
lower stability and more style make a more expressive read.

ElevenLabs limits concurrent requests per plan; its 429
``{"detail": {"status": "too_many_concurrent_requests"}}`` lowers this
provider's concurrency limit (one below what was in flight) and the request is retried.

Options (``[providers.NAME]`` with ``kind = "elevenlabs"``):
    base_url: default ``https://api.elevenlabs.io``.
    api_key_env: default ``ELEVENLABS_API_KEY``.
    voice_id: default voice (a collection's ``voice`` wins); model_id (``eleven_multilingual_v2``;
        a collection's ``model`` wins).
    output_format: ``pcm_16000``, ``pcm_22050`` (default), ``pcm_24000`` or ``pcm_44100``.
    stability (0.5), similarity_boost (0.75), style (0.0): the neutral voice settings.
    connect_timeout_s (10), read_timeout_s (the provider's timeout_s).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..settings import ProviderConfig
from .base import Output, ProviderError, Request
from .http import HttpClient, HttpProvider, check_options, pcm_to_wav, read_secret

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
FORMATS = ("pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100")

#: emotion -> (stability, style), both 0..1.
EMOTION_SETTINGS: dict[str, tuple[float, float]] = {
    "neutral": (0.5, 0.0),
    "calm": (0.75, 0.1),
    "happy": (0.35, 0.6),
    "excited": (0.3, 0.75),
    "surprised": (0.3, 0.7),
    "sad": (0.6, 0.45),
    "angry": (0.3, 0.8),
    "fearful": (0.35, 0.65),
    "whisper": (0.7, 0.3),
}


def voice_settings(emotion: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """``voice_settings`` for an entry: the configured neutral values, shifted by its emotion.

    Unknown emotions get a moderate expressive setting (stability 0.4, style 0.5).
    """
    stability = float(options.get("stability", 0.5))
    style = float(options.get("style", 0.0))
    if emotion:
        stability, style = EMOTION_SETTINGS.get(emotion.strip().lower(), (0.4, 0.5))
    return {
        "stability": stability,
        "similarity_boost": float(options.get("similarity_boost", 0.75)),
        "style": style,
        "use_speaker_boost": True,
    }


class ElevenLabsProvider(HttpProvider):
    """See the module docstring. One instance per provider table, used from one event loop."""

    default_base_url = DEFAULT_BASE_URL

    async def prepare(self, params: Mapping[str, Any] | None = None) -> None:
        """Check a voice is configured, read the API key and open the connection pool.

        Raises:
            ProviderError: the key's variable is unset, or no voice is configured.
        """
        if params is not None and not (params.get("voice") or self.options.get("voice_id")):
            raise ProviderError(
                f"provider {self.name!r}: no voice: set voice_id in [providers.{self.name}] "
                "or voice in the collection"
            )
        self.client()

    def open_client(self) -> HttpClient:
        """A pool sending the ``xi-api-key`` header (from ``api_key_env``)."""
        key = read_secret(self.options.get("api_key_env", "ELEVENLABS_API_KEY"), self.name)
        return self.make_client(headers={"xi-api-key": key} if key else {}, secrets=[key or ""])

    async def generate(self, request: Request) -> Output:
        """One clip.

        Raises:
            ProviderError: HTTP errors (with the server's message), a body that is not raw PCM.
        """
        if request.task != "speech":
            raise ProviderError(f"an elevenlabs provider cannot make a {request.task}")
        voice = str(request.options.get("voice") or self.options.get("voice_id") or "")
        if not voice:
            raise ProviderError("no voice: set voice_id in the provider or voice in the collection")
        fmt = str(self.options.get("output_format", "pcm_22050"))
        rate = int(fmt.split("_")[1])
        model = str(request.options.get("model") or self.options.get("model_id", "eleven_multilingual_v2"))
        body: dict[str, Any] = {
            "text": request.text,
            "model_id": model,
            "voice_settings": voice_settings(request.params.get("emotion"), self.options),
        }
        if request.params.get("seed") is not None:
            body["seed"] = int(request.params["seed"])
        response = await self.client().request(
            "POST", f"v1/text-to-speech/{voice}", params={"output_format": fmt}, json=body
        )
        ctype = response.headers.get("content-type", "")
        if ctype.startswith(("application/json", "text/")):
            raise ProviderError(f"malformed answer: expected raw 16-bit PCM, got {ctype}")
        data, duration = pcm_to_wav(response.content, rate)
        params = {"voice_id": voice, "output_format": fmt, "voice_settings": body["voice_settings"]}
        return Output(data, ".wav", duration_s=duration, sample_rate=rate, model=model, params=params)


def validate_options(options: dict, error) -> None:
    """Check an ``elevenlabs`` provider table; ``error(key, msg)`` builds the ConfigError."""
    check_options(
        options,
        error,
        "elevenlabs",
        strings={"api_key_env", "voice_id", "model_id", "output_format"},
        numbers={"stability", "similarity_boost", "style"},
        allowed={"output_format": FORMATS},
    )
    for key in ("stability", "similarity_boost", "style"):
        if key in options and not 0 <= options[key] <= 1:
            raise error(key, f"must be between 0 and 1, got {options[key]!r}")


def create(pc: ProviderConfig, root: Path) -> ElevenLabsProvider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder)."""
    return ElevenLabsProvider(pc)
