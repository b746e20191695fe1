"""The command layer (:mod:`tui_app.commands`) and its command line: each command applies at once
through the store, is logged, says what it queued, and refuses an unknown collection, key or
override with one line (exit 2) before changing anything."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import sql, write_project

from tui_app import commands
from tui_app.cli import main
from tui_app.commands import NO_WORKER, CommandError
from tui_app.config import load_config
from tui_app.engine import REGENERATE_PRIORITY, RETRY_PRIORITY, Engine
from tui_app.project import HOST, Project


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A project that never ran: the first command creates its state and imports the sources."""
    config = load_config(write_project(tmp_path, entries=6, pages=1, photos=1))
    assert not config.state_path.exists()
    with commands.open_project(config) as opened:
        yield opened


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``tui-app ARGS`` in this process: ``(exit code, stdout, stderr)`` (pytest's signal handlers kept)."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = main(list(args))
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    out, err = capsys.readouterr()
    return code, out, err


def generate(project: Project, names: list[str]) -> None:
    """Generate everything pending in ``names`` (zero-latency simulated provider)."""
    engine = Engine(project)
    anyio.run(lambda: engine.run(names))


def logged(project: Project) -> list[tuple]:
    """The command log: ``(kind, args, origin, note)`` in order."""
    return sql(project.config.state_path, "SELECT kind, args, origin, note FROM commands ORDER BY id")


def test_regenerate_queues_with_overrides_in_one_debounced_batch(project):
    first = commands.regenerate(project, "dataset", ["arctic_a0001", "arctic_a0002"], ["emotion=happy"])
    assert first.lines == [
        "dataset: arctic_a0001, arctic_a0002 queued for a new take with emotion=happy"
        " (batch 1, ahead of the queue)"
    ]
    assert first.notes == [NO_WORKER]
    item = project.store.find_item("dataset", "arctic_a0001")
    assert (item.status, item.priority, item.overrides, item.batch_id) == (
        "pending",
        REGENERATE_PRIORITY,
        {"emotion": "happy"},
        1,
    )
    # within the debounce window (300 ms) a second request joins the same batch, whatever process sends it
    second = commands.regenerate(project, "dataset", ["arctic_a0003", "arctic_a0003"])
    assert second.lines == ["dataset: arctic_a0003 queued for a new take (batch 1, ahead of the queue)"]
    assert project.store.find_item("dataset", "arctic_a0003").overrides == {}  # fresh: a new seed
    log = logged(project)
    assert [row[0] for row in log] == ["regenerate", "regenerate"]
    assert json.loads(log[0][1]) == {
        "collection": "dataset",
        "keys": ["arctic_a0001", "arctic_a0002"],
        "overrides": {"emotion": "happy"},
    }
    assert log[0][2] == f"{HOST}:{os.getpid()}" and log[0][3] == first.lines[0]


def test_overrides_are_those_the_kind_takes(project):
    commands.regenerate(project, "pages", ["page_000"], ["seed=7", "prompt=a fox in a wood"])
    assert project.store.find_item("pages", "page_000").overrides == {"seed": 7, "prompt": "a fox in a wood"}
    variant = project.store.items("variants")[0].key
    commands.regenerate(project, "variants", [variant], ["temperature=0.5"])
    assert project.store.find_item("variants", variant).overrides == {"temperature": 0.5}
    bad = [
        ("variants", [variant], ["temperature=2"], "--set temperature='2': not a valid value"),
        ("pages", ["page_000"], ["seed=many"], "--set seed='many': not a valid value"),
        ("dataset", ["arctic_a0001"], ["seed=1"], "--set seed: dataset (dataset) takes emotion"),
        ("dataset", ["arctic_a0001"], ["emotion"], "--set 'emotion': expected NAME=VALUE"),
        ("dataset", ["arctic_a0001"], ["emotion= "], "--set emotion: needs a value"),
        (
            "dataset",
            ["arctic_a0001"],
            ["emotion=a\x1bb"],
            "--set emotion: holds a control character (U+001B)",
        ),
        ("dataset", ["arctic_a0001"], ["emotion=" + "x" * 2001], "2001 characters long (max_text_chars"),
        ("dataset", ["arctic_a0001", "nope"], [], "no item 'nope' in collection 'dataset'"),
        ("books", ["x"], [], "unknown collection 'books' (configured: dataset, pages, variants)"),
    ]
    for collection, keys, sets, message in bad:
        with pytest.raises(CommandError, match=re.escape(message)):
            commands.regenerate(project, collection, keys, sets)
    assert project.store.find_item("dataset", "arctic_a0001").overrides is None  # nothing changed
    assert len(logged(project)) == 2


def test_cancel_front_and_retry_failed(project):
    store = project.store
    moved = commands.front(project, "dataset", ["arctic_a0005", "arctic_a0006"])
    assert moved.lines == ["dataset: arctic_a0005, arctic_a0006 moved to the front of the queue"]
    top = store.find_item("dataset", "arctic_a0005").priority
    assert top > 0 and store.claim_next("dataset", worker_id="w").key == "arctic_a0005"

    cancelled = commands.cancel(project, "dataset", ["arctic_a0005", "arctic_a0004"])
    assert cancelled.lines == ["dataset: 2 items cancelled (arctic_a0005, arctic_a0004)"]  # in flight too
    again = commands.cancel(project, "dataset", ["arctic_a0004"])
    assert again.lines == ["dataset: nothing queued or in flight to cancel"]
    assert again.notes == ["arctic_a0004 is cancelled: nothing queued or in flight to cancel"]
    not_pending = commands.front(project, "dataset", ["arctic_a0004"])
    assert not_pending.lines == ["dataset: nothing pending to move"]
    assert not_pending.notes[0].startswith("arctic_a0004 is cancelled: only pending items move")

    assert commands.retry_failed(project).lines == ["no failed items in dataset, pages, variants"]
    db = project.config.state_path
    sql(db, "UPDATE items SET status='failed', attempts=3 WHERE key IN ('arctic_a0001', 'arctic_a0002')")
    retried = commands.retry_failed(project, ["dataset"])
    assert retried.lines == ["2 failed items queued again (dataset 2)"]
    assert retried.notes == [NO_WORKER]
    item = store.find_item("dataset", "arctic_a0001")
    assert (item.status, item.attempts, item.priority) == ("pending", 0, RETRY_PRIORITY)
    with pytest.raises(CommandError, match="unknown collection 'nope'"):
        commands.retry_failed(project, ["nope"])
    kinds = [row[0] for row in logged(project)]
    assert kinds == ["front", "cancel", "cancel", "front", "retry-failed", "retry-failed"]


def test_pause_and_resume_collections_providers_or_everything(project):
    store = project.store
    assert commands.pause(project).lines == [
        "paused everything: no new item starts, in-flight items finish (tui-app resume)"
    ]
    assert store.claim_next("dataset", worker_id="w", provider="simulated") is None
    paused = commands.pause(project, ["dataset", "simulated", "dataset"])
    assert paused.lines[0] == (
        "paused dataset: no new item starts, in-flight items finish (tui-app resume dataset)"
    )
    assert store.paused() == {"*", "dataset", "simulated"}
    assert commands.pause(project, ["*"]).lines == ["everything was already paused"]
    with pytest.raises(CommandError, match="unknown collection or provider 'piper'"):
        commands.pause(project, ["piper"])

    regen = commands.regenerate(project, "dataset", ["arctic_a0001"])
    assert regen.notes == [
        NO_WORKER,
        "dataset waits: everything, dataset, simulated paused (tui-app resume dataset simulated)",
    ]
    resumed = commands.resume(project, ["dataset", "pages"])
    assert resumed.lines == ["resumed dataset", "pages was not paused"]
    assert (
        resumed.notes[0]
        == "still paused: everything, simulated (tui-app resume with no name lifts every pause)"
    )
    everything = commands.resume(project)
    assert set(everything.lines) == {"resumed everything", "resumed simulated"}
    assert store.paused() == set() and commands.resume(project).lines == ["nothing was paused"]
    assert store.claim_next("dataset", worker_id="w", provider="simulated") is not None


def test_choose_and_revert(project):
    generate(project, ["dataset", "variants"])
    variant = project.store.items("variants")[1].key
    with pytest.raises(CommandError, match="dataset is a dataset collection: choose works on variants"):
        commands.choose(project, "dataset", "arctic_a0001")
    chosen = commands.choose(project, "variants", variant)
    assert chosen.lines == [f"variants/{variant} chosen; 2 other variants of its photo set aside"]
    assert chosen.notes == [f"its final is built by a running worker; {NO_WORKER}"]
    assert project.store.find_item("variants", variant).chosen == 1

    commands.regenerate(project, "dataset", ["arctic_a0001"])
    sql(project.config.state_path, "UPDATE batches SET open_until = 0")  # close the debounce window now
    generate(project, ["dataset"])
    reverted = commands.revert(project, "dataset", "arctic_a0001", 1)
    assert reverted.lines == ["dataset/arctic_a0001: take 1 is current again"] and reverted.notes == []
    with pytest.raises(CommandError, match=r"arctic_a0001 has no take 9 \(takes: \[1, 2\]\)"):
        commands.revert(project, "dataset", "arctic_a0001", 9)
    assert [row[0] for row in logged(project)][-2:] == ["regenerate", "revert"]


def test_workers_lists_only_live_workers_and_notes_unserved_collections(project):
    store = project.store
    assert commands.workers_report(project) == []
    assert commands.workers_lines([]) == ["no worker is running"]
    store.register_worker("here", HOST, os.getpid(), ["dataset"])
    store.register_worker("gone", HOST, 2**22 + 4321, ["dataset"])  # no such process
    store.register_worker("silent", "elsewhere", 1, ["dataset"])
    sql(project.config.state_path, "UPDATE workers SET heartbeat_at = heartbeat_at - 60 WHERE id='silent'")
    report = commands.workers_report(project)
    assert [w["id"] for w in report] == ["here"]
    assert report[0]["pid"] == os.getpid() and report[0]["in_flight"] == 0
    assert report[0]["collections"] == ["dataset"] and report[0]["heartbeat_age_s"] < 5
    lines = commands.workers_lines(report)
    assert lines[0].split() == ["ID", "HOST", "PID", "STARTED", "HEARTBEAT", "IN", "FLIGHT", "COLLECTIONS"]
    assert lines[1].startswith("here") and lines[1].split()[-2:] == ["0", "dataset"]

    served = commands.regenerate(project, "dataset", ["arctic_a0001"])
    assert served.notes == []
    unserved = commands.regenerate(project, "pages", ["page_000"])
    assert unserved.notes == [
        "no running worker serves pages: start one with tui-app worker --collection pages"
    ]


def test_command_line(tmp_path, capsys):
    write_project(tmp_path, entries=6, pages=1, photos=1)
    config = str(tmp_path / "config.toml")
    code, out, err = run_cli("regenerate", "--config", config, "dataset", "arctic_a0002", capsys=capsys)
    assert code == 0 and out.startswith("dataset: arctic_a0002 queued for a new take (batch 1")
    assert err.strip() == NO_WORKER
    assert run_cli("--config", config, "pause", "pages", capsys=capsys)[:2] == (
        0,
        "paused pages: no new item starts, in-flight items finish (tui-app resume pages)\n",
    )
    assert run_cli("--config", config, "resume", capsys=capsys)[1] == "resumed pages\n"
    assert run_cli("--config", config, "workers", "--json", capsys=capsys)[:2] == (0, "[]\n")
    assert run_cli("--config", config, "workers", capsys=capsys)[1] == "no worker is running\n"
    assert run_cli("--config", config, "retry-failed", capsys=capsys)[:2] == (
        0,
        "no failed items in dataset, pages, variants\n",
    )
    for args, message in [
        (["cancel", "dataset", "nope"], "no item 'nope' in collection 'dataset'"),
        (["front", "books", "x"], "unknown collection 'books' (configured: dataset, pages, variants)"),
        (["regenerate", "dataset", "arctic_a0001", "--set", "seed=1"], "--set seed: dataset (dataset) takes"),
        (["choose", "pages", "page_000"], "pages is a pages collection: choose works on variants"),
        (["pause", "nope"], "unknown collection or provider 'nope'"),
        (["worker", "--collection", "nope"], "unknown collection 'nope'"),
        (["worker", "--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2"], "--workers only work with --batch"),
    ]:
        code, out, err = run_cli("--config", config, *args, capsys=capsys)
        assert (code, out) == (2, ""), args
        assert err.count("\n") == 1 and err.startswith(f"tui-app: error: {message}"), err
    assert sql(tmp_path / "data" / "state.sqlite", "SELECT COUNT(*) FROM commands")[0][0] == 4


def test_review_accept_reject_counts_and_only_accepted_exports(project, capsys, monkeypatch):
    generate(project, ["dataset"])
    monkeypatch.chdir(project.root)
    code, out, err = run_cli(
        "review", "dataset", "arctic_a0001", "arctic_a0002", "--accept", "--note", "clean", capsys=capsys
    )
    assert code == 0, err
    assert out.strip() == "dataset: arctic_a0001 (take 1), arctic_a0002 (take 1) accepted: clean"
    assert run_cli("review", "dataset", "arctic_a0003", "--reject", capsys=capsys)[0] == 0
    taken = {t.key: t.take for t in project.store.all_takes("dataset")}
    assert (taken["arctic_a0001"].review, taken["arctic_a0001"].review_note) == ("accepted", "clean")
    assert taken["arctic_a0003"].review == "rejected" and taken["arctic_a0004"].review == "unreviewed"
    code, out, _ = run_cli("status", "--review", "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["dataset"] == {"unreviewed": 3, "accepted": 2, "rejected": 1}
    assert json.loads(out)["pages"] == {"unreviewed": 0, "accepted": 0, "rejected": 0}
    # the plain status --json keeps its contract
    assert set(json.loads(run_cli("status", "--json", capsys=capsys)[1])["dataset"]) == {
        "pending",
        "generating",
        "completed",
        "failed",
        "cancelled",
    }
    code, out, err = run_cli("export", "dataset", "out", "--only-accepted", capsys=capsys)
    assert code == 0, err
    lines = (project.root / "out" / "metadata.csv").read_text().splitlines()
    assert [line.split("|")[0] for line in lines] == ["arctic_a0001", "arctic_a0002"]
    assert "4 not accepted" in out
    assert [kind for kind, *_ in logged(project)][-2:] == ["review", "review"]


def test_review_reject_regenerates_in_one_key_and_a_new_take_starts_unreviewed(project, capsys, monkeypatch):
    generate(project, ["dataset"])
    monkeypatch.chdir(project.root)
    code, out, _ = run_cli("review", "dataset", "arctic_a0002", "--reject", "--regenerate", capsys=capsys)
    assert code == 0 and "rejected" in out and "queued for a new take" in out
    item = project.store.find_item("dataset", "arctic_a0002")
    assert item.status == "pending" and item.priority == REGENERATE_PRIORITY
    generate(project, ["dataset"])
    takes = project.store.takes(item.id)
    assert [(t.number, t.review) for t in takes] == [(1, "rejected"), (2, "unreviewed")]
    # accepting take 1 picks it: it becomes current again
    assert run_cli("review", "dataset", "arctic_a0002", "--accept", "--take", "1", capsys=capsys)[0] == 0
    now = project.store.find_item("dataset", "arctic_a0002")
    assert project.store.get_take(now.current_take).number == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["review", "dataset", "arctic_a0001"], "one of the arguments --accept --reject --clear is required"),
        (["review", "dataset", "nope", "--accept"], "no item 'nope' in collection 'dataset'"),
        (
            ["review", "dataset", "arctic_a0001", "--accept", "--regenerate"],
            "--regenerate goes with --reject",
        ),
        (["review", "dataset", "arctic_a0001", "--accept", "--note", "a\x07b"], "control character"),
        (["review", "dataset", "arctic_a0001", "--accept", "--take", "0"], "must be 1 or more"),
    ],
)
def test_review_refuses_bad_input_with_one_line(project, capsys, monkeypatch, args, message):
    generate(project, ["dataset"])
    monkeypatch.chdir(project.root)
    before = sql(project.config.state_path, "SELECT id, review FROM takes ORDER BY id")
    try:
        code, _, err = run_cli(*args, capsys=capsys)
    except SystemExit as exc:  # argparse's own checks: its usage, then one error line
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2 and message in err.strip().splitlines()[-1], err
    assert sql(project.config.state_path, "SELECT id, review FROM takes ORDER BY id") == before


