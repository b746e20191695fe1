"""PNG takes carry their parameters: A1111's ``parameters`` chunk and the ``tui_app`` JSON record."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import anyio
import pytest
from conftest import write_project
from httpapi.conftest import http_project
from httpapi.loopback import Fault, LoopbackServer, png_file
from PIL import Image, PngImagePlugin

from tui_app import pngmeta
from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.project import Project
from tui_app.providers import Output
from tui_app.store import Store


def _run(config_path: Path, names: list[str], providers=None) -> Store:
    project = Project.open(load_config(config_path))
    project.import_sources()
    engine = Engine(project, providers)

    async def main():
        with anyio.fail_after(60):
            await engine.run(names)
        await engine.aclose()

    anyio.run(main)
    return project.store


def _chunks(root: Path, store: Store, collection: str) -> dict[str, tuple]:
    """{key: (item, current take, its text chunks)} of one collection, checking each file's sha256."""
    takes = dict(store.current_takes(collection))
    found = {}
    for item in store.items(collection):
        take = takes[item.key]
        data = (root / take.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == take.sha256 and len(data) == take.bytes, item.key
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            found[item.key] = (item, take, dict(img.text))
    return found


def _pillow_pages(root: Path, pages: int = 2) -> Path:
    """A project whose pages come from the real ``pillow`` provider (128 x 96 px)."""
    config = write_project(root, pages=pages, photos=1, extra='\n[providers.draw]\nkind = "pillow"\n')
    text = config.read_text()
    pages_table = 'source = "data/story.md"\nprovider = "simulated"'
    assert pages_table in text
    config.write_text(text.replace(pages_table, 'source = "data/story.md"\nprovider = "draw"'))
    return config


def test_simulated_takes_carry_prompt_seed_and_the_request(tmp_path):
    config = write_project(tmp_path, entries=2, pages=2, photos=1, slots='["forensic", "balanced"]')
    store = _run(config, ["pages", "variants", "dataset"])
    pages = _chunks(tmp_path, store, "pages")
    assert len(pages) == 3
    for key, (item, take, text) in pages.items():
        lines = text["parameters"].split("\n")
        assert lines[0] == item.params["prompt"], key
        assert lines[-1] == f"Seed: {item.params['seed']}, Size: 32x32, Model: simulated", key
        record = json.loads(text["tui_app"])
        assert record["key"] == key and record["collection"] == "pages" and record["kind"] == "pages"
        assert record["take"] == take.number == 1 and record["seed"] == take.seed == item.params["seed"]
        assert record["provider"] == "simulated" and record["params"]["prompt"] == item.params["prompt"]
        assert record["options"]["width"] == 128 and record["text"] == item.text
    variants = _chunks(tmp_path, store, "variants")
    forensic = variants["astronaut.s0-forensic"][2]
    assert forensic["parameters"] == "Seed: 42, Size: 32x32, Model: simulated"  # no prompt: fields only
    assert json.loads(forensic["tui_app"])["source"] == "astronaut.png"
    wav = (tmp_path / dict(store.current_takes("dataset"))["arctic_a0001"].path).read_bytes()
    assert wav.startswith(b"RIFF") and b"tui_app" not in wav  # only PNG takes get chunks


def test_a_regenerated_take_records_its_own_number_and_seed(tmp_path):
    config = write_project(tmp_path, entries=1, pages=1, photos=1)
    store = _run(config, ["pages"])
    item = store.find_item("pages", "page_001")
    assert item is not None
    store.regenerate([item.id], debounce_s=0, priority=10, overrides={"seed": 777})
    store = _run(config, ["pages"])
    _, take, text = _chunks(tmp_path, store, "pages")["page_001"]
    assert take.number == 2 and take.seed == 777
    assert text["parameters"].endswith("Seed: 777, Size: 32x32, Model: simulated")
    assert json.loads(text["tui_app"])["take"] == 2


def test_pillow_pages_carry_the_prompt_with_its_em_dash(tmp_path):
    store = _run(_pillow_pages(tmp_path), ["pages"])
    item, take, text = _chunks(tmp_path, store, "pages")["page_001"]
    prompt = item.params["prompt"]
    assert "\u2014" in prompt  # "their names were\u2014 Flopsy": not Latin-1, so an iTXt chunk
    assert text["parameters"] == f"{prompt}\nSeed: {item.params['seed']}, Size: 128x96, Model: pillow-draft"
    assert json.loads(text["tui_app"])["model"] == "pillow-draft"


def test_a1111_takes_get_infotext_from_what_was_sent(tmp_path):
    server = LoopbackServer().start()
    try:
        config = http_project(
            tmp_path, server, pages="a1111", variants="a1111", page_count=2, photos=1, slots='["forensic"]'
        )
        store = _run(config, ["pages", "variants"])
        [img2img] = server.of("img2img")
    finally:
        server.stop()
    item, take, text = _chunks(tmp_path, store, "pages")["page_001"]
    assert text["parameters"] == (
        f"{item.params['prompt']}\n"
        f"Steps: 20, CFG scale: 7.0, Seed: {item.params['seed']}, Size: 128x96, Model: v1-5-pruned-emaonly"
    )
    assert json.loads(text["tui_app"])["params"]["steps"] == 20
    _, take, text = _chunks(tmp_path, store, "variants")["astronaut.s0-forensic"]
    sent = img2img.json
    assert text["parameters"] == (
        f"{sent['prompt']}\nSteps: 20, CFG scale: 7.0, Seed: 42, Size: {sent['width']}x{sent['height']}, "
        "Model: v1-5-pruned-emaonly, Denoising strength: 0.1"
    )
    assert (take.width, take.height) == (sent["width"], sent["height"])


def test_a1111_servers_own_parameters_chunk_is_kept(tmp_path):
    """The web UI writes its own infotext (with its model hash and version) into the PNGs its
    API returns: the take keeps it and only gets the JSON record added."""
    theirs = "a rabbit in a garden\nSteps: 31, Sampler: Euler a, CFG scale: 6.5, Seed: 99, Size: 128x96"
    with Image.open(io.BytesIO(png_file(128, 96, 99))) as img:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", theirs)
        buf = io.BytesIO()
        img.save(buf, "PNG", pnginfo=info)
        pixels = img.convert("RGB").tobytes()
    answer = {
        "images": [base64.b64encode(buf.getvalue()).decode()],
        "info": json.dumps({"seed": 99, "sd_model_name": "v1-5-pruned-emaonly"}),
    }
    server = LoopbackServer().start()
    try:
        config = http_project(tmp_path, server, pages="a1111", page_count=1, concurrency=1)
        server.inject("txt2img", *[Fault(status=200, body=answer)] * 2)  # the cover and page 1
        store = _run(config, ["pages"])
    finally:
        server.stop()
    for key, (_, take, text) in _chunks(tmp_path, store, "pages").items():
        assert text["parameters"] == theirs, key
        record = json.loads(text["tui_app"])
        assert record["key"] == key and record["seed"] == take.seed == 99
        with Image.open(tmp_path / take.path) as img:
            assert img.convert("RGB").tobytes() == pixels  # chunks added, pixels untouched


class NotPng:
    """A provider whose '.png' is not a PNG: the take is written as it came, with a warning."""

    name = "simulated"

    async def generate(self, request):
        return Output(b"GIF89a not really a png", ".png", width=1, height=1, seed=1)

    async def aclose(self):
        pass


def test_a_png_that_is_not_one_is_written_unchanged_with_a_warning(tmp_path):
    config = write_project(tmp_path, entries=1, pages=1, photos=1)
    store = _run(config, ["pages"], providers={"simulated": NotPng()})
    takes = dict(store.current_takes("pages"))
    assert (tmp_path / takes["page_001"].path).read_bytes() == b"GIF89a not really a png"
    warnings = [e for e in store.events(limit=1000) if e.kind == "png_metadata"]
    assert len(warnings) == 2 and "not a PNG file" in warnings[0].message


def test_parameters_text_format_and_quoting():
    text = pngmeta.parameters_text(
        "a cat,\nsitting",
        negative_prompt="blurry, text",
        steps=20,
        sampler="DPM++ 2M",
        cfg_scale=7.0,
        seed=5,
        width=512,
        height=768,
        model="sd: v1.5",
        denoising_strength=0.4,
    )
    assert text == (
        "a cat,\nsitting\nNegative prompt: blurry, text\n"
        'Steps: 20, Sampler: DPM++ 2M, CFG scale: 7.0, Seed: 5, Size: 512x768, Model: "sd: v1.5", '
        "Denoising strength: 0.4"
    )
    assert pngmeta.parameters_text("", seed=3, width=8, height=8) == "Seed: 3, Size: 8x8"


def test_add_text_keeps_existing_chunks_and_refuses_non_png():
    data = png_file(16, 16, 1)
    once = pngmeta.add_text(data, {"parameters": "mine", "tui_app": "{}"})
    assert pngmeta.text_keys(once) == ["parameters", "tui_app"]
    twice = pngmeta.add_text(once, {"parameters": "other", "extra": "x"})
    with Image.open(io.BytesIO(twice)) as img:
        assert img.text == {"parameters": "mine", "tui_app": "{}", "extra": "x"}
    assert pngmeta.add_text(once, {"parameters": "again"}) == once
    with pytest.raises(ValueError, match="not a PNG"):
        pngmeta.add_text(b"RIFF....WAVE", {"parameters": "x"})
    with pytest.raises(ValueError, match="truncated"):
        pngmeta.add_text(data[:40], {"parameters": "x"})
