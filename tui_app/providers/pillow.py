"""The ``pillow`` provider: offline images with Pillow.

* ``pages``: a deterministic **draft** illustration from (prompt, seed, size), marked
  DRAFT (:mod:`tui_app.render.pages`). It is a placeholder renderer for laying out a
  book and testing a pipeline, not an image model; real illustrations come from the
  HTTP providers (``openai``, ``a1111``). Like theirs, its pictures hold no text: the
  picture book export sets each page's title and text beside the picture, once.
* ``variants``: real photo processing (autocontrast, denoise, sharpen, colour,
  tone) whose strength follows the slot's temperature and whose random choices
  follow its seed (:mod:`tui_app.render.variants`). Each photo is analysed once
  (histogram, brightness, sharpness) and the analysis is reused for all its slots.

Options: ``workers`` (threads, default one per core). Rendering runs in worker
threads, off the event loop.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import Any

import anyio

from ..settings import ProviderConfig
from .base import Output, ProviderError, Request


class PillowProvider:
    """See the module docstring."""

    def __init__(self, config: ProviderConfig):
        self.name = config.name
        self._limiter = anyio.CapacityLimiter(int(config.options.get("workers", os.cpu_count() or 1)))
        self._analyses: dict[tuple[str, int, int], Any] = {}
        self._lock = threading.Lock()

    async def prepare(self, options: dict | None = None) -> None:
        """Nothing to load."""

    async def generate(self, request: Request) -> Output:
        """Render a page or a variant in a worker thread."""
        func = self._page if request.task == "picture" else self._variant
        return await anyio.to_thread.run_sync(func, request, limiter=self._limiter, abandon_on_cancel=True)

    def _page(self, request: Request) -> Output:
        from ..render.pages import render_page

        p = request.params
        width, height = int(request.options.get("width", 768)), int(request.options.get("height", 512))
        data = render_page(
            text=request.text,
            prompt=str(p.get("prompt", request.text)),
            seed=int(p["seed"]),
            width=width,
            height=height,
            title=p.get("title"),
            caption=False,
        )
        return Output(
            data,
            ".png",
            width=width,
            height=height,
            model="pillow-draft",
            seed=int(p["seed"]),
            params={"prompt": p.get("prompt"), "width": width, "height": height},
        )

    def analysis(self, path: Path) -> Any:
        """The cached :class:`~tui_app.render.variants.PhotoAnalysis` of a photo file.

        Computed once per (path, mtime, size); a changed file is analysed again.

        Raises:
            ProviderError: the file cannot be read or decoded.
        """
        from ..render.variants import analyse_photo

        try:
            st = path.stat()
        except OSError as exc:
            raise ProviderError(f"{path.name}: cannot read photo: {exc.strerror}") from None
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._analyses.get(key)
        if cached is None:
            cached = analyse_photo(_open_photo(path))
            with self._lock:
                self._analyses[key] = cached
        return cached

    def _variant(self, request: Request) -> Output:
        from ..render.variants import render_variant

        assert request.source is not None
        analysis = self.analysis(request.source)
        p = request.params
        overrides = {
            k: float(p[k])
            for k in ("contrast", "sharpness", "color", "brightness", "denoise", "warmth")
            if k in p
        }
        image, ops = render_variant(
            _open_photo(request.source),
            analysis,
            temperature=float(p["temperature"]),
            seed=int(p["seed"]),
            overrides=overrides or None,
        )
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=3)
        return Output(
            buf.getvalue(),
            ".png",
            width=image.width,
            height=image.height,
            model="pillow",
            seed=int(p["seed"]),
            params={"variant": p.get("variant"), "temperature": p["temperature"], "operations": ops},
        )

    async def aclose(self) -> None:
        """Forget cached analyses."""
        self._analyses.clear()


def _open_photo(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ProviderError(f"{path.name}: cannot decode photo: {exc}") from None


def validate_options(options: dict, error) -> None:
    """Check the pillow provider's options; ``error(key, msg)`` builds the ConfigError."""
    for key, value in options.items():
        if key != "workers":
            raise error(key, "unknown key for a pillow provider (workers)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise error(key, f"must be an integer >= 1, got {value!r}")


def create(pc: ProviderConfig, root: Path) -> PillowProvider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder)."""
    return PillowProvider(pc)
