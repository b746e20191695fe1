"""The ``a1111`` provider: the AUTOMATIC1111 Stable Diffusion web UI API (also Forge and SD.Next).

Endpoints (shapes from the web UI's ``modules/api/models.py``; start it with ``--api``):

* pages: ``POST /sdapi/v1/txt2img`` with JSON ``prompt``, ``negative_prompt``,
  ``seed``, ``width``, ``height``, ``steps``, ``cfg_scale``, ``sampler_name``,
  ``batch_size = 1``, ``n_iter = 1``;
* variants: ``POST /sdapi/v1/img2img`` with the same plus ``init_images``
  (the photo, base64) and ``denoising_strength`` = the slot's temperature
  (0.1 for forensic: nearly the photo; 0.8 for creative: a new picture);
* finalizing a chosen variant: ``POST /sdapi/v1/extra-single-image`` with
  ``image`` (base64), ``upscaling_resize`` and ``upscaler_1``.

Answers hold ``images[0]`` (base64 PNG) and ``info``, a JSON *string* whose
``seed`` is the seed actually used (what the take records: a request with
seed -1 gets a random one). Errors come as FastAPI's ``{"detail": ...}`` or
the web UI's ``{"error", "detail", "body", "errors"}``.

Options (``[providers.NAME]`` with ``kind = "a1111"``):
    base_url: default ``http://127.0.0.1:7860``.
    username, password_env: HTTP Basic auth (``--api-auth user:password``); the
        password comes from the environment variable named by ``password_env``.
    negative_prompt (``""``), steps (20), cfg_scale (7), sampler_name (server default),
    checkpoint: sent as ``override_settings.sd_model_checkpoint`` when set.
    max_side: img2img output's longer side, px (default 768; sizes round to multiples of 8).
    upscaler (``R-ESRGAN 4x+``): the upscaler used when a chosen variant is finalized.
    connect_timeout_s (10), read_timeout_s (the provider's timeout_s).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ..settings import ProviderConfig
from .base import Output, ProviderError, Request
from .http import (
    HttpClient,
    HttpProvider,
    check_image,
    check_options,
    decode_b64,
    json_body,
    read_photo,
    read_secret,
)
from .openai_api import DEFAULT_PROMPT, variant_prompt

DEFAULT_BASE_URL = "http://127.0.0.1:7860"


#: Largest seed recorded from an answer (a signed 64-bit integer, what the store holds).
MAX_SEED = 2**63 - 1


def _is_seed(value: Any) -> bool:
    """True for an int (not a bool) from 0 to :data:`MAX_SEED`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def _round8(value: float) -> int:
    return max(64, int(round(value / 8.0)) * 8)


