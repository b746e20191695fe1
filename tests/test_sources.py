"""Sources: festvox, LJSpeech, story markdown, photo folders; good and bad inputs; re-import."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_app.config import load_config
from tui_app.project import Project
from tui_app.sources import SourceError
from tui_app.sources.dataset import read_dataset
from tui_app.sources.photos import read_photos
from tui_app.sources.story import read_story

DEMO = Path(__file__).resolve().parents[1] / "data"


def test_festvox_demo_has_all_arctic_prompts():
    items = read_dataset(DEMO / "arctic" / "cmuarctic.data", {"format": "auto"})
    assert len(items) == 1132
    assert items[0].key == "arctic_a0001"
    assert items[0].text == "Author of the danger trail, Philip Steels, etc."
    assert [i.ordinal for i in items[:3]] == [0, 1, 2]


def test_festvox_escaped_quote(tmp_path):
    src = tmp_path / "p.data"
    src.write_text('( a1 "He said \\"hi\\" to me." )\n')
    assert read_dataset(src, {})[0].text == 'He said "hi" to me.'


@pytest.mark.parametrize(
    "line,params",
    [
        ("LJ001-0001|Printing, in 1465.", {}),
        (
            "LJ001-0001|Printing, in 1465.|Printing, in fourteen sixty-five.",
            {"normalized": "Printing, in fourteen sixty-five."},
        ),
        ("LJ001-0001|Printing.|Printing.|happy", {"normalized": "Printing.", "emotion": "happy"}),
    ],
)
def test_ljspeech_column_forms(tmp_path, line, params):
    src = tmp_path / "metadata.csv"
    src.write_text(line + "\n")
    item = read_dataset(src, {"format": "auto"})[0]
    assert item.key == "LJ001-0001"
    assert dict(item.params) == params


def test_ljspeech_explicit_columns(tmp_path):
    src = tmp_path / "metadata.csv"
    src.write_text("a|Hello there.|angry\n")
    item = read_dataset(src, {"format": "ljspeech", "columns": ["id", "text", "emotion"]})[0]
    assert dict(item.params) == {"emotion": "angry"}


@pytest.mark.parametrize(
    "content,line,needle",
    [
        ("a|one\nb|two\na|three\n", 3, "duplicate id 'a' (first on line 1)"),
        ("a|one\nb|   \n", 2, "b: empty text"),
        ("a|one\n../x|two\n", 2, "not usable as a file name"),
        ("a|one\nsub/x|two\n", 2, "not usable as a file name"),
        ("a|one\nlonely\n", 2, "expected 2 to 4 fields"),
    ],
)
def test_ljspeech_errors_name_the_line(tmp_path, content, line, needle):
    src = tmp_path / "metadata.csv"
    src.write_text(content)
    with pytest.raises(SourceError) as err:
        read_dataset(src, {"format": "ljspeech"})
    assert err.value.line == line
    assert str(err.value).startswith(f"{src}:{line}: ")
    assert needle in str(err.value)


def test_undecodable_file_names_the_line(tmp_path):
    src = tmp_path / "metadata.csv"
    src.write_bytes(b"a|one\nb|caf\xe9\n")
    with pytest.raises(SourceError, match=r"metadata.csv:2: not valid UTF-8"):
        read_dataset(src, {})


def test_festvox_bad_line(tmp_path):
    src = tmp_path / "p.data"
    src.write_text('( a1 "ok" )\n( a2 missing quotes )\n')
    with pytest.raises(SourceError, match=r"p.data:2: expected \( id \"text\" \)"):
        read_dataset(src, {"format": "festvox"})


def test_story_demo_is_cover_plus_39_pages():
    items = read_story(DEMO / "story" / "peter_rabbit.md", {"style": "watercolour", "seed": 10})
    assert len(items) == 40
    cover = items[0]
    assert cover.key == "page_000" and cover.params["title"] == "The Tale of Peter Rabbit"
    # the byline paragraph's first sentence, without the file's note on its layout and source
    assert cover.text == "By Beatrix Potter" and cover.params["author"] == "Beatrix Potter"
    assert items[1].text.startswith("Once upon a time there were four little Rabbits")
    assert items[39].text.startswith("But Flopsy, Mopsy, and Cotton-tail")
    assert items[5].params["seed"] == 15
    assert items[5].params["prompt"].startswith("watercolour. ")


@pytest.mark.parametrize(
    ("paragraph", "byline", "author"),
    [
        (
            "By Beatrix Potter (1901 edition; public domain). One page per block.",
            "By Beatrix Potter",
            "Beatrix Potter",
        ),
        ("By J. M. Barrie. Pages are separated by ---.", "By J. M. Barrie", "J. M. Barrie"),
        ("Written and illustrated by Mrs. Ewing", "Written and illustrated by Mrs. Ewing", "Mrs. Ewing"),
        ("By A.A. Milne.", "By A.A. Milne", "A.A. Milne"),
        ("Beatrix Potter", "Beatrix Potter", "Beatrix Potter"),
    ],
)
def test_story_byline_and_author(tmp_path, paragraph, byline, author):
    src = tmp_path / "s.md"
    src.write_text(f"# A Tale\n\n{paragraph}\n\nOnce upon a time.\n\nStill page one.\n\n---\n\nTwo.\n")
    cover, one, two = read_story(src, {})
    assert (cover.text, cover.params["author"], cover.params["title"]) == (byline, author, "A Tale")
    assert one.text == "Once upon a time.\n\nStill page one." and two.text == "Two."


def test_story_title_without_byline_has_no_author(tmp_path):
    src = tmp_path / "s.md"
    src.write_text("# A Tale\n\nOnce upon a time.\n\n---\n\nTwo.\n")
    cover, one, _ = read_story(src, {})
    assert cover.text == "" and "author" not in cover.params and one.text == "Once upon a time."


def test_story_without_title_starts_at_page_1(tmp_path):
    src = tmp_path / "s.md"
    src.write_text("First page.\n\n---\n\nSecond page.\n")
    items = read_story(src, {})
    assert [i.key for i in items] == ["page_001", "page_002"]


def test_story_empty_page_is_an_error(tmp_path):
    src = tmp_path / "s.md"
    src.write_text("# T\n\nOne.\n\n---\n\n---\n\nThree.\n")
    with pytest.raises(SourceError, match=r"s.md:6: empty page"):
        read_story(src, {})


def test_photos_times_slots():
    items = read_photos(DEMO / "photos", {"slots": ["forensic", "balanced", "creative"]}, {})
    assert len(items) == 12
    keys = [i.key for i in items[:3]]
    assert keys == ["astronaut.s0-forensic", "astronaut.s1-balanced", "astronaut.s2-creative"]
    assert items[0].params["temperature"] == 0.1 and items[0].params["seed"] == 42
    assert items[1].params["temperature"] == pytest.approx(0.5)
    assert items[2].params["seed"] is None


def test_photos_same_stem_is_an_error(tmp_path):
    for name in ("a.png", "a.jpg"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SourceError, match="share the name 'a'"):
        read_photos(tmp_path, {"slots": ["forensic"]}, {})


def test_reimport_is_idempotent_and_marks_changed_text_stale(project):
    config = load_config(project)
    opened = Project.open(config)
    store = opened.store
    first = opened.import_sources(names=["dataset"])["dataset"]
    assert first.added == 12
    item = store.find_item("dataset", "arctic_a0002")
    store.claim_next("dataset")  # a0001 generating
    again = opened.import_sources(names=["dataset"])["dataset"]
    assert (again.added, again.changed, again.unchanged) == (0, 0, 12)
    assert store.find_item("dataset", "arctic_a0002").generation == item.generation
    src = config.collections["dataset"].source
    src.write_text(src.read_text().replace("Not at this particular case", "Not in this case"))
    changed = opened.import_sources(names=["dataset"])["dataset"]
    assert changed.changed == 1
    after = store.find_item("dataset", "arctic_a0002")
    assert after.text.startswith("Not in this case") and after.status == "pending"
    assert store.counts(["dataset"])["dataset"]["generating"] == 1  # untouched claim of a0001


def test_bad_source_writes_nothing(project, tmp_path):
    config = load_config(project)
    (tmp_path / "data" / "story.md").write_text("# T\n\n---\n\n---\n")
    from tui_app.batch import run_batch

    with pytest.raises(SourceError):
        run_batch(config)
    assert not config.state_path.exists()


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_story_says_the_story_is_empty(tmp_path, content):
    src = tmp_path / "story.md"
    src.write_text(content)
    with pytest.raises(SourceError) as err:
        read_story(src, {})
    assert (
        str(err.value) == f"{src}: the story is empty (write its pages, separated by lines holding only ---)"
    )


def test_source_errors_escape_control_characters_in_names(tmp_path):
    (tmp_path / "good.png").write_bytes(b"x")
    (tmp_path / "a\x1b[31mRED\x01b.png").write_bytes(b"x")
    with pytest.raises(SourceError) as err:
        read_photos(tmp_path, {"slots": ["forensic"]}, {})
    text = str(err.value)
    assert "\x1b" not in text and "\x01" not in text
    assert text.startswith(
        f"{tmp_path}/a\\x1b[31mRED\\x01b.png: the file name has a control character U+001B"
    )
    assert err.value.path == tmp_path / "a\x1b[31mRED\x01b.png"  # the path itself is kept as it is
