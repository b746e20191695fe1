"""Photo variants with real Pillow processing, driven by a temperature and a seed.

Each variant applies, in order: autocontrast, denoise, sharpen, colour, and tone
(brightness toward mid-grey, contrast, a warm/cool shift of the red and blue
channels). Every strength scales with the slot's ``temperature`` (0 = almost
untouched, 1 = strong) and every random choice comes from
``random.Random(seed)``, so the same photo, temperature and seed always give
the same pixels. The photo is analysed once (:func:`analyse_photo`) and the
analysis steers the corrections (a flat photo gets more autocontrast, a soft
one more sharpening, a noisy one a median filter) for all its slots.

Slot types (:func:`slot_parameters`): ``forensic`` (temperature 0.1, seed 42),
``balanced`` (0.4 + 0.1 x slot index), ``creative`` (0.8, random seed chosen at
generation and recorded), or a ``[presets.NAME]`` table.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageEnhance, ImageFilter, ImageOps, ImageStat

OVERRIDE_KEYS = ("contrast", "sharpness", "color", "brightness", "denoise", "warmth")


@dataclass(frozen=True)
class PhotoAnalysis:
    """Facts about one photo, computed once and reused for all its slots.

    Attributes:
        width, height: px.
        brightness: mean luma, 0..1.
        contrast: luma standard deviation, 0..1.
        sharpness: variance of the FIND_EDGES response on luma (0..255 scale); low = soft.
        channel_means: mean R, G, B, 0..1.
        histogram: 256-bin luma histogram (pixel counts).
    """

    width: int
    height: int
    brightness: float
    contrast: float
    sharpness: float
    channel_means: tuple[float, float, float]
    histogram: tuple[int, ...]


def analyse_photo(image: Image.Image) -> PhotoAnalysis:
    """Histogram, brightness, contrast and sharpness of ``image`` (any mode)."""
    rgb = image.convert("RGB")
    luma = rgb.convert("L")
    stat = ImageStat.Stat(luma)
    # the filter's 1-px border is an artefact of padding: leave it out
    edges = ImageStat.Stat(
        luma.filter(ImageFilter.FIND_EDGES).crop((1, 1, max(2, rgb.width - 1), max(2, rgb.height - 1)))
    )
    means = ImageStat.Stat(rgb).mean
    return PhotoAnalysis(
        width=rgb.width,
        height=rgb.height,
        brightness=stat.mean[0] / 255.0,
        contrast=stat.stddev[0] / 255.0,
        sharpness=float(edges.var[0]),
        channel_means=tuple(m / 255.0 for m in means),  # type: ignore[arg-type]
        histogram=tuple(luma.histogram()),
    )


def slot_parameters(slot: str, index: int, presets: Mapping[str, Mapping[str, Any]], photo_name: str) -> dict:
    """Variant type, temperature and seed of ``slot`` at position ``index`` (0-based).

    Raises:
        ValueError: an unknown slot name.
    """
    if slot == "forensic":
        return {"variant": "forensic", "temperature": 0.1, "seed": 42}
    if slot == "balanced":
        digest = hashlib.sha256(f"{photo_name}:{index}".encode()).digest()
        return {
            "variant": "balanced",
            "temperature": min(1.0, round(0.4 + 0.1 * index, 3)),
            "seed": int.from_bytes(digest[:4], "big") & 0x7FFFFFFF,
        }
    if slot == "creative":
        return {"variant": "creative", "temperature": 0.8, "seed": None}
    name = slot.removeprefix("preset:")
    if name in presets:
        preset = presets[name]
        out = {
            "variant": "preset",
            "preset": name,
            "temperature": float(preset["temperature"]),
            "seed": preset.get("seed"),
        }
        out.update({k: preset[k] for k in OVERRIDE_KEYS if k in preset})
        return out
    raise ValueError(f"unknown slot {slot!r}: use forensic, balanced, creative or a [presets.NAME] name")


def render_variant(
    image: Image.Image,
    analysis: PhotoAnalysis,
    *,
    temperature: float,
    seed: int,
    overrides: Mapping[str, float] | None = None,
) -> tuple[Image.Image, dict]:
    """Process ``image`` into one variant.

    Args:
        image: the photo (any mode; converted to RGB).
        analysis: :func:`analyse_photo` of the same photo.
        temperature: 0..1 strength of every operation.
        seed: seed of every random draw.
        overrides: preset values replacing the random draws: contrast, sharpness,
            color, brightness (enhance factors, 1.0 = unchanged), denoise (0..1),
            warmth (-1..1).

    Returns:
        ``(variant RGB image, {operation: strength})`` of the operations applied.
    """
    t = max(0.0, min(1.0, float(temperature)))
    rng = random.Random(seed)
    ov = dict(overrides or {})
    img = image.convert("RGB")
    ops: dict[str, float] = {}

    # 1. autocontrast: more for flat photos
    flatness = max(0.0, 0.25 - analysis.contrast) / 0.25
    cutoff = round((0.5 + 2.5 * flatness) * t * rng.uniform(0.6, 1.4), 3)
    if cutoff >= 0.05:
        img = ImageOps.autocontrast(img, cutoff=cutoff)
        ops["autocontrast_cutoff_pct"] = cutoff
    # 2. denoise: median filter for noisy photos, or by chance at high temperature
    denoise = ov.get("denoise", (1.0 if analysis.sharpness > 2500 else 0.0) * t + t * rng.random() * 0.5)
    if denoise >= 0.3:
        img = img.filter(ImageFilter.MedianFilter(3))
        ops["denoise_median"] = round(float(denoise), 3)
    # 3. sharpen: stronger for soft photos
    softness = 1.0 if analysis.sharpness < 300 else 0.5 if analysis.sharpness < 1200 else 0.2
    if "sharpness" in ov:
        img = ImageEnhance.Sharpness(img).enhance(float(ov["sharpness"]))
        ops["sharpness"] = float(ov["sharpness"])
    else:
        percent = int(round(40 + 220 * t * softness * rng.uniform(0.5, 1.5)))
        img = img.filter(ImageFilter.UnsharpMask(radius=2, percent=percent, threshold=3))
        ops["unsharp_percent"] = percent
    # 4. colour saturation
    color = ov.get("color", 1.0 + t * rng.uniform(-0.35, 0.6))
    img = ImageEnhance.Color(img).enhance(color)
    ops["color"] = round(float(color), 3)
    # 5. tone: brightness toward mid-grey, contrast, warm/cool shift
    brightness = ov.get("brightness", 1.0 + t * (0.5 - analysis.brightness) * rng.uniform(0.3, 1.0))
    img = ImageEnhance.Brightness(img).enhance(brightness)
    ops["brightness"] = round(float(brightness), 3)
    contrast = ov.get("contrast", 1.0 + t * rng.uniform(-0.15, 0.35))
    img = ImageEnhance.Contrast(img).enhance(contrast)
    ops["contrast"] = round(float(contrast), 3)
    warmth = ov.get("warmth", t * rng.uniform(-0.5, 0.5))
    if abs(warmth) > 0.01:
        r, g, b = img.split()
        shift = 0.12 * warmth
        r = r.point(lambda v: min(255, int(v * (1 + shift))))
        b = b.point(lambda v: min(255, int(v * (1 - shift))))
        img = Image.merge("RGB", (r, g, b))
        ops["warmth"] = round(float(warmth), 3)
    return img, ops
