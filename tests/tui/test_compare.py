"""The compare screen (``C``) and the sweep fields of the ``R`` dialog, driven with Pilot."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from conftest import sql, until, write_project
from textual.widgets import Input, Static

from tui_app import commands
from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.media import wav_bytes
from tui_app.project import Project
from tui_app.settings import Config
from tui_app.tui import app as app_module
from tui_app.tui.app import build_app
from tui_app.tui.compare import CardView, CompareScreen, _load_waveforms, waveform_text
from tui_app.tui.screens import RegenerateDialog
from tui_app.waveform import BARS, Waveform

pytestmark = pytest.mark.anyio

SIZE = (160, 40)


def _generated(tmp_path: Path) -> Config:
    """A small simulated project, everything generated once; then page_001 has 3 more takes (a seed
    each) and arctic_a0001 3 more (speed 0.8, 1.0, 1.3)."""
    config = load_config(write_project(tmp_path, entries=3, pages=2, photos=1))
    with Project.open(config) as project:
        project.import_sources()
        engine = Engine(project)
        anyio.run(lambda: engine.run(["dataset", "pages", "variants"]))
        commands.regenerate(project, "pages", ["page_001"], takes=3)
        commands.regenerate(project, "dataset", ["arctic_a0001"], sweep="speed=0.8,1.0,1.3")
        anyio.run(lambda: engine.run(["dataset", "pages"]))
        assert len(project.store.takes(project.store.find_item("pages", "page_001").id)) == 4
    return config


@pytest.fixture
def generated(tmp_path: Path) -> Config:
    return _generated(tmp_path)


def _commands(config: Config) -> list[str]:
    """The kinds of the commands in the store's command log, oldest first, after the fixture's two
    regenerations."""
    kinds = [kind for (kind,) in sql(config.state_path, "SELECT kind FROM commands ORDER BY id")]
    assert kinds[:2] == ["regenerate", "regenerate"]
    return kinds[2:]


def _captions(app) -> list[str]:
    return [str(v.query_one(".caption", Static).content) for v in app.screen.query(CardView)]


def _current(app, collection: str, key: str) -> int:
    item = app.store.find_item(collection, key)
    return app.store.get_take(item.current_take).number


async def _open_compare(pilot, tab: str, downs: int = 0) -> CompareScreen:
    await pilot.press(tab, *["down"] * downs, "C")
    await until(pilot, lambda: isinstance(pilot.app.screen, CompareScreen))
    return pilot.app.screen


# ------------------------------------------------------------------------------------ variants


async def test_compare_shows_the_photo_and_every_variant_with_slot_temperature_and_seed(generated):
    app = build_app(generated, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_compare(pilot, "3", downs=1)
        captions = _captions(app)
        assert len(captions) == 4  # the original photo, then its three variants
        assert captions[0].startswith("original · astronaut.png")
        assert "s0 forensic · temp 0.10 · seed 42" in captions[1]
        assert "s1 balanced · temp 0.50 · seed" in captions[2]
        assert "s2 creative · temp 0.80 · seed" in captions[3]
        for caption, item in zip(captions[1:], app.store.items("variants"), strict=True):
            take = app.store.get_take(item.current_take)
            assert f"seed {take.seed}" in caption and f"take {take.number}" in caption
        # the cursor starts on the row's variant; every picture is read (in a thread) and described
        assert screen.highlighted().key == "astronaut.s1-balanced"
        descs = lambda: [str(v.query_one(".desc", Static).content) for v in screen.query(CardView)]  # noqa: E731
        await until(pilot, lambda: all("x" in d and "·" in d for d in descs()))
        assert descs()[0] == "astronaut.png · 512x512 RGB"


async def test_picking_a_variant_on_the_compare_screen_chooses_and_finalizes_it(generated):
    app = build_app(generated, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        await _open_compare(pilot, "3")  # on the forensic variant
        await pilot.press("right", "right", "c")  # the creative one
        chosen = {i.key: i.chosen for i in app.store.items("variants")}
        assert chosen == {
            "astronaut.s0-forensic": -1,
            "astronaut.s1-balanced": -1,
            "astronaut.s2-creative": 1,
        }
        assert _commands(generated) == ["choose"]  # through tui_app.commands, logged as the CLI's
        final = generated.collections["variants"].output / "finals" / "astronaut.s2-creative.take1.png"
        await until(pilot, final.exists)  # no worker runs: the app builds the final itself
        await until(pilot, lambda: "chosen" in _captions(app)[3])
        assert "set aside" in _captions(app)[1]
        await pilot.press("left", "left", "left", "c")  # the original photo is not a variant
        assert app.store.find_item("variants", "astronaut.s2-creative").chosen == 1


@pytest.fixture
def swept_variants(tmp_path: Path) -> Config:
    """One photo's variants generated, then a temperature sweep of its balanced variant (2 takes)."""
    config = load_config(write_project(tmp_path, entries=1, pages=1, photos=1))
    with Project.open(config) as project:
        project.import_sources()
        engine = Engine(project)
        anyio.run(lambda: engine.run(["variants"]))
        commands.regenerate(project, "variants", ["astronaut.s1-balanced"], sweep="temperature=0.2,0.9")
        anyio.run(lambda: engine.run(["variants"]))
    return config


