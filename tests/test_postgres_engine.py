"""The engine on a PostgreSQL project: workers and the TUI woken by ``LISTEN`` instead of polling,
workers that outlive a lost database connection without losing a finished take (in process, with
the connection cut at chosen moments, and as separate processes over TCP on 127.0.0.1 while the
server restarts), and a take folder that a worker cannot reach (an unmounted share)."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import write_project
from test_worker_processes import cli, make_project, start, wait_for

from tui_app.config import load_config
from tui_app.engine import Engine, core
from tui_app.project import Project
from tui_app.sources import make_item
from tui_app.store import TakeRecord, open_store

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg (the postgres extra)")


# --------------------------------------------------------------------------- LISTEN


def test_a_listener_wakes_on_another_connections_commit_within_milliseconds(pg_uri):
    store = open_store(pg_uri)
    store.import_items("c", [make_item(f"k{i}", i, "t", {}) for i in range(3)])
    listener = store.listen()
    assert listener is not None
    assert listener.wait(0.05) is False  # nothing yet: times out
    store.pause(["c"])  # its own commits are not a change (as SQLite's data_version)
    assert listener.wait(0.2) is False
    other = open_store(pg_uri)
    woke: list[float] = []

    def watch() -> None:
        started = time.monotonic()
        if listener.wait(5.0):
            woke.append(time.monotonic() - started)

    thread = threading.Thread(target=watch)
    thread.start()
    time.sleep(0.2)
    committed = time.monotonic()
    other.resume(["c"])
    thread.join(5)
    assert woke and woke[0] >= 0.2 and time.monotonic() - committed < 1.0
    # close() ends a wait in progress at once, from another thread
    thread = threading.Thread(target=lambda: woke.append(listener.wait(30.0)))
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    listener.close()
    thread.join(5)
    assert woke[-1] is False and time.monotonic() - started < 1.0
    assert listener.wait(1.0) is False  # closed: returns at once
    other.close()
    store.close()


def test_a_listener_survives_a_server_restart_and_says_changes_may_have_been_missed(pg_server, pg_uri):
    store = open_store(pg_uri)
    listener = store.listen()
    pg_server.restart()
    assert listener.wait(5.0) is True  # the connection was lost: read again
    results = [listener.wait(0.5) for _ in range(3)]  # connects again: True once, then quiet
    assert results.count(True) <= 1 and results[-1] is False
    other = open_store(pg_uri)
    other.pause(["x"])
    assert listener.wait(5.0) is True  # and hears new changes
    listener.close()
    other.close()
    store.close()


def test_sqlite_is_watched_by_polling(tmp_path):
    store = open_store(tmp_path / "state.sqlite")
    assert store.listen() is None and store.lost_connection(OSError()) is False


# --------------------------------------------------------------------------- the engine, in process


def _pg_project(tmp_path: Path, uri: str, **kw: Any) -> Path:
    """A simulated project (tests/test_worker_processes.py's: fast leases, a request trace) whose
    state is the PostgreSQL database ``uri``."""
    config = make_project(tmp_path, **kw)
    config.write_text(config.read_text().replace("[project]\n", f'[project]\nstate = "{uri}"\n', 1))
    return config


def _cut(store: Any) -> None:
    """Cut ``store``'s connection from the server's side (as a restart or a network cut does)."""
    with psycopg.connect(store.uri, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (store._pid,))
    time.sleep(0.05)  # the server closes the connection


def _one_take_each(
    store: Any, root: Path, collection: str, count: int, strays: set[str] | None = None
) -> None:
    """``count`` completed items, each with exactly one take, current, whose file is in place with its
    sha256; no other file left in the take folder (but those of the keys ``strays``); nothing failed
    or generating."""
    counts = store.counts([collection])[collection]
    assert counts["completed"] == count and counts["failed"] == counts["generating"] == 0, counts
    takes = store.all_takes(collection)
    assert len(takes) == count and len({t.take.item_id for t in takes}) == count
    assert all(t.current for t in takes)
    for t in takes:
        assert hashlib.sha256((root / t.take.path).read_bytes()).hexdigest() == t.take.sha256
    folder = root / Path(takes[0].take.path).parent
    names = {p.name for p in folder.iterdir()}
    recorded = {Path(t.take.path).name for t in takes}
    if strays is None:
        assert names == recorded
    else:  # a killed worker may have left a file it wrote but never recorded, of an item it held
        assert names >= recorded and {n.split(".")[0] for n in names - recorded} <= strays
    completed = [e.key for e in store.events(limit=100_000) if e.kind == "completed"]
    assert sorted(completed) == sorted({e for e in completed}) and len(completed) == count


def _run(config: Path, patch: Callable[[Any, Engine], None]) -> Engine:
    """Import the sources and drain the dataset with one in-process engine, ``patch(store, engine)`` first."""
    with Project.open(load_config(config)) as project:
        project.import_sources()
        engine = Engine(project)
        patch(project.store, engine)
        anyio.run(lambda: engine.run(["dataset"]))
    return engine


def test_a_record_cut_before_its_commit_is_written_when_the_connection_returns(tmp_path, pg_uri):
    config = _pg_project(tmp_path, pg_uri, entries=12, latency_ms=20, concurrency=4)
    cuts = {"left": 3, "inside": False}

    def patch(store: Any, engine: Engine) -> None:
        complete_many, notify = store.complete_many, store._notify

        def completing(done: Any) -> Any:
            cuts["inside"] = True
            try:
                return complete_many(done)
            finally:
                cuts["inside"] = False

        def notifying() -> None:  # the last statement before the COMMIT
            if cuts["inside"] and cuts["left"]:
                cuts["left"] -= 1
                _cut(store)
            notify()

        store.complete_many, store._notify = completing, notifying

    engine = _run(config, patch)
    assert cuts["left"] == 0
    assert engine.stats["dataset"].completed == 12 and engine.stats["dataset"].failed == 0
    store = open_store(pg_uri)
    _one_take_each(store, tmp_path, "dataset", 12)
    assert not [e for e in store.events() if e.kind == "discarded"]


def test_a_record_whose_commit_landed_but_whose_answer_was_lost_is_kept_once(tmp_path, pg_uri):
    config = _pg_project(tmp_path, pg_uri, entries=12, latency_ms=20, concurrency=4)
    lost = {"left": 2}

    def patch(store: Any, engine: Engine) -> None:
        complete_many = store.complete_many

        def completing(done: Any) -> Any:
            ids = complete_many(done)
            if lost["left"]:  # committed; then the connection breaks before the answer is read
                lost["left"] -= 1
                _cut(store)
                store._conn.execute("SELECT 1")  # raises the loss
            return ids

        store.complete_many = completing

    engine = _run(config, patch)
    assert lost["left"] == 0
    assert engine.stats["dataset"].completed == 12 and engine.stats["dataset"].failed == 0
    store = open_store(pg_uri)
    _one_take_each(store, tmp_path, "dataset", 12)  # its file kept, and no second take
    assert not [e for e in store.events() if e.kind == "discarded"]


def test_a_record_refused_after_the_outage_removes_its_file_and_fails_nothing(tmp_path, pg_uri):
    """The lease expired during the outage and another worker took the item back: the guard refuses
    the late record, the file goes; the worker registers again and the item is made once more."""
    config = _pg_project(tmp_path, pg_uri, entries=8, latency_ms=20, concurrency=2)
    other = open_store(pg_uri)
    taken: list[str] = []

    def patch(store: Any, engine: Engine) -> None:
        complete_many = store.complete_many

        def completing(done: Any) -> Any:
            if not taken:
                taken.extend(item.key for item, _ in done)
                _cut(store)
                other.recover([engine.worker_id])  # as another worker would, its row removed too
                store._conn.execute("SELECT 1")  # raises the loss
            return complete_many(done)

        store.complete_many = completing

    engine = _run(config, patch)
    assert taken and engine.stats["dataset"].failed == 0
    _one_take_each(other, tmp_path, "dataset", 8)  # the refused file is gone
    events = other.events()
    discarded = {e.key for e in events if e.kind == "discarded"}
    recovered = {e.key for e in events if e.kind == "recovered"}  # every item the worker held then
    assert set(taken) <= discarded <= recovered
    assert max(i.attempts for i in other.items("dataset")) == 0  # no attempt spent


async def _until(check: Callable[[], Any]) -> None:
    """Poll ``check`` (a query through another connection) every 5 ms until it holds."""
    while not check():  # noqa: ASYNC110 - the condition is in the database
        await anyio.sleep(0.005)


def test_a_worker_is_woken_by_notify_not_by_polling(tmp_path, pg_uri, monkeypatch):
    # default leases (heartbeat every 5 s) and no polling to speak of: only a NOTIFY can wake it
    config = write_project(tmp_path, entries=3, pages=1, photos=1)
    config.write_text(config.read_text().replace("[project]\n", f'[project]\nstate = "{pg_uri}"\n', 1))
    monkeypatch.setattr(core, "WATCH_S", 30.0)
    monkeypatch.setattr(core, "LISTEN_POLL_S", 30.0)
    other = open_store(pg_uri)
    latency: list[float] = []

    async def scenario(engine: Engine) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(engine.run, ["dataset"], until_idle=False))
            with anyio.fail_after(20):
                await _until(lambda: other.counts(["dataset"])["dataset"]["completed"] == 3)
                await anyio.sleep(0.3)  # idle now: waiting on the listener
                for key in ("arctic_a0001", "arctic_a0002"):
                    item = other.find_item("dataset", key)
                    asked = time.time()
                    other.regenerate([item.id], debounce_s=0.0, priority=10)
                    await _until(
                        lambda t=asked: [e for e in other.events() if e.kind == "started" and e.ts > t]
                    )
                    started = max(e.ts for e in other.events() if e.kind == "started")
                    latency.append(started - asked)
                    await _until(lambda: not other.counts(["dataset"])["dataset"]["generating"])
            engine.cancel()

    with Project.open(load_config(config)) as project:
        project.import_sources()
        engine = Engine(project)
        anyio.run(scenario, engine)
    assert len(latency) == 2 and max(latency) < 1.0, latency  # far below the 5 s heartbeat


# --------------------------------------------------------------------------- worker processes over TCP


def _trace(root: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (root / "trace.jsonl").read_text().splitlines()]


def test_batch_workers_outlive_a_database_restart_in_the_middle_of_a_run(tmp_path, pg_server, procs):
    database = pg_server.create_database()
    uri = pg_server.uri(database)
    assert "@127.0.0.1:" in uri
    _pg_project(tmp_path, uri, entries=90, latency_ms=200, jitter_ms=100, concurrency=6)
    assert cli("status", cwd=tmp_path).returncode == 0  # the schema and the items, so all start alike

    def completed() -> int:
        return int(pg_server.sql(database, "SELECT COUNT(*) FROM items WHERE status='completed'")[0][0])

    for n in range(3):
        procs.append(start("--batch", "--collection", "dataset", cwd=tmp_path, log=f"batch{n}.log"))
    wait_for(lambda: completed() >= 15, timeout=60, what="a run under way")
    pg_server.restart()  # every connection is cut, in flight or idle
    wait_for(lambda: 15 < completed() < 90, timeout=60, what="the run going on")
    pg_server.restart()  # and once more
    codes = [p.wait(timeout=180) for p in procs]
    logs = [(tmp_path / f"batch{n}.log").read_text() for n in range(3)]
    assert codes == [0, 0, 0], logs
    assert not any("Traceback" in log for log in logs), logs
    store = open_store(uri)
    _one_take_each(store, tmp_path, "dataset", 90)  # exactly once, files in place, no orphan file
    assert max(i.attempts for i in store.items("dataset")) == 0
    assert store.workers() == []
    assert len({t["key"] for t in _trace(tmp_path)}) == 90


def test_sigkill_of_one_of_three_workers_keeps_the_global_throttle_and_one_take_each(
    tmp_path, pg_server, procs
):
    database = pg_server.create_database()
    config = _pg_project(
        tmp_path, pg_server.uri(database), entries=45, latency_ms=250, jitter_ms=50, concurrency=3
    )
    config.write_text(
        config.read_text().replace(
            "[providers.simulated]\n", "[providers.simulated]\nmin_interval_s = 0.04\n"
        )
    )
    assert cli("status", cwd=tmp_path).returncode == 0

    def q(statement: str, *args: object) -> list[tuple]:
        return pg_server.sql(database, statement, *args)

    for n in range(3):
        procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log=f"worker{n}.log"))
    wait_for(lambda: len(q("SELECT id FROM workers")) == 3, timeout=30, what="3 workers")
    holders = "SELECT worker_id FROM items WHERE status='generating' GROUP BY 1 ORDER BY COUNT(*) DESC"
    victim = wait_for(lambda: q(holders), what="items in flight")[0][0]
    pid = q("SELECT pid FROM workers WHERE id = ?", victim)[0][0]
    victim_proc = next(p for p in procs if p.pid == pid)
    killed_at = time.time()
    victim_proc.kill()
    victim_proc.wait()
    wait_for(
        lambda: q("SELECT COUNT(*) FROM items WHERE status='completed'")[0][0] == 45,
        timeout=90,
        what="every item completed",
    )
    assert q("SELECT COUNT(*) FROM events WHERE kind='recovered' AND ts > ?", killed_at)[0][0] > 0
    assert q("SELECT MAX(attempts) FROM items")[0][0] == 0  # the crash cost no attempt
    survivors = [p for p in procs if p is not victim_proc]
    for proc in survivors:
        proc.terminate()
    assert [p.wait(timeout=30) for p in survivors] == [0, 0]
    trace = _trace(tmp_path)
    held = {t["key"].split("/")[1] for t in trace if t["pid"] == victim_proc.pid}
    _one_take_each(open_store(pg_server.uri(database)), tmp_path, "dataset", 45, strays=held)
    assert len({t["key"] for t in trace}) == 45
    # one request per item among the survivors (a request of the victim may have finished just before
    # it was killed, its take not yet recorded: that item was made again)
    served = [t["key"] for t in trace if t["pid"] != victim_proc.pid]
    assert len(served) == len(set(served)) and {t["pid"] for t in trace} >= {p.pid for p in survivors}
    starts = sorted(t["start"] for t in trace)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.04 * 0.7, gaps  # min_interval_s over the three processes
    edges = sorted([(t["start"], 1) for t in trace] + [(t["end"], -1) for t in trace])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak <= 3  # concurrency = 3 over the three processes


# --------------------------------------------------------------------------- an unreachable take folder


def _shared_output(config: Path, folder: Path) -> None:
    """Move the dataset's take folder to ``folder`` (a share, outside the project folder)."""
    text = config.read_text()
    config.write_text(
        text.replace("[collections.dataset]\n", f'[collections.dataset]\noutput = "{folder}"\n', 1)
    )


def test_an_unmounted_take_folder_fails_only_the_items_in_flight_with_one_clear_line(tmp_path, pg_uri):
    project = tmp_path / "project"
    project.mkdir()
    config = _pg_project(project, pg_uri, entries=30, latency_ms=20, concurrency=2, max_attempts=3)
    share = tmp_path / "mnt" / "takes"  # not mounted: /mnt/takes is missing
    _shared_output(config, share / "dataset")
    done = cli("--batch", "--collection", "dataset", cwd=project)
    assert done.returncode == 1, done.stdout + done.stderr  # some failed; no crash
    assert "Traceback" not in done.stdout + done.stderr
    assert not share.exists()  # nothing was written to this machine's disk under the mount point
    store = open_store(pg_uri)
    failed = store.failed_items(["dataset"])
    line = f"cannot reach the shared take folder {share / 'dataset'}: not mounted or not writable ("
    assert failed and all((i.last_error or "").startswith(line) for i in failed)
    assert all(i.attempts == 1 for i in failed)  # failed at once: no retry
    assert len(failed) <= 2 + 16  # what was in flight, not the whole queue
    assert store.counts(["dataset"])["dataset"]["pending"] == 30 - len(failed)
    assert [e for e in store.events() if e.kind == "unreachable" and str(share / "dataset") in e.message]
    # mounted again: a retry completes everything
    share.mkdir(parents=True)
    assert cli("--batch", "--collection", "dataset", "--retry-failed", cwd=project).returncode == 0
    _one_take_each(store, project, "dataset", 30)


def test_a_serving_worker_waits_for_its_take_folder_to_come_back(tmp_path, pg_uri, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    config = _pg_project(project, pg_uri, entries=20, latency_ms=20, concurrency=2)
    share = tmp_path / "mnt" / "takes"
    _shared_output(config, share / "dataset")
    monkeypatch.setattr(core, "REACH_S", 0.2)
    other = open_store(pg_uri)

    async def scenario(engine: Engine) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(engine.run, ["dataset"], until_idle=False))
            with anyio.fail_after(30):
                await _until(lambda: [e for e in other.events() if e.kind == "unreachable"])
                await _until(lambda: not other.counts(["dataset"])["dataset"]["generating"])
                failed = other.counts(["dataset"])["dataset"]["failed"]
                assert 0 < failed <= 2 + 16  # what was in flight, not the whole queue
                await anyio.sleep(0.5)
                assert other.counts(["dataset"])["dataset"]["failed"] == failed  # no more claims meanwhile
                share.mkdir(parents=True)  # mounted
                await _until(lambda: other.counts(["dataset"])["dataset"]["completed"] == 20 - failed)
            engine.cancel()

    with Project.open(load_config(config)) as opened:
        opened.import_sources()
        anyio.run(scenario, Engine(opened))
    assert [e for e in other.events() if e.kind == "reachable"]


def test_a_read_only_take_folder_fails_its_items_on_postgres(tmp_path, pg_uri):
    """Not exit 74 as on SQLite (tests/test_storage_errors.py): another machine may reach the share."""
    from test_storage_errors import _read_only

    _pg_project(tmp_path, pg_uri, entries=10, latency_ms=10, concurrency=2)
    out = tmp_path / "data" / "out" / "dataset"
    out.mkdir(parents=True)
    try:
        context = _read_only(out)
        context.__enter__()
    except Exception as exc:  # noqa: BLE001 - no mount here
        pytest.skip(f"a read-only bind mount needs CAP_SYS_ADMIN: {exc}")
    try:
        done = cli("--batch", "--collection", "dataset", cwd=tmp_path)
    finally:
        context.__exit__(None, None, None)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = open_store(pg_uri).failed_items(["dataset"])
    assert failed and all("cannot reach the shared take folder" in (i.last_error or "") for i in failed)
    assert all("read-only file system" in (i.last_error or "").lower() for i in failed)


# --------------------------------------------------------------------------- the TUI


@pytest.mark.anyio
async def test_the_tui_repaints_on_notify_without_waiting_for_its_timer(tmp_path, pg_uri, monkeypatch):
    from conftest import until

    from tui_app.tui import app as tui
    from tui_app.tui.table import ItemTable

    config = load_config(_pg_project(tmp_path, pg_uri, entries=5, latency_ms=0, concurrency=1))
    with Project.open(config) as opened:
        opened.import_sources()
    monkeypatch.setattr(tui, "TICK_S", 30.0)  # the timer would repaint after 30 s: only a NOTIFY can
    other = open_store(pg_uri)
    app = tui.build_app(config, clock_free=True, worker=False)
    async with app.run_test(size=(140, 30)) as pilot:
        table = app.query_one("#table-dataset", ItemTable)
        await until(pilot, lambda: app._watching)
        assert table.row_at(0).status == "pending"
        item = other.claim_next("dataset", worker_id="elsewhere")
        await until(pilot, lambda: table.row_at(0).status == "generating", timeout=3)
        other.complete(
            item,
            TakeRecord(path="x.wav", sha256="0" * 64, bytes=1, provider="simulated", elapsed_s=0.1, number=1),
        )
        await until(pilot, lambda: table.row_at(0).status == "completed", timeout=3)
    assert not app._watching
