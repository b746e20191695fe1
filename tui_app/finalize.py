"""Finalizing a chosen variant: an upscaled copy in the finals folder.

The variants' provider upscales when it can (``a1111``: ``/sdapi/v1/extra-single-image``,
with its configured upscaler); otherwise Pillow's Lanczos resampling does. The result
is written atomically, so a failed or interrupted finalize leaves no partial file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .files import atomic_write

if TYPE_CHECKING:
    from .engine import Engine


def upscale_with_pillow(src: Path, dst: Path, scale: int = 2) -> tuple[int, int]:
    """Upscale ``src`` by ``scale`` with Lanczos into ``dst`` (PNG, atomic write); returns the new size, px.

    Raises:
        OSError: ``src`` is unreadable or ``dst`` unwritable.
        PIL.UnidentifiedImageError: ``src`` is not an image.
    """
    from PIL import Image

    with Image.open(src) as img:
        big = img.convert("RGB").resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, "PNG")
    atomic_write(dst, buf.getvalue())
    return big.size


async def finalize_variant(
    engine: Engine, collection: str, src: Path, dst: Path, scale: int = 2
) -> tuple[int, int]:
    """Write the finalized (``scale`` x upscaled) copy of the take file ``src`` to ``dst``.

    Uses the collection provider's ``upscale(bytes, scale)`` when it has one, else Pillow.

    Returns:
        The finalized image's (width, height), px.

    Raises:
        ProviderError: the provider's upscale failed (nothing is written).
        OSError: reading ``src`` or writing ``dst`` failed.
    """
    from .media import image_info

    provider = engine.provider(engine.config.collections[collection].provider)
    upscale = getattr(provider, "upscale", None)
    if upscale is None:
        return await anyio.to_thread.run_sync(upscale_with_pillow, src, dst, scale)
    data = await upscale(await anyio.to_thread.run_sync(src.read_bytes), scale)
    width, height, _ = image_info(data)
    await anyio.to_thread.run_sync(atomic_write, dst, data)
    return width, height