async def test_a_variants_sweep_is_compared_take_by_take_and_any_take_can_be_chosen(swept_variants):
    """Every take of every variant is a card; `c` on a take that is not current makes it current,
    then chooses it (its final is built from that take)."""
    config = swept_variants
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        await _open_compare(pilot, "3")
        captions = _captions(app)
        assert len(captions) == 1 + 3 + 2  # the photo, three variants' first takes, two sweep takes
        balanced = [c for c in captions if c.startswith("s1 balanced")]
        assert [("temp 0.20" in c, "temp 0.90" in c, "▶ current" in c) for c in balanced] == [
            (False, False, False),
            (True, False, False),
            (False, True, True),
        ]
        await pilot.press("right", "right", "c")  # from forensic to balanced take 2 (temperature 0.2)
        item = app.store.find_item("variants", "astronaut.s1-balanced")
        assert item.chosen == 1 and _current(app, "variants", "astronaut.s1-balanced") == 2
        final = config.collections["variants"].output / "finals" / "astronaut.s1-balanced.take2.png"
        await until(pilot, final.exists)


# ------------------------------------------------------------------------------------ speech


async def test_speech_takes_show_their_qa_figures_and_waveforms_and_play(generated, monkeypatch):
    played: list[list[str]] = []
    monkeypatch.setattr(app_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(app_module.subprocess, "Popen", lambda cmd, **kw: played.append(cmd))
    app = build_app(generated, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_compare(pilot, "1")  # arctic_a0001
        item = app.store.find_item("dataset", "arctic_a0001")
        takes = app.store.takes(item.id)
        captions = _captions(app)
        assert len(captions) == len(takes) == 4
        for caption, take in zip(captions, takes, strict=True):
            qa = take.qa or {}
            assert f"take {take.number}" in caption
            assert f"{qa['loudness_lufs']:.1f} LUFS" in caption and "WER -" in caption
            assert f"{qa['duration_s']:.2f} s" in caption
            assert f"flags: {take.qa_flags}" in caption
        assert ["speed 0.8" in c for c in captions] == [False, True, False, False]
        assert "▶ current" in captions[3] and "speed 1.3" in captions[3]

        def waves() -> list[str]:
            return [str(v.query_one(".wave", Static).content) for v in screen.query(CardView)]

        await until(pilot, lambda: all(set(w) & set(BARS[1:]) for w in waves()))
        for wave in waves():
            rows = wave.split("\n")
            assert len(rows) == 3  # two rows of bars, then the silence marks
            assert len(rows[0]) == len(rows[2]) == SIZE[0] - 10
        await pilot.press("up", "p")  # play take 3
        assert played and played[-1][-1] == str(app.project.take_path(takes[2]))


def test_waveforms_share_one_time_scale(tmp_path):
    """A take half as long as the longest is drawn half as wide, so durations compare at a glance."""
    tone = b"\x00\x40" * 16_000
    (tmp_path / "long.wav").write_bytes(wav_bytes(tone, 16_000))
    (tmp_path / "short.wav").write_bytes(wav_bytes(tone[: len(tone) // 2], 16_000))
    (tmp_path / "bad.wav").write_bytes(b"RIFF")
    files = [(n, tmp_path / f"{n}.wav") for n in ("long", "short", "bad")]
    waves = dict(_load_waveforms(files, 60))
    assert [len(row) for row in waves["long"].rows] == [60, 60]  # type: ignore[union-attr]
    assert [len(row) for row in waves["short"].rows] == [30, 30]  # type: ignore[union-attr]
    assert isinstance(waves["bad"], str) and waves["bad"].startswith("no waveform")


def test_waveform_text_marks_leading_and_trailing_silence():
    wave = Waveform(rows=("  ▂█▂ ", " ▃███▃"), lead=1, trail=5, duration_s=0.6)
    assert waveform_text(wave).plain.split("\n") == ["  ▂█▂ ", " ▃███▃", "─    ─"]


# ------------------------------------------------------------------------------------ review


async def test_accept_reject_and_revert_from_the_compare_screen_change_the_store(generated):
    app = build_app(generated, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _open_compare(pilot, "2", downs=1)  # page_001: takes 1..4, 4 current
        assert screen.highlighted().number == 4
        page = app.store.find_item("pages", "page_001")

        def review(number: int) -> str:
            return next(t.review for t in app.store.takes(page.id) if t.number == number)

        await pilot.press("left", "y")  # accept take 3: it becomes current
        assert review(3) == "accepted" and _current(app, "pages", "page_001") == 3
        assert "take 3 ▶ current" in _captions(app)[2] and "accepted" in _captions(app)[2]
        await pilot.press("left", "n")  # reject take 2: take 3 stays current
        assert review(2) == "rejected" and _current(app, "pages", "page_001") == 3
        assert "rejected" in _captions(app)[1]
        await pilot.press("left", "v")  # make take 1 current
        assert _current(app, "pages", "page_001") == 1
        assert "take 1 ▶ current" in _captions(app)[0] and "▶ current" not in _captions(app)[2]
        assert _commands(generated) == ["review", "review", "revert"]
        await pilot.press("v")  # already current: nothing more
        assert _commands(generated) == ["review", "review", "revert"]
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


# ------------------------------------------------------------------------------------ R dialog


async def test_regenerate_dialog_with_three_takes_makes_three_takes_with_their_own_seeds(tmp_path):
    config = load_config(write_project(tmp_path, entries=3, pages=2, photos=1))
    app = build_app(config, clock_free=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2", "R")  # the cover (the other pages wait for it)
        assert isinstance(app.screen, RegenerateDialog)
        await pilot.press("tab", "tab")  # prompt, seed, then takes
        assert app.screen.focused is app.screen.query_one("#takes", Input)
        await pilot.press("3", "enter")
        assert not isinstance(app.screen, RegenerateDialog)
        page = app.store.find_item("pages", "page_000")
        await until(pilot, lambda: len(app.store.takes(page.id)) == 3, timeout=30)
        seeds = {t.seed for t in app.store.takes(page.id)}
        assert len(seeds) == 3
        notes = [n for (n,) in sql(config.state_path, "SELECT note FROM commands")]
        assert notes == [notes[0]] and "page_000 queued for 3 new takes (a seed each)" in notes[0]


@pytest.mark.parametrize(
    ("tab", "takes", "sweep", "message"),
    [
        ("1", "", "speed=fast,1.0", "--sweep speed='fast': not a valid value"),
        ("1", "", "speed=1.0", "expected NAME=V1,V2,... (two values or more)"),
        ("1", "2", "", "takes have no seed, so 2 takes would be the same"),
        ("2", "3", "seed=1,2", "--takes 3 does not match the 2 values"),
        ("2", "", "mood=1,2", "pages (pages) takes prompt, seed"),
    ],
)
async def test_bad_takes_or_sweep_in_the_dialog_show_the_commands_error_and_change_nothing(
    tmp_path, tab, takes, sweep, message
):
    config = load_config(write_project(tmp_path, entries=3, pages=2, photos=1))
    app = build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(tab, "R")
        dialog = app.screen
        assert isinstance(dialog, RegenerateDialog)
        dialog.query_one("#takes", Input).value = takes
        dialog.query_one("#sweep", Input).value = sweep
        dialog.query_one("#sweep", Input).focus()
        await pilot.press("enter")
        assert app.screen is dialog  # still open, saying why
        assert message in str(dialog.query_one("#error", Static).content)
        assert sql(config.state_path, "SELECT COUNT(*) FROM commands")[0][0] == 0
        assert sql(config.state_path, "SELECT COUNT(*) FROM items WHERE overrides IS NOT NULL")[0][0] == 0
        assert sql(config.state_path, "SELECT COUNT(*) FROM items WHERE sweep IS NOT NULL")[0][0] == 0
        await pilot.press("escape")
        assert not isinstance(app.screen, RegenerateDialog)


# ------------------------------------------------------------------------------------ snapshot


def test_compare_screen_of_a_speech_sweep(snap_compare, tmp_path):
    """The takes of a speed sweep with their QA figures and waveforms (deterministic on the
    simulated provider: speech takes have no seed)."""
    app = build_app(_generated(tmp_path), clock_free=True, import_in_background=False, worker=False)

    async def opened(pilot) -> None:
        await pilot.press("C")
        await until(pilot, lambda: isinstance(app.screen, CompareScreen))
        views = app.screen.query(CardView)
        await until(pilot, lambda: all("…" not in str(v.query_one(".wave", Static).content) for v in views))

    assert snap_compare(app, terminal_size=(120, 30), run_before=opened)
