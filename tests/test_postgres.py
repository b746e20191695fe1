"""The PostgreSQL store beyond the shared contract (tests/test_store.py runs that on both backends):
the configuration of a ``postgresql://`` state, change notifications, concurrent connections, and
worker processes sharing one project over TCP on 127.0.0.1 as they would from several machines."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import open_together, write_project
from test_worker_processes import cli, make_project, start, wait_for

from tui_app.config import ConfigError, load_config
from tui_app.sources import make_item
from tui_app.store import SCHEMA_VERSION, Claim, TakeRecord, copy_state, open_store

psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL store needs psycopg (the postgres extra)")


def _take(n: int = 1) -> TakeRecord:
    return TakeRecord(
        path=f"out/a.take{n}.wav", sha256="0" * 64, bytes=10, provider="p", elapsed_s=0.1, number=n
    )


def _with_state(config: Path, state: str, extra: str = "") -> Path:
    text = config.read_text().replace("[project]\n", f'[project]\nstate = "{state}"\n{extra}', 1)
    config.write_text(text)
    return config


# --------------------------------------------------------------------------- configuration


def test_a_postgresql_uri_in_the_config_opens_a_postgres_store(tmp_path, pg_server, monkeypatch):
    database = pg_server.create_database()
    for uri in (pg_server.uri(database), pg_server.uri(database, tcp=False)):  # TCP, and libpq's socket form
        config = load_config(_with_state(write_project(tmp_path / str(len(uri))), uri))
        assert config.state_uri == uri and config.state_location == uri
        assert config.state_path == (config.root / "data" / "state.sqlite")  # the orphans' anchor
        store = open_store(config.state_location, password_env=config.state_password_env)
        assert type(store).__name__ == "PostgresStore" and store.schema_version() == SCHEMA_VERSION
        store.close()
    monkeypatch.setenv("TUI_APP_PG_PASSWORD", "not checked by a trust server")
    config = load_config(
        _with_state(
            write_project(tmp_path / "env"),
            pg_server.uri(database),
            'state_password_env = "TUI_APP_PG_PASSWORD"\n',
        )
    )
    assert config.state_password_env == "TUI_APP_PG_PASSWORD"
    assert "not checked" not in repr(config)  # the config holds the variable's name, never the password
    open_store(config.state_location, password_env=config.state_password_env).close()
    monkeypatch.delenv("TUI_APP_PG_PASSWORD")
    with pytest.raises(KeyError, match="TUI_APP_PG_PASSWORD"):
        open_store(config.state_location, password_env="TUI_APP_PG_PASSWORD")


@pytest.mark.parametrize(
    ("state", "extra", "message"),
    [
        (
            "postgresql://app:secret@db.example:5432/tts",
            "",
            "project.state: a password does not belong in the config file: set state_password_env",
        ),
        ("postgresql://app@db.example/tts?password=x", "", "a password does not belong in the config file"),
        ("postgresql://app@db.example:5432/", "", "project.state: the URI names no database"),
        (
            "postgresql://app@db.example/tts",
            'state_password_env = "my password"\n',
            "project.state_password_env: must be the name of an environment variable",
        ),
        (
            "postgresql://app@db.example/tts",
            "state_password_env = 5\n",
            "project.state_password_env: must be the name of an environment variable, got 5",
        ),
        (
            "postgresql://app@db.example/tts",
            'state_password_env = "TUI_APP_TEST_UNSET"\n',
            "project.state_password_env: the environment variable TUI_APP_TEST_UNSET is not set",
        ),
        (
            "data/state.sqlite",
            'state_password_env = "PGPASS"\n',
            "project.state_password_env: only works with a postgresql:// state",
        ),
    ],
)
def test_bad_postgres_settings_are_one_line_config_errors(tmp_path, state, extra, message):
    config = _with_state(write_project(tmp_path), state, extra)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(config)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{config}:")
    assert "secret" not in str(err.value)


def test_a_postgresql_state_without_psycopg_exits_2_naming_the_extra(tmp_path):
    _with_state(write_project(tmp_path), "postgresql://app@db.example/tts")
    blocked = "import sys; sys.modules['psycopg'] = None; from tui_app.__main__ import run; sys.exit(run())"
    done = subprocess.run(
        [sys.executable, "-c", blocked, "status", "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert (
        "project.state: a postgresql:// state needs psycopg 3: pip install 'tui_app[postgres]'" in done.stderr
    )


# --------------------------------------------------------------------------- the backend


def test_schema_tables_use_postgres_types_and_refuse_a_foreign_or_newer_database(pg_server):
    database = pg_server.create_database()
    open_store(pg_server.uri(database)).close()
    types = dict(
        pg_server.sql(
            database,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'items'",
        )
    )
    assert types["not_before"] == "double precision" and types["lease_until"] == "double precision"
    assert types["id"] == "bigint" and types["params"] == "text" and types["retired"] == "bigint"
    pg_server.sql(database, "UPDATE tui_app_schema SET version = ?", SCHEMA_VERSION + 1)
    with pytest.raises(psycopg.DatabaseError, match="is newer than this tui_app"):
        open_store(pg_server.uri(database))
    foreign = pg_server.create_database()
    pg_server.sql(foreign, "CREATE TABLE items (id INTEGER)")
    with pytest.raises(psycopg.DatabaseError, match="not a tui_app state"):
        open_store(pg_server.uri(foreign))


def test_processes_opening_a_new_database_together_all_succeed(pg_server):
    for _ in range(3):
        uri = pg_server.uri(pg_server.create_database())
        assert open_together(uri) == [0, 0, 0, 0]
        assert open_store(uri).schema_version() == SCHEMA_VERSION


def test_every_change_is_notified_and_data_version_counts_other_connections_only(pg_uri):
    store = open_store(pg_uri)
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(3)])
    watcher = store.reader()
    listener = psycopg.connect(pg_uri, autocommit=True)
    listener.execute("LISTEN tui_app")
    before = watcher.data_version()
    own = store.data_version()
    item = store.claim_next("c", worker_id="w")
    assert store.data_version() == own  # its own commit does not count (as SQLite's data_version)
    wait_for(lambda: watcher.data_version() > before, timeout=2, what="the watcher hears the claim")
    store.complete(item, _take())
    store.heartbeat("w", 30)  # a change with no event is announced too
    heard = [n.payload for n in listener.notifies(timeout=1.0, stop_after=3)]
    assert [json.loads(p) for p in heard[:2]] == [
        {"collection": "c", "id": item.id, "key": "k0", "kind": "started"},
        {"collection": "c", "id": item.id, "key": "k0", "kind": "completed"},
    ]
    assert heard[2] == ""
    seen = watcher.data_version()
    assert watcher.data_version() == seen  # nothing new: unchanged
    # a large change is announced per collection, not per item
    store.import_items("c", [make_item(f"k{i}", i, f"new text {i}", {}) for i in range(150)])
    store.import_items("c", [make_item(f"k{i}", i, f"newer text {i}", {}) for i in range(150)])
    heard = [json.loads(n.payload) for n in listener.notifies(timeout=1.0)]
    assert len(heard) == 3 + 1 and heard[-1] == {"collection": "c"}  # 3 stale items, then 150
    listener.close()


def test_concurrent_claimers_never_take_one_item_twice_nor_exceed_the_shared_limit(pg_uri):
    first = open_store(pg_uri)
    first.import_items("c", [make_item(f"k{i:03d}", i, "t", {}) for i in range(200)])
    claimed: list[tuple[str, int]] = []
    peak = [0]
    errors: list[BaseException] = []

    def work(worker: str) -> None:
        store = open_store(pg_uri)
        try:
            store.register_worker(worker, "h", 1, ["c"])
            while True:
                items = store.claim("c", 3, Claim(worker_id=worker, lease_s=30, provider="p", limit=5))
                live = store.counts(["c"])["c"]["generating"]
                peak[0] = max(peak[0], live)
                if not items:
                    if not store.counts(["c"])["c"]["pending"]:
                        return
                    time.sleep(0.001)
                    continue
                claimed.extend((worker, i.id) for i in items)
                store.complete_many([(i, _take(i.next_take)) for i in items])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    ids = [i for _, i in claimed]
    assert len(ids) == 200 and len(set(ids)) == 200  # each item claimed once
    assert len({w for w, _ in claimed}) > 1
    assert peak[0] <= 5  # never more live leases than the provider's limit, over all claimers
    assert first.counts(["c"])["c"]["completed"] == 200


# --------------------------------------------------------------------------- worker processes over TCP


@pytest.fixture
def procs():
    """Background processes of a test: SIGKILLed at its end if still running."""
    started: list = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_batch_processes_share_one_postgres_project_over_tcp(tmp_path, pg_uri, procs):
    assert "@127.0.0.1:" in pg_uri
    _with_state(make_project(tmp_path, entries=80, latency_ms=30, jitter_ms=30, concurrency=4), pg_uri)
    for n in range(2):
        procs.append(start("--batch", "--collection", "dataset", "--json", cwd=tmp_path, log=f"batch{n}.log"))
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [
        (tmp_path / f"batch{n}.log").read_text() for n in range(2)
    ]
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 80 and len({t["key"] for t in trace}) == 80  # one request per item
    assert len({t["pid"] for t in trace}) == 2  # both processes served
    store = open_store(pg_uri)
    counted = store.counts(["dataset"])["dataset"]
    assert counted["completed"] == 80 and counted["generating"] == 0
    takes = [t for t in store.all_takes("dataset")]
    assert len(takes) == 80 and len({t.take.item_id for t in takes}) == 80 and all(t.current for t in takes)
    assert all((tmp_path / t.take.path).is_file() for t in takes)
    assert store.workers() == []  # both retired their rows
    status = cli("status", "--json", cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["dataset"]["completed"] == 80


def test_the_edges_state_machine_holds_on_postgres(pg_server):
    """tests/test_state_machine.py's rules (regenerate, revert, choose, cancel, sync, cleanup, export,
    kill and restart) on a PostgreSQL state, fewer examples."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test
    from test_state_machine import EdgesMachine

    class PostgresEdges(EdgesMachine):
        def _open(self) -> None:
            text = self.config_path.read_text()
            if "state = " not in text:
                uri = pg_server.uri(pg_server.create_database())
                self.config_path.write_text(text.replace("[project]\n", f'[project]\nstate = "{uri}"\n', 1))
            super()._open()

    run_state_machine_as_test(
        PostgresEdges,
        settings=settings(
            max_examples=8,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_sigkill_of_one_worker_among_three_loses_nothing_on_postgres(tmp_path, pg_server, procs):
    database = pg_server.create_database()
    _with_state(make_project(tmp_path, entries=45, latency_ms=300, concurrency=6), pg_server.uri(database))

    def q(statement: str, *args: object) -> list[tuple]:
        return pg_server.sql(database, statement, *args)

    def registered() -> list[tuple]:
        try:
            return q("SELECT id, pid FROM workers ORDER BY started_at")
        except psycopg.errors.UndefinedTable:  # the first worker is creating the schema
            return []

    for n in range(3):
        procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log=f"worker{n}.log"))
        if n == 0:  # the first imports the sources
            wait_for(registered, what="the first worker")
    wait_for(lambda: len(registered()) == 3, what="3 workers")
    holders = "SELECT worker_id FROM items WHERE status='generating' GROUP BY 1 ORDER BY COUNT(*) DESC"
    victim = wait_for(lambda: q(holders), what="items in flight")[0][0]
    victim_proc = next(p for p in procs if p.pid == dict(registered())[victim])
    killed_at = time.time()
    victim_proc.kill()
    victim_proc.wait()

    def completed() -> int:
        return int(q("SELECT COUNT(*) FROM items WHERE collection='dataset' AND status='completed'")[0][0])

    wait_for(lambda: completed() == 45, timeout=60, what="every item completed")
    recovered = q("SELECT item_key FROM events WHERE kind='recovered' AND ts > ?", killed_at)
    assert recovered  # the victim's items came back, each with an event
    takes = q(
        "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM takes t JOIN items i ON i.id = t.item_id"
        " WHERE i.collection='dataset'"
    )
    assert takes[0] == (45, 45)  # exactly one take per item
    assert q("SELECT MAX(attempts), COUNT(*) FILTER (WHERE status='generating') FROM items")[0] == (0, 0)
    for proc in procs:
        if proc is not victim_proc:
            proc.terminate()
    assert [p.wait(timeout=20) for p in procs if p is not victim_proc] == [0, 0]
    assert q("SELECT COUNT(*) FROM workers")[0][0] == 0


