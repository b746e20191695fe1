"""A deterministic **draft** illustration renderer for story pages.

This is not an image model. It paints a simple procedural landscape (sky
gradient, sun or moon, clouds, layered hills, trees) whose palette and layout
follow the prompt's keywords and the seed, marked DRAFT, so a picture book can
be laid out and a pipeline exercised offline. Real illustrations come from the
HTTP providers (``openai``, ``a1111``).

Like those, the ``pillow`` provider's pages are bare pictures (``caption=False``):
the picture book (:mod:`tui_app.exports.book`) sets the title and text itself, once.
With ``caption=True`` the page text is set below the picture as a caption (and a
cover's title over it), for a self-contained draft page.

Same inputs, same bytes: every random draw comes from
``random.Random(f"{seed}:{prompt}")`` (never Python's per-process salted ``hash``),
and PNG encoding is deterministic.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: (sky top, sky bottom, hill colours near->far) per mood keyword.
PALETTES = {
    "night": ((12, 18, 48), (48, 58, 110), [(28, 52, 44), (38, 66, 60), (52, 80, 82)]),
    "dusk": ((70, 60, 130), (240, 150, 110), [(60, 90, 60), (90, 110, 80), (130, 120, 110)]),
    "garden": ((140, 200, 235), (220, 240, 235), [(70, 140, 60), (100, 165, 80), (140, 190, 120)]),
    "day": ((120, 180, 230), (225, 238, 245), [(90, 140, 70), (125, 165, 95), (165, 190, 150)]),
}
KEYWORDS = {
    "night": ("night", "dark", "moon", "bed-time", "supper", "evening", "sleep"),
    "dusk": ("tired", "sad", "cried", "wept", "lost", "fright"),
    "garden": (
        "garden",
        "lettuce",
        "beans",
        "radish",
        "cabbage",
        "gooseberry",
        "potatoes",
        "wood",
        "fir-tree",
    ),
}
CAPTION_FRACTION = 0.28


def mood(prompt: str) -> str:
    """The palette name a prompt's keywords pick (``night``, ``dusk``, ``garden`` or ``day``)."""
    lower = prompt.lower()
    for name, words in KEYWORDS.items():
        if any(w in lower for w in words):
            return name
    return "day"