class A1111Provider(HttpProvider):
    """See the module docstring. One instance per provider table, used from one event loop."""

    default_base_url = DEFAULT_BASE_URL

    def open_client(self) -> HttpClient:
        """A pool with HTTP Basic auth when ``username`` is set (password from ``password_env``).

        Raises:
            ProviderError: ``password_env`` is not set, or holds control characters or
                surrounding whitespace (see :func:`~.http.read_secret`).
        """
        if not self.options.get("username"):
            return self.make_client()
        # Basic auth sends the password base64-encoded (UTF-8): any text but control characters
        # and surrounding whitespace (a trailing CR from a Windows .env file) is a valid password.
        env = self.options.get("password_env", "A1111_PASSWORD")
        password = read_secret(env, self.name, ascii_only=False) or ""
        return self.make_client(auth=(str(self.options["username"]), password), secrets=[password])

    def _common(self, prompt: str, seed: Any) -> dict[str, Any]:
        o = self.options
        body: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": str(o.get("negative_prompt", "")),
            "seed": int(seed) if seed is not None else -1,
            "steps": int(o.get("steps", 20)),
            "cfg_scale": float(o.get("cfg_scale", 7.0)),
            "batch_size": 1,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        if o.get("sampler_name"):
            body["sampler_name"] = o["sampler_name"]
        if o.get("checkpoint"):
            body["override_settings"] = {"sd_model_checkpoint": o["checkpoint"]}
        return body

    async def generate(self, request: Request) -> Output:
        """One image: txt2img for pages, img2img for variants.

        Raises:
            ProviderError: HTTP errors (with the server's message), malformed answers.
        """
        p = request.params
        if request.task == "picture":
            body = self._common(str(p.get("prompt") or request.text), p.get("seed"))
            body["width"] = int(request.options.get("width", 512))
            body["height"] = int(request.options.get("height", 512))
            path = "sdapi/v1/txt2img"
        elif request.task == "variant":
            photo, width, height, _ = read_photo(request.source, request.key)
            scale = min(1.0, float(self.options.get("max_side", 768)) / max(width, height))
            temperature = float(p.get("temperature", 0.4))
            prompt = variant_prompt(str(request.options.get("prompt") or DEFAULT_PROMPT), temperature)
            body = self._common(prompt, p.get("seed"))
            body.update(
                {
                    "init_images": [base64.b64encode(photo).decode("ascii")],
                    "denoising_strength": round(min(1.0, max(0.0, temperature)), 3),
                    "width": _round8(width * scale),
                    "height": _round8(height * scale),
                    "resize_mode": 0,
                }
            )
            path = "sdapi/v1/img2img"
        else:
            raise ProviderError(f"an a1111 provider cannot make a {request.task}")
        response = await self.client().request("POST", path, json=body)
        answer = json_body(response, f"the {path.rsplit('/', 1)[1]} answer")
        images = answer.get("images") if isinstance(answer, dict) else None
        if not isinstance(images, list) or not images:
            raise ProviderError("malformed answer: no images[0]")
        data = decode_b64(images[0], "images[0]")
        width, height, suffix, _ = check_image(data, "images[0]")
        seed, model = self._info(answer.get("info"), body["seed"])
        params = {k: body[k] for k in ("prompt", "negative_prompt", "steps", "cfg_scale", "width", "height")}
        for key in ("denoising_strength", "sampler_name"):
            if key in body:
                params[key] = body[key]
        return Output(
            data,
            suffix,
            width=width,
            height=height,
            model=model or self.options.get("checkpoint"),
            seed=seed,
            params=params,
        )

    @staticmethod
    def _info(info: Any, requested: int) -> tuple[int | None, str | None]:
        """(seed used, model name) from the ``info`` JSON string; the requested seed when absent.

        Only a whole number 0 <= seed <= :data:`MAX_SEED` counts as a seed (not ``true``, ``1.5``
        or ``2**70``, which no store column holds), and only a string, cut to 200 characters,
        as the model name; anything else in ``info`` is ignored.
        """
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except (ValueError, RecursionError):
                info = None
        fallback = requested if requested >= 0 else None
        if not isinstance(info, dict):
            return fallback, None
        seed = info.get("seed")
        if not _is_seed(seed) and isinstance(info.get("all_seeds"), list) and info["all_seeds"]:
            seed = info["all_seeds"][0]
        model = info.get("sd_model_name")
        return (seed if _is_seed(seed) else fallback), (model[:200] if isinstance(model, str) else None)

    async def upscale(self, data: bytes, scale: int = 2) -> bytes:
        """Upscale a finished image with ``/sdapi/v1/extra-single-image``; returns the image bytes.

        Raises:
            ProviderError: HTTP errors or a malformed answer.
        """
        body = {
            "image": base64.b64encode(data).decode("ascii"),
            "upscaling_resize": scale,
            "upscaler_1": str(self.options.get("upscaler", "R-ESRGAN 4x+")),
        }
        response = await self.client().request("POST", "sdapi/v1/extra-single-image", json=body)
        answer = json_body(response, "the extra-single-image answer")
        out = decode_b64(answer.get("image") if isinstance(answer, dict) else None, "image")
        check_image(out, "the upscaled image")
        return out


def validate_options(options: dict, error) -> None:
    """Check an ``a1111`` provider table; ``error(key, msg)`` builds the ConfigError."""
    check_options(
        options,
        error,
        "a1111",
        strings={"username", "password_env", "negative_prompt", "sampler_name", "checkpoint", "upscaler"},
        numbers={"steps", "cfg_scale", "max_side"},
    )
    if options.get("password_env") and not options.get("username"):
        raise error("password_env", "needs username too (HTTP Basic auth)")


def create(pc: ProviderConfig, root: Path) -> A1111Provider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder)."""
    return A1111Provider(pc)
