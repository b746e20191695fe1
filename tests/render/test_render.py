"""Pillow renderers: deterministic draft pages and photo variants."""

from __future__ import annotations

import io
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from tui_app.providers.base import Request
from tui_app.providers.pillow import PillowProvider
from tui_app.render.pages import mood, plain, render_page
from tui_app.render.variants import analyse_photo, render_variant, slot_parameters
from tui_app.settings import ProviderConfig

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos"
TEXT = (
    "Once upon a time there were four little Rabbits, and their names were\u2014 "
    "Flopsy, Mopsy, Cotton-tail, and Peter."
)


def _page(**kw) -> bytes:
    args = {"text": TEXT, "prompt": "watercolour. " + TEXT, "seed": 7, "width": 320, "height": 240} | kw
    return render_page(**args)


def test_page_is_deterministic_png_of_the_right_size():
    data = _page()
    assert data == _page()
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == (320, 240) and img.mode == "RGB"


def test_seed_changes_the_picture():
    a = np.asarray(Image.open(io.BytesIO(_page(seed=1))), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(_page(seed=2))), dtype=np.int16)
    assert np.abs(a - b).mean() > 3


def test_cover_and_long_text_render():
    cover = _page(title="The Tale of Peter Rabbit", text="By Beatrix Potter")
    assert cover != _page(text="By Beatrix Potter")
    long = _page(text=" ".join([TEXT] * 12))
    assert Image.open(io.BytesIO(long)).size == (320, 240)


CREAM = (250, 244, 228)  # a captioned draft's panel behind the text


def _bottom_colours(data: bytes) -> set[tuple[int, int, int]]:
    """Colours of the bottom fifth of a page (inside a captioned draft's caption panel)."""
    with Image.open(io.BytesIO(data)) as img:
        bottom = img.convert("RGB").crop((0, img.height * 4 // 5, img.width, img.height))
    return {c for _, c in bottom.getcolors(1 << 20)}


def test_bare_picture_has_no_caption_or_title():
    captioned, bare = _page(), _page(caption=False)
    assert CREAM in _bottom_colours(captioned) and CREAM not in _bottom_colours(bare)
    with Image.open(io.BytesIO(bare)) as img:
        assert img.size == (320, 240)
    # text and title are not drawn: the same picture whatever they are
    assert _page(caption=False, text="other", title="A Title") == bare


def test_pillow_provider_makes_bare_pictures():
    provider = PillowProvider(ProviderConfig("draw", "pillow"))
    request = Request(
        "pages",
        "picture",
        "page_001",
        TEXT,
        {"prompt": "watercolour. " + TEXT, "seed": 7},
        {"width": 320, "height": 240},
    )
    out = anyio.run(provider.generate, request)
    assert out.data == _page(caption=False) and (out.width, out.height, out.seed) == (320, 240, 7)


def test_tiny_page_is_refused():
    with pytest.raises(ValueError, match="too small"):
        _page(width=32)


def test_mood_and_plain_text():
    assert mood("And she gave a dose of it to Peter at bed-time") == "night"
    assert mood("He went to the garden") == "garden"
    assert plain("were\u2014 \u2018Now\u2019") == "were - 'Now'"


def test_slot_parameters():
    assert slot_parameters("forensic", 0, {}, "a") == {"variant": "forensic", "temperature": 0.1, "seed": 42}
    assert [slot_parameters("balanced", i, {}, "a")["temperature"] for i in range(3)] == [0.4, 0.5, 0.6]
    assert slot_parameters("balanced", 1, {}, "a")["seed"] == slot_parameters("balanced", 1, {}, "a")["seed"]
    assert slot_parameters("creative", 2, {}, "a") == {
        "variant": "creative",
        "temperature": 0.8,
        "seed": None,
    }
    preset = slot_parameters("preset:vivid", 3, {"vivid": {"temperature": 0.6, "color": 1.3}}, "a")
    assert preset == {"variant": "preset", "preset": "vivid", "temperature": 0.6, "seed": None, "color": 1.3}
    with pytest.raises(ValueError, match="unknown slot"):
        slot_parameters("wild", 0, {}, "a")


@pytest.fixture(scope="module")
def cat():
    image = Image.open(PHOTOS / "chelsea.png").convert("RGB")
    return image, analyse_photo(image)


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


def test_analysis_is_plausible(cat):
    image, a = cat
    assert (a.width, a.height) == (451, 300)
    assert 0.3 < a.brightness < 0.7 and a.contrast > 0.05 and a.sharpness > 100
    assert sum(a.histogram) == 451 * 300
    flat = analyse_photo(Image.new("RGB", (64, 64), (128, 128, 128)))
    assert flat.contrast == pytest.approx(0) and flat.sharpness == pytest.approx(0)


def test_variants_are_seeded_and_follow_temperature(cat):
    image, a = cat
    v1, ops1 = render_variant(image, a, temperature=0.8, seed=5)
    v2, ops2 = render_variant(image, a, temperature=0.8, seed=5)
    assert ops1 == ops2 and _diff(v1, v2) == 0
    v3, _ = render_variant(image, a, temperature=0.8, seed=6)
    assert _diff(v1, v3) > 0.5
    gentle, _ = render_variant(image, a, temperature=0.1, seed=5)
    assert _diff(gentle, image) < _diff(v1, image)


def test_preset_overrides_are_applied_and_reported(cat):
    image, a = cat
    out, ops = render_variant(image, a, temperature=0.6, seed=1, overrides={"color": 1.5, "warmth": 0.5})
    assert ops["color"] == 1.5 and ops["warmth"] == 0.5
    r, _, b = (np.asarray(ch, dtype=np.float64).mean() for ch in out.split())
    r0, _, b0 = (np.asarray(ch, dtype=np.float64).mean() for ch in image.split())
    assert r - b > r0 - b0  # warmer