def test_regenerate_refuses_an_emotion_piper_has_no_settings_for(tmp_path, capsys, monkeypatch):
    (tmp_path / "prompts.data").write_text('( arctic_a0001 "Author of the danger trail." )\n')
    (tmp_path / "config.toml").write_text(
        '[collections.dataset]\nsource = "prompts.data"\nprovider = "local"\n\n'
        '[providers.local]\nkind = "piper"\n\n[emotions.dreamy]\nlength_scale = 1.3\n'
    )
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("regenerate", "dataset", "arctic_a0001", "--set", "emotion=grumpy", capsys=capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("tui-app: error: dataset: emotion 'grumpy' has no Piper")
    assert sql(tmp_path / "data" / "state.sqlite", "SELECT COUNT(*) FROM commands")[0][0] == 0
    code, out, _ = run_cli("regenerate", "dataset", "arctic_a0001", "--set", "emotion=dreamy", capsys=capsys)
    assert code == 0 and "with emotion=dreamy" in out


def test_sweeps_make_n_kept_takes_with_distinct_seeds_or_stepped_values(project, capsys, monkeypatch):
    generate(project, ["pages", "variants", "dataset"])
    monkeypatch.chdir(project.root)
    code, out, err = run_cli("regenerate", "pages", "page_000", "--takes", "3", capsys=capsys)
    assert code == 0, err
    assert "page_000 queued for 3 new takes (a seed each)" in out
    variant = project.store.items("variants")[0].key
    code, out, err = run_cli(
        "regenerate", "variants", variant, "--sweep", "temperature=0.2,0.5,0.8", capsys=capsys
    )
    assert code == 0 and "3 new takes (temperature=0.2,0.5,0.8)" in out, err
    code, out, err = run_cli(
        "regenerate", "dataset", "arctic_a0001", "--sweep", "speed=0.8,1.25", capsys=capsys
    )
    assert code == 0, err
    generate(project, ["pages", "variants", "dataset"])
    page = project.store.find_item("pages", "page_000")
    takes = project.store.takes(page.id)
    assert [t.number for t in takes] == [1, 2, 3, 4] and page.status == "completed"
    seeds = [t.seed for t in takes[1:]]
    assert len(set(seeds)) == 3 and all(isinstance(s, int) for s in seeds)
    assert project.store.get_take(page.current_take).number == 4 and page.overrides is None
    swept = project.store.takes(project.store.find_item("variants", variant).id)
    assert [t.params.get("temperature") for t in swept[1:]] == [0.2, 0.5, 0.8]
    spoken = project.store.takes(project.store.find_item("dataset", "arctic_a0001").id)
    assert [t.params.get("speed") for t in spoken[1:]] == [0.8, 1.25]
    # every take of the sweep starts unreviewed, and accepting one makes it current
    assert {t.review for t in takes} == {"unreviewed"}
    assert run_cli("review", "pages", "page_000", "--accept", "--take", "2", capsys=capsys)[0] == 0
    assert project.store.get_take(project.store.find_item("pages", "page_000").current_take).number == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset", "arctic_a0001", "--takes", "3"], "takes have no seed, so 3 takes would be the same"),
        (["pages", "page_000", "--sweep", "seed=1"], "expected NAME=V1,V2,... (two values or more)"),
        (
            ["pages", "page_000", "--sweep", "seed=1,2", "--takes", "3"],
            "--takes 3 does not match the 2 values",
        ),
        (["pages", "page_000", "--sweep", "mood=1,2"], "pages (pages) takes prompt, seed"),
        (["variants", "x", "--sweep", "temperature=0.2,7"], "not a valid value"),
    ],
)
def test_bad_sweeps_are_refused_with_one_line(project, capsys, monkeypatch, args, message):
    monkeypatch.chdir(project.root)
    if args[1] == "x":
        args = [args[0], project.store.items("variants")[0].key, *args[2:]]
    code, _, err = run_cli("regenerate", *args, capsys=capsys)
    assert code == 2 and message in err.strip().splitlines()[-1], err
    assert sql(project.config.state_path, "SELECT COUNT(*) FROM items WHERE sweep IS NOT NULL")[0][0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["variants", "x", "--set", "seed=-1"],
            "--set seed='-1': not a valid value (an integer from 0 to 2147483647)",
        ),
        (["variants", "x", "--set", "seed=99999999999"], "--set seed='99999999999': not a valid value"),
        (["pages", "page_000", "--set", "seed=2147483648"], "--set seed='2147483648': not a valid value"),
        (["pages", "page_000", "--takes", "100000"], "--takes 100000: at most 100 new takes per item"),
        (
            ["pages", "page_000", "--sweep", "seed=" + ",".join(map(str, range(101)))],
            "--sweep seed: 101 values, at most 100",
        ),
        (["variants", "x", "--sweep", "temperature=0.1,abc"], "--sweep temperature='abc': not a valid value"),
        (["variants", "x", "--sweep", "seed=1,-2"], "--sweep seed='-2': not a valid value"),
    ],
)
def test_regenerate_refuses_out_of_range_seeds_and_too_many_takes(
    project, capsys, monkeypatch, args, message
):
    monkeypatch.chdir(project.root)
    if args[1] == "x":
        args = [args[0], project.store.items("variants")[0].key, *args[2:]]
    code, out, err = run_cli("regenerate", *args, capsys=capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert err.startswith(f"tui-app: error: {message}"), err
    assert sql(project.config.state_path, "SELECT COUNT(*) FROM commands")[0][0] == 0
    assert sql(project.config.state_path, "SELECT COUNT(*) FROM items WHERE status = 'pending'")[0][0] == len(
        project.store.items("dataset") + project.store.items("pages") + project.store.items("variants")
    )
    code, out, err = run_cli("regenerate", "pages", "page_000", "--set", "seed=2147483647", capsys=capsys)
    assert code == 0 and "with seed=2147483647" in out, err


def test_revert_names_the_collection_and_a_current_take_changes_nothing(project, capsys, monkeypatch):
    generate(project, ["dataset"])
    monkeypatch.chdir(project.root)
    code, out, err = run_cli("revert", "dataset", "arctic_a0002", "5", capsys=capsys)
    assert (code, out) == (2, "")
    assert err == "tui-app: error: dataset/arctic_a0002 has no take 5 (takes: [1])\n"
    events = sql(project.config.state_path, "SELECT COUNT(*) FROM events")[0][0]
    code, out, err = run_cli("revert", "dataset", "arctic_a0002", "1", capsys=capsys)
    assert (code, out, err) == (0, "dataset/arctic_a0002: take 1 was already current (nothing changed)\n", "")
    assert sql(project.config.state_path, "SELECT COUNT(*) FROM events")[0][0] == events  # no revert happened


def test_pause_without_a_worker_says_so_as_resume_does(project, capsys, monkeypatch):
    monkeypatch.chdir(project.root)
    code, out, err = run_cli("pause", "dataset", capsys=capsys)
    assert code == 0 and out.startswith("paused dataset")
    assert err == NO_WORKER + "\n"
    code, out, err = run_cli("pause", "dataset", capsys=capsys)  # nothing newly paused: nothing to say
    assert (code, out, err) == (0, "dataset was already paused\n", "")
    code, out, err = run_cli("resume", "dataset", capsys=capsys)
    assert (code, out, err) == (0, "resumed dataset\n", NO_WORKER + "\n")
