"""Generation parameters inside PNG takes: AUTOMATIC1111's ``parameters`` chunk and a JSON record.

Every PNG take the project writes carries two text chunks (PNG 1.2, section 4.2.3:
``tEXt`` when the text is Latin-1, else ``iTXt`` in UTF-8, as Pillow's ``PngInfo.add_text``
chooses), inserted before the first ``IDAT`` chunk, so the pixels and every other chunk
stay byte for byte as the provider made them:

``parameters``
    AUTOMATIC1111's infotext, as its ``modules/processing.py`` (``create_infotext``) writes
    it and as its PNG Info tab, ComfyUI, InvokeAI and civitai read it back::

        a watercolour picture-book illustration. Peter sat down to rest
        Negative prompt: blurry, text
        Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1262, Size: 768x512, Model: sd15

    The prompt (it may span lines), then ``Negative prompt: ...`` when there is one, then one
    line of ``Name: value`` fields joined by ``", "``: ``Steps``, ``Sampler``, ``CFG scale``,
    ``Seed``, ``Size`` (``WxH``, px), ``Model``, ``Denoising strength`` (img2img variants),
    each only when the provider has it. A value holding ``,``, ``:`` or a line break is
    JSON-quoted (``modules/infotext_utils.py``, ``quote``).
``tui_app``
    JSON (UTF-8, keys sorted) of the whole request: ``provider``, ``model``, ``collection``,
    ``kind``, ``key``, ``take`` (its number), ``task``, ``text``, ``params`` (the take's
    recorded parameters), ``options`` (the collection's), ``seed``, ``width``, ``height``
    and ``source`` (a variant's photo file name, else null).

A chunk the provider's PNG already has is kept, never replaced: the AUTOMATIC1111 web UI
writes its own ``parameters`` (with its model hash and version), and then only ``tui_app``
is added. Read the chunks back with Pillow: ``Image.open(path).text["parameters"]``.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Mapping
from typing import Any

from PIL import PngImagePlugin

#: Text chunk key of AUTOMATIC1111's infotext.
PARAMETERS_KEY = "parameters"
#: Text chunk key of this project's JSON record of the request.
REQUEST_KEY = "tui_app"

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def quote(value: Any) -> str:
    """An infotext field value: JSON-quoted when it holds ``,``, ``:`` or a line break (as A1111)."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def parameters_text(
    prompt: str,
    *,
    negative_prompt: str | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    cfg_scale: float | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    model: str | None = None,
    denoising_strength: float | None = None,
) -> str:
    """AUTOMATIC1111's infotext (see the module docstring) from what is known; None fields are left out.

    ``Size`` needs both ``width`` and ``height`` (px). Returns the text without a trailing newline.
    """
    fields: dict[str, Any] = {
        "Steps": steps,
        "Sampler": sampler or None,
        "CFG scale": cfg_scale,
        "Seed": seed,
        "Size": f"{width}x{height}" if width and height else None,
        "Model": model or None,
        "Denoising strength": denoising_strength,
    }
    line = ", ".join(f"{name}: {quote(value)}" for name, value in fields.items() if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def take_chunks(
    *,
    provider: str,
    model: str | None,
    collection: str,
    kind: str,
    key: str,
    take: int,
    task: str,
    text: str,
    params: Mapping[str, Any],
    options: Mapping[str, Any],
    seed: int | None,
    width: int | None,
    height: int | None,
    source: str | None = None,
) -> dict[str, str]:
    """The two text chunks of one take: ``{"parameters": infotext, "tui_app": JSON}``.

    ``params`` are the take's recorded parameters (the request's merged with the provider's:
    ``prompt``, ``negative_prompt``, ``steps``, ``sampler_name``, ``cfg_scale``,
    ``denoising_strength`` are read when present); ``width`` and ``height`` are the image's, px.
    """
    infotext = parameters_text(
        str(params.get("prompt") or ""),
        negative_prompt=_optional(params.get("negative_prompt"), str),
        steps=_optional(params.get("steps"), int),
        sampler=_optional(params.get("sampler_name") or params.get("sampler"), str),
        cfg_scale=_optional(params.get("cfg_scale"), float),
        seed=_optional(seed, int),
        width=width,
        height=height,
        model=model,
        denoising_strength=_optional(params.get("denoising_strength"), float),
    )
    record = {
        "provider": provider,
        "model": model,
        "collection": collection,
        "kind": kind,
        "key": key,
        "take": take,
        "task": task,
        "text": text,
        "params": dict(params),
        "options": dict(options),
        "seed": seed,
        "width": width,
        "height": height,
        "source": source,
    }
    return {
        PARAMETERS_KEY: infotext,
        REQUEST_KEY: json.dumps(record, sort_keys=True, ensure_ascii=False, default=str),
    }


def _optional(value: Any, kind: type) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, payload) of every chunk up to ``IEND``.

    Raises:
        ValueError: not a PNG (no signature), a chunk runs past the end of the data, no ``IEND``.
    """
    if not data.startswith(_SIGNATURE):
        raise ValueError("not a PNG file (no PNG signature)")
    chunks = []
    pos = len(_SIGNATURE)
    while pos + 8 <= len(data):
        length, cid = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ValueError(f"truncated PNG: chunk {cid!r} at byte {pos} runs past the end")
        chunks.append((pos, cid, data[pos + 8 : pos + 8 + length]))
        if cid == b"IEND":
            return chunks
        pos = end
    raise ValueError("truncated PNG: no IEND chunk")


def text_keys(data: bytes) -> list[str]:
    """Keys of the PNG's text chunks (``tEXt``, ``zTXt``, ``iTXt``), in file order.

    Raises:
        ValueError: ``data`` is not a PNG or is truncated.
    """
    chunks = _chunks(data)
    return [payload.split(b"\0", 1)[0].decode("latin-1") for _, cid, payload in chunks if cid in _TEXT_CHUNKS]


def add_text(data: bytes, texts: Mapping[str, str]) -> bytes:
    """``data`` (PNG bytes) with a text chunk per key of ``texts`` that it does not have yet.

    Chunks are built with Pillow's ``PngInfo.add_text`` and inserted before the first
    ``IDAT``; nothing else changes (no re-encoding). Keys already present are kept as they are.
    NUL characters, which PNG text may not hold, are dropped from the values.

    Raises:
        ValueError: ``data`` is not a PNG, is truncated, or has no ``IDAT`` chunk; a key
            is not 1 to 79 Latin-1 characters.
    """
    chunks = _chunks(data)
    present = {payload.split(b"\0", 1)[0] for _, cid, payload in chunks if cid in _TEXT_CHUNKS}
    idat = next((offset for offset, cid, _ in chunks if cid == b"IDAT"), None)
    if idat is None:
        raise ValueError("PNG has no IDAT chunk")
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        raw = key.encode("latin-1")
        if not 1 <= len(raw) <= 79 or b"\0" in raw:
            raise ValueError(f"PNG text key {key!r} must be 1 to 79 Latin-1 characters")
        if raw not in present:
            info.add_text(key, value.replace("\0", ""))
    if not info.chunks:
        return data
    out = io.BytesIO()
    out.write(data[:idat])
    for cid, payload, _ in info.chunks:
        PngImagePlugin.putchunk(out, cid, payload)
    out.write(data[idat:])
    return out.getvalue()