def test_two_processes_share_a_providers_min_interval_through_postgres(tmp_path, pg_uri, procs):
    config = _with_state(make_project(tmp_path, entries=20, latency_ms=40, concurrency=2), pg_uri)
    config.write_text(
        config.read_text().replace(
            "[providers.simulated]\n", "[providers.simulated]\nmin_interval_s = 0.05\n"
        )
    )
    cli("status", cwd=tmp_path)  # creates the schema, so the two start on equal terms
    for n in range(2):
        procs.append(start("--batch", "--collection", "dataset", cwd=tmp_path, log=f"batch{n}.log"))
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert len(trace) == 20 and len({t["pid"] for t in trace}) == 2
    starts = sorted(t["start"] for t in trace)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.05 * 0.7, gaps  # the interval holds across processes (scheduling jitter aside)
    edges = sorted([(t["start"], 1) for t in trace] + [(t["end"], -1) for t in trace])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak <= 2  # concurrency = 2 over both processes


def test_a_store_connects_again_after_the_server_restarts(pg_server, pg_uri):
    store = open_store(pg_uri)
    store.import_items("c", [make_item(f"k{i}", i, "t", {}) for i in range(3)])
    watcher = store.reader()
    before = watcher.data_version()
    pg_server.restart()
    claim = store.claim_next("c", worker_id="w")  # a transaction whose BEGIN met the loss runs again
    assert claim.key == "k0" and store.complete(claim, _take()) is not None
    assert watcher.counts(["c"])["c"]["completed"] == 1  # so does a read
    assert watcher.data_version() != before  # what happened meanwhile is read again
    with pytest.raises(psycopg.Error):
        watcher.log("info", "note", "the new connection is read-only too")


