"""The ``openai`` provider: OpenAI's API and OpenAI-compatible servers (Kokoro-FastAPI, LocalAI, ...).

Endpoints (request and response shapes from the OpenAI API reference,
https://platform.openai.com/docs/api-reference):

* entries: ``POST {base_url}/audio/speech`` with JSON ``model``, ``input``,
  ``voice``, ``response_format`` (``wav``, or ``pcm``: raw 16-bit mono at
  ``sample_rate``, 24,000 Hz for OpenAI), ``speed``, and the entry's emotion as
  ``instructions`` for models that take them (``gpt-4o-mini-tts``; see
  ``instructions``). The answer body is the audio file.
* pages: ``POST {base_url}/images/generations`` with JSON ``model``, ``prompt``,
  ``size`` (``WxH``), ``n = 1``; the answer's ``data[0].b64_json`` is decoded,
  or its ``data[0].url`` fetched (without the API key).
* variants: ``POST {base_url}/images/edits`` as ``multipart/form-data`` with the
  photo as the ``image`` part (its real MIME type), ``prompt``, ``model``, ``n``, ``size``.

Options (``[providers.NAME]`` with ``kind = "openai"``):
    base_url: default ``https://api.openai.com/v1``; e.g. ``http://localhost:8880/v1`` for Kokoro-FastAPI.
    api_key_env: the environment variable holding the key (default ``OPENAI_API_KEY``;
        ``""`` for a server without keys). Sent as ``Authorization: Bearer``.
    speech_model (``gpt-4o-mini-tts``), voice (``alloy``), response_format (``wav`` | ``pcm``),
    sample_rate: Hz; for ``pcm`` the rate of the raw samples (default 24,000); for ``wav``
        the rate every answer must have (default: any, recorded with the take).
    instructions: ``auto`` (send for ``gpt-4o*`` models), ``always`` or ``never``.
    instructions_template: default ``"Speak in a {emotion} tone."``.
    image_model (``gpt-image-1``), image_size (default: the collection's ``WIDTHxHEIGHT``),
    image_quality (optional), image_response_format (``b64_json`` | ``url``; sent only when set,
        except for ``dall-e-*`` models, which get ``b64_json``).
    edit_model (default: image_model), edit_size (optional).
    connect_timeout_s (10), read_timeout_s (the provider's timeout_s).

A collection's ``model`` and ``voice`` (dataset) or ``model`` and ``size``
(variants) win over the provider's. The images API takes no seed: takes record none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..settings import ProviderConfig
from .base import Output, ProviderError, Request
from .http import (
    HttpClient,
    HttpProvider,
    check_image,
    check_options,
    check_wav,
    decode_b64,
    json_body,
    pcm_to_wav,
    read_photo,
    read_secret,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_PROMPT = "Retouch this photo: keep its subject, people and composition exactly."


def variant_prompt(base: str, temperature: float) -> str:
    """The edit prompt for a variant: the collection's prompt plus how far to go (temperature 0..1)."""
    if temperature <= 0.25:
        how = "Change as little as possible: only correct exposure, colour and noise."
    elif temperature <= 0.6:
        how = "A moderate, natural enhancement."
    else:
        how = "A bold, creative reinterpretation in the same scene."
    return f"{base} {how}"