def _jitter(colour: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _ridge(rng: random.Random, width: int, base: float, roughness: float) -> list[tuple[float, float]]:
    """A smoothed random walk across the width: the top edge of one hill layer."""
    points: list[tuple[float, float]] = []
    y = base
    step = max(8, width // 48)
    for x in range(0, width + step, step):
        y += rng.uniform(-roughness, roughness)
        y = 0.8 * y + 0.2 * base
        points.append((x, y))
    smooth = [points[0]] + [
        (x, (points[i - 1][1] + y + points[min(i + 1, len(points) - 1)][1]) / 3)
        for i, (x, y) in enumerate(points[1:], start=1)
    ]
    return smooth


def _illustration(prompt: str, seed: int, width: int, height: int) -> Image.Image:
    rng = random.Random(f"{seed}:{prompt}")
    name = mood(prompt)
    top, bottom, hills = PALETTES[name]
    top, bottom = _jitter(top, rng), _jitter(bottom, rng)
    sky = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), sky
    )
    draw = ImageDraw.Draw(img, "RGBA")
    # sun or moon
    r = rng.randint(height // 12, height // 7)
    cx, cy = rng.randint(r, width - r), rng.randint(r, height // 3)
    disc = (245, 240, 210) if name == "night" else (255, 214, 110)
    draw.ellipse((cx - r * 1.6, cy - r * 1.6, cx + r * 1.6, cy + r * 1.6), fill=disc + (50,))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=disc + (255,))
    if name == "night":
        for _ in range(rng.randint(20, 40)):
            x, y = rng.randrange(width), rng.randrange(height // 2)
            draw.point((x, y), fill=(255, 255, 230, 220))
    # clouds
    for _ in range(rng.randint(1, 4)):
        x, y, w = (
            rng.randrange(width),
            rng.randint(height // 12, height // 3),
            rng.randint(width // 10, width // 5),
        )
        for _ in range(5):
            dx, dy, rr = rng.uniform(-w / 2, w / 2), rng.uniform(-w / 8, w / 8), rng.uniform(w / 6, w / 3)
            draw.ellipse(
                (x + dx - rr, y + dy - rr / 2, x + dx + rr, y + dy + rr / 2), fill=(255, 255, 255, 110)
            )
    # hills, far to near, each with a few trees
    for layer, colour in enumerate(reversed(hills)):
        base = height * (0.45 + 0.17 * layer)
        ridge = _ridge(rng, width, base, height * 0.05)
        draw.polygon(ridge + [(width, height), (0, height)], fill=_jitter(colour, rng, 10) + (255,))
        for _ in range(rng.randint(1, 3 + layer)):
            tx, ty = rng.choice(ridge)
            size = height * (0.05 + 0.05 * layer) * rng.uniform(0.7, 1.3)
            trunk = (92, 64, 40, 255)
            draw.rectangle((tx - size * 0.08, ty - size * 0.4, tx + size * 0.08, ty + size * 0.1), fill=trunk)
            leaf = _jitter((46, 110, 50) if name != "night" else (24, 58, 40), rng, 16) + (255,)
            if rng.random() < 0.5:
                draw.polygon(
                    [
                        (tx, ty - size * 1.6),
                        (tx - size * 0.6, ty - size * 0.3),
                        (tx + size * 0.6, ty - size * 0.3),
                    ],
                    fill=leaf,
                )
            else:
                draw.ellipse((tx - size * 0.6, ty - size * 1.4, tx + size * 0.6, ty - size * 0.3), fill=leaf)
    # a watercolour feel: soften, then lay a faint paper grain
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 400)))
    gw, gh = max(1, width // 4), max(1, height // 4)
    grain = Image.frombytes("L", (gw, gh), rng.randbytes(gw * gh)).resize((width, height))
    return Image.blend(img, Image.merge("RGB", (grain, grain, grain)), 0.04)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


#: Typographic characters the bundled font lacks, mapped to ones it has.
_PLAIN = str.maketrans(
    {
        "\u2014": " - ",
        "\u2013": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
    }
)


def plain(text: str) -> str:
    """``text`` with dashes, curly quotes and ellipses the bundled font cannot draw replaced."""
    return text.translate(_PLAIN).replace("  ", " ")


def wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap of ``text`` into lines no wider than ``width`` px in ``font``."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            trial = f"{line} {word}".strip()
            if not line or font.getlength(trial) <= width:
                line = trial
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
    return lines


def _caption(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    pad = max(6, (x1 - x0) // 40)
    for size in range(max(10, (y1 - y0) // 5), 7, -1):
        font = _font(size)
        lines = wrap(text, font, x1 - x0 - 2 * pad)
        line_h = int(size * 1.25)
        if len(lines) * line_h <= y1 - y0 - 2 * pad:
            break
    else:
        max_lines = max(1, (y1 - y0 - 2 * pad) // line_h)
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".,;") + "..."
    y = y0 + (y1 - y0 - len(lines) * line_h) // 2
    for line in lines:
        draw.text((x0 + pad, y), line, fill=(52, 44, 36), font=font)
        y += line_h


def render_page(
    *,
    text: str,
    prompt: str,
    seed: int,
    width: int,
    height: int,
    title: str | None = None,
    caption: bool = True,
) -> bytes:
    """PNG bytes of a ``width`` x ``height`` RGB draft page (``width``, ``height`` in px).

    With ``caption`` the illustration fills the top ~72 %; a cream panel below holds
    ``text`` (shrunk to fit, ellipsized as a last resort), and with ``title`` (the
    cover) the title is set large over the picture and ``text`` is the byline. Without
    ``caption`` the illustration fills the page and no text is set (``text`` and
    ``title`` are ignored): the bare picture a book sets its own text beside.

    Raises:
        ValueError: ``width`` or ``height`` below 64 px.
    """
    if width < 64 or height < 64:
        raise ValueError(f"page size {width}x{height} is too small (at least 64x64 px)")
    caption_h = int(height * CAPTION_FRACTION) if caption else 0
    art_h = height - caption_h
    page = Image.new("RGB", (width, height), (250, 244, 228))
    page.paste(_illustration(prompt, seed, width, art_h), (0, 0))
    draw = ImageDraw.Draw(page, "RGBA")
    if caption:
        draw.line((0, art_h, width, art_h), fill=(200, 186, 160), width=max(1, height // 200))
    if title and caption:
        size = max(12, min(width // max(8, len(title) // 2 + 4), art_h // 5))
        font = _font(size)
        lines = wrap(plain(title), font, width * 0.86)
        band_h = int(len(lines) * size * 1.3 + size)
        y = (art_h - band_h) // 2
        draw.rectangle((0, y, width, y + band_h), fill=(255, 250, 235, 190))
        ty = y + size // 2
        for line in lines:
            draw.text(((width - font.getlength(line)) / 2, ty), line, fill=(70, 40, 30), font=font)
            ty += int(size * 1.3)
    if text and caption:
        _caption(draw, plain(text), (0, art_h, width, height))
    mark = _font(max(8, height // 40))
    draw.text((width - mark.getlength("DRAFT") - 6, 4), "DRAFT", fill=(255, 255, 255, 170), font=mark)
    buf = io.BytesIO()
    page.save(buf, "PNG", optimize=False, compress_level=6)
    return buf.getvalue()
