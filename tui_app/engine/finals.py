"""Finals: a chosen variant's current take, upscaled, in ``OUTPUT/finals/KEY.takeN.png``.

A final is derived from one take and recorded with it (take, sha256, size): it is
rebuilt when the chosen item's current take changes (a regeneration, a revert),
and forgotten with its file when the choice moves to another variant
(:meth:`~tui_app.store.base.Store.choose`). The variants' provider upscales when
it can (``a1111``: ``/sdapi/v1/extra-single-image`` with its configured upscaler);
otherwise Pillow's Lanczos resampling does.

The file is written atomically, then recorded with a guarded write (the item is
still chosen, the take still current); when the guard refuses, the file is
removed again. The final it replaces is deleted after the record. Until then,
sync leaves the file alone (see :func:`tui_app.sync.reconcile`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import anyio

from ..files import IntegrityError, atomic_write, take_path
from ..media import image_info
from ..providers import Provider
from ..settings import CollectionConfig, Config
from ..store import Final, Item, Store, Take
from ..sync import FINALS

#: How much a final is upscaled.
SCALE = 2


def upscale_with_pillow(data: bytes, scale: int = SCALE) -> bytes:
    """Upscale image bytes by ``scale`` with Lanczos; returns PNG bytes.

    Raises:
        OSError, PIL.UnidentifiedImageError: ``data`` is not a readable image.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        big = img.convert("RGB").resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, "PNG")
    return buf.getvalue()


def final_path(coll: CollectionConfig, key: str, take_number: int) -> Path:
    """``OUTPUT/finals/KEY.takeN.png``: where the final of take ``take_number`` of ``key`` goes."""
    return take_path(coll.output / FINALS, key, take_number, ".png")


@dataclass(frozen=True)
class FinalBuilder:
    """Builds and records finals for one project.

    Args:
        config: the project's configuration.
        store: its store.
    """

    config: Config
    store: Store

    async def build(self, coll: CollectionConfig, provider: Provider, item: Item, take: Take) -> Final | None:
        """Build the final of ``take`` (``item``'s current take) and record it.

        Returns the recorded final, or None when the item was un-chosen or got another
        current take meanwhile (nothing is left on disk then).

        Raises:
            IntegrityError: the take's file is missing or differs from its sha256.
            ProviderError: the provider's upscale failed (nothing is written).
            OSError: the final cannot be written.
        """
        src = self.config.root / take.path
        try:
            data = await anyio.to_thread.run_sync(src.read_bytes)
        except FileNotFoundError:
            raise IntegrityError(f"{coll.name}/{item.key}: its file {take.path} is missing") from None
        if hashlib.sha256(data).hexdigest() != take.sha256:
            raise IntegrityError(f"{coll.name}/{item.key}: its file {take.path} differs from its sha256")
        upscale = getattr(provider, "upscale", None)
        if upscale is not None:
            big = await upscale(data, SCALE)
        else:
            big = await anyio.to_thread.run_sync(upscale_with_pillow, data, SCALE)
        width, height, _ = image_info(big)
        dst = final_path(coll, item.key, take.number)
        # a leftover of an interrupted build is never recorded: replacing it loses nothing
        sha = await anyio.to_thread.run_sync(atomic_write, dst, big)
        relative = (
            str(dst.relative_to(self.config.root)) if dst.is_relative_to(self.config.root) else str(dst)
        )
        recorded, replaced = self.store.record_final(item.id, take.id, relative, sha, len(big), width, height)
        if not recorded:
            dst.unlink(missing_ok=True)
            return None
        if replaced:
            (self.config.root / replaced).unlink(missing_ok=True)
        return self.store.final(item.id)