class OpenAIProvider(HttpProvider):
    """See the module docstring. One instance per ``[providers.NAME]`` table, used from one event loop."""

    default_base_url = DEFAULT_BASE_URL

    def open_client(self) -> HttpClient:
        """A pool sending ``Authorization: Bearer KEY`` (KEY from ``api_key_env``) when a key is set."""
        key = read_secret(self.options.get("api_key_env", "OPENAI_API_KEY"), self.name)
        return self.make_client(
            headers={"Authorization": f"Bearer {key}"} if key else {}, secrets=[key or ""]
        )

    # ------------------------------------------------------------------ generation

    async def generate(self, request: Request) -> Output:
        """One take: speech for entries, an image for pages, an edit for variants.

        Raises:
            ProviderError: HTTP errors (with the server's message), malformed answers.
        """
        if request.task == "speech":
            return await self._speech(request)
        if request.task == "picture":
            return await self._image(request)
        return await self._edit(request)

    async def _speech(self, request: Request) -> Output:
        o, p = self.options, request.params
        model = str(request.options.get("model") or o.get("speech_model", "gpt-4o-mini-tts"))
        fmt = o.get("response_format", "wav")
        body: dict[str, Any] = {
            "model": model,
            "input": request.text,
            "voice": str(request.options.get("voice") or o.get("voice", "alloy")),
            "response_format": fmt,
            "speed": float(p.get("speed") or request.options.get("speed", 1.0)),
        }
        emotion = p.get("emotion")
        mode = o.get("instructions", "auto")
        if emotion and (mode == "always" or (mode == "auto" and model.startswith("gpt-4o"))):
            body["instructions"] = str(o.get("instructions_template", "Speak in a {emotion} tone.")).format(
                emotion=emotion
            )
        response = await self.client().request("POST", "audio/speech", json=body)
        if fmt == "pcm":
            rate = int(o.get("sample_rate", 24_000))
            data, duration = pcm_to_wav(response.content, rate)
        else:
            data = response.content
            duration, rate = check_wav(data, o.get("sample_rate"))
        params = {k: v for k, v in body.items() if k != "input"}
        return Output(data, ".wav", duration_s=duration, sample_rate=rate, model=model, params=params)

    def _images_fields(self, model: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.options.get("image_quality"):
            fields["quality"] = self.options["image_quality"]
        fmt = self.options.get("image_response_format") or (
            "b64_json" if model.startswith("dall-e") else None
        )
        if fmt:
            fields["response_format"] = fmt
        return fields

    async def _image(self, request: Request) -> Output:
        o, p = self.options, request.params
        model = str(request.options.get("model") or o.get("image_model", "gpt-image-1"))
        size = (
            o.get("image_size")
            or f"{request.options.get('width', 1024)}x{request.options.get('height', 1024)}"
        )
        body = {
            "model": model,
            "prompt": str(p.get("prompt") or request.text),
            "size": size,
            "n": 1,
            **self._images_fields(model),
        }
        response = await self.client().request("POST", "images/generations", json=body)
        data, revised = await self._first_image(response)
        width, height, suffix, _ = check_image(data)
        params = {"prompt": body["prompt"], "size": size, **({"revised_prompt": revised} if revised else {})}
        return Output(data, suffix, width=width, height=height, model=model, params=params)

    async def _edit(self, request: Request) -> Output:
        o, p = self.options, request.params
        photo, _, _, mime = read_photo(request.source, request.key)  # raises when there is no source
        name = request.source.name  # type: ignore[union-attr]
        model = str(
            request.options.get("model") or o.get("edit_model") or o.get("image_model", "gpt-image-1")
        )
        temperature = float(p.get("temperature", 0.4))
        prompt = variant_prompt(str(request.options.get("prompt") or DEFAULT_PROMPT), temperature)
        fields: dict[str, Any] = {"model": model, "prompt": prompt, "n": "1", **self._images_fields(model)}
        size = request.options.get("size") or o.get("edit_size")
        if size:
            fields["size"] = size
        files = {"image": (name, photo, mime)}
        response = await self.client().request("POST", "images/edits", data=fields, files=files)
        data, revised = await self._first_image(response)
        width, height, suffix, _ = check_image(data)
        params = {"prompt": prompt, "temperature": temperature, **({"size": size} if size else {})}
        return Output(data, suffix, width=width, height=height, model=model, params=params)

    async def _first_image(self, response: Any) -> tuple[bytes, str | None]:
        answer = json_body(response, "the images answer")
        items = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not items or not isinstance(items[0], dict):
            raise ProviderError("malformed answer: no data[0] in the images answer")
        first = items[0]
        revised = first.get("revised_prompt")
        if first.get("b64_json"):
            return decode_b64(first["b64_json"], "data[0].b64_json"), revised
        if isinstance(first.get("url"), str):
            return await self.client().fetch(first["url"]), revised
        raise ProviderError("malformed answer: data[0] has neither b64_json nor url")


def validate_options(options: dict, error) -> None:
    """Check an ``openai`` provider table; ``error(key, msg)`` builds the ConfigError."""
    check_options(
        options,
        error,
        "openai",
        strings={
            "api_key_env",
            "speech_model",
            "voice",
            "response_format",
            "instructions",
            "instructions_template",
            "image_model",
            "image_size",
            "image_quality",
            "image_response_format",
            "edit_model",
            "edit_size",
        },
        numbers={"sample_rate"},
        allowed={
            "response_format": ("wav", "pcm"),
            "instructions": ("auto", "always", "never"),
            "image_response_format": ("b64_json", "url"),
        },
    )
    rate = options.get("sample_rate")
    if rate is not None and (not isinstance(rate, int) or rate < 8000):
        raise error("sample_rate", f"must be a whole number of Hz >= 8000, got {rate!r}")
    template = options.get("instructions_template")
    if template is not None and "{emotion}" not in template:
        raise error("instructions_template", "must contain {emotion}")


def create(pc: ProviderConfig, root: Path) -> OpenAIProvider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder)."""
    return OpenAIProvider(pc)