def test_a_projects_state_moves_from_sqlite_to_postgres_and_back(tmp_path, pg_server):
    source = open_store(tmp_path / "state.sqlite")
    source.import_items("c", [make_item(f"k{i}", i, f"text {i}", {"n": i}) for i in range(4)])
    for n in range(2):
        claim = source.claim_next("c", worker_id="w")
        source.complete(claim, replace(_take(claim.next_take), sha256=f"{n:064d}", path=f"out/k{n}.wav"))
    source.regenerate([source.find_item("c", "k0").id], debounce_s=0.0, priority=10)
    source.claim_next("c", worker_id="w")  # left generating: arrives pending
    source.pause(["p"])
    source.cool_down("p", time.time() + 60)
    source.record_command("pause", {"names": ["p"]}, "h:1", "paused p")
    middle = open_store(pg_server.uri(pg_server.create_database()))
    copied = copy_state(source, middle)
    assert copied["items"] == 4 and copied["takes"] == 2 and copied["events"] == len(source.events())
    assert copied["commands"] == 1 and copied["pauses"] == 1 and copied["provider_state"] == 1
    assert middle.counts(["c"])["c"] == {**source.counts(["c"])["c"], "generating": 0, "pending": 3}
    assert [t.take for t in middle.all_takes()] == [t.take for t in source.all_takes()]
    assert middle.events() == source.events() and middle.paused() == {"p"}
    with pytest.raises(ValueError, match="already holds a project"):
        copy_state(source, middle)
    # new rows get new ids after the copied ones
    middle.resume(["*"])
    assert middle.events()[-1].id == source.events()[-1].id + 1
    back = open_store(tmp_path / "back.sqlite")
    assert copy_state(middle, back)["events"] == len(middle.events())
    assert back.events() == middle.events() and [t.take for t in back.all_takes()] == [
        t.take for t in source.all_takes()
    ]
    claim = back.claim_next("c", worker_id="w2", min_priority=1)
    assert claim.key == "k0" and back.complete(claim, _take(claim.next_take)) is not None


def test_the_password_comes_from_the_environment_variable_named_in_the_config(
    tmp_path, pg_server, monkeypatch
):
    uri = pg_server.password_uri(pg_server.create_database(), "s3cret-pw")
    config = _with_state(write_project(tmp_path), uri, 'state_password_env = "TUI_APP_PG_PASSWORD"\n')
    monkeypatch.setenv("TUI_APP_PG_PASSWORD", "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        open_store(uri, password_env="TUI_APP_PG_PASSWORD")
    with pytest.raises(psycopg.OperationalError):
        open_store(uri)  # no password: refused
    monkeypatch.setenv("TUI_APP_PG_PASSWORD", "s3cret-pw")
    run = subprocess.run(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    store = open_store(uri, password_env="TUI_APP_PG_PASSWORD")
    assert store.counts(["dataset"])["dataset"]["completed"] == 12
    assert store.reader().counts(["dataset"])["dataset"]["completed"] == 12  # the reader logs in too
    assert not any("s3cret" in e.message for e in store.events())
    assert "s3cret" not in config.read_text() and "s3cret" not in run.stdout + run.stderr
