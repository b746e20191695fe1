"""Store transitions, the guarded final write, recovery and counts."""

from __future__ import annotations

import sqlite3
import time

import pytest
from conftest import sql

from tui_app.sources import make_item
from tui_app.store import SCHEMA_VERSION, Claim, Event, SqliteStore, TakeRecord, open_store


def _take(n: int = 1) -> TakeRecord:
    return TakeRecord(
        path=f"out/a.take{n}.wav",
        sha256="0" * 64,
        bytes=10,
        provider="p",
        elapsed_s=0.1,
        number=n,
        duration_s=1.0,
    )


def _store(tmp_path, n=3) -> SqliteStore:
    store = SqliteStore(tmp_path / "state.sqlite")
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(n)])
    return store


def test_schema_version_and_wal(tmp_path):
    store = _store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.journal_mode() == "wal"


def test_claim_complete_transitions(tmp_path):
    store = _store(tmp_path)
    item = store.claim_next("c")
    assert item.key == "k0" and item.status == "generating" and item.attempts == 0  # a claim is no attempt
    assert store.counts(["c"])["c"] == {
        "pending": 2,
        "generating": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    take_id = store.complete(item, _take())
    row = store.get_item(item.id)
    assert row.status == "completed" and row.current_take == take_id
    assert store.takes(item.id)[0].sha256 == "0" * 64
    kinds = [e.kind for e in store.events()]
    assert kinds == ["started", "completed"]


def test_stale_completion_cannot_overwrite_newer_intent(tmp_path):
    store = _store(tmp_path)
    claim = store.claim_next("c")
    store.request([claim.id], batch_id=None, priority=10)  # user regenerates while in flight
    assert store.complete(claim, _take()) is None  # the old result is refused
    row = store.get_item(claim.id)
    assert row.status == "pending" and row.current_take is None and store.takes(claim.id) == []
    assert store.fail(claim, "late error") is False
    assert store.get_item(claim.id).status == "pending"


def test_cancel_discards_in_flight_result(tmp_path):
    store = _store(tmp_path)
    claim = store.claim_next("c")
    assert store.cancel([claim.id]) == 1
    assert store.complete(claim, _take()) is None
    assert store.get_item(claim.id).status == "cancelled"


def test_priority_is_served_first(tmp_path):
    store = _store(tmp_path, n=5)
    last = store.find_item("c", "k4")
    store.request([last.id], batch_id=None, priority=10)
    assert store.claim_next("c").key == "k4"
    assert store.claim_next("c").key == "k0"


def test_retry_backoff_hides_item_until_not_before(tmp_path):
    store = _store(tmp_path, n=1)
    claim = store.claim_next("c")
    assert store.fail(claim, "HTTP 503", retry_at=time.time() + 60, max_attempts=3)
    assert store.claim_next("c") is None
    assert store.next_wakeup(["c"]) > time.time()
    assert store.get_item(claim.id).last_error == "HTTP 503"
    assert store.get_item(claim.id).attempts == 1  # a real provider error is a failed try


def test_leases_pauses_front_and_reclaim(tmp_path):
    store = _store(tmp_path, n=4)
    for worker in ("w1", "w2"):
        store.register_worker(worker, "h", 1, ["c"])
    a = store.claim_next("c", worker_id="w1", lease_s=30)
    assert a.worker_id == "w1" and store.held("w1") == {a.id}
    # the provider's concurrency counts every live lease, whichever worker holds it
    assert store.claim_next("c", worker_id="w2", lease_s=30, limit=1) is None
    b = store.claim_next("c", worker_id="w2", lease_s=30, limit=2)
    assert b is not None and b.worker_id == "w2"
    # a pause stops claims (by collection, provider or everything) until resumed
    assert store.pause(["prov"]) == ["prov"]
    assert store.claim_next("c", worker_id="w2", provider="prov") is None
    assert store.resume(["*"]) == ["prov"]
    # front: a pending item jumps every priority
    last = store.find_item("c", "k3")
    assert store.front([last.id]) == 1
    assert store.claim_next("c", worker_id="w2").key == "k3"
    # w1 stops renewing: its lease expires and its item comes back, no attempt spent
    assert store.heartbeat("w2", 30) == {b.id, last.id}
    assert store.recover(["w1"]) == [("c", "k0")]
    back = store.get_item(a.id)
    assert back.status == "pending" and back.worker_id is None and back.attempts == 0
    assert store.complete(a, _take()) is None  # w1's late result is refused
    assert sorted(store.retire_worker("w2")) == [("c", "k1"), ("c", "k3")]
    assert store.held("w2") == set() and store.workers() == []


def test_cover_first_gate(tmp_path):
    store = open_store(tmp_path / "s.sqlite")
    store.import_items("p", [make_item(f"page_{i:03d}", i, "t", {}) for i in range(3)])
    cover = store.claim_next("p", cover_first=True)
    assert cover.key == "page_000"
    assert store.claim_next("p", cover_first=True) is None
    store.complete(cover, _take())
    assert store.claim_next("p", cover_first=True).key == "page_001"


def test_claim_many_in_one_transaction_within_the_shared_limit_and_group_commit(tmp_path):
    store = _store(tmp_path, n=6)
    for worker in ("w1", "w2"):
        store.register_worker(worker, "h", 1, ["c"])
    last = store.find_item("c", "k5")
    store.request([last.id], batch_id=None, priority=10)
    # served in claim order: priority first, then source order
    first = store.claim("c", 3, Claim(worker_id="w1", lease_s=30))
    assert [i.key for i in first] == ["k5", "k0", "k1"]
    assert all(i.status == "generating" and i.worker_id == "w1" for i in first)
    # w1 holds 3 live leases: with a limit of 4, w2 may take 1 more, whatever it asks for
    assert [i.key for i in store.claim("c", 3, Claim(worker_id="w2", lease_s=30, limit=4))] == ["k2"]
    assert store.claim("c", 3, Claim(worker_id="w2", lease_s=30, limit=3)) == []
    # the cover-first gate sees the state before the claim: a cover is claimed alone
    pages = open_store(tmp_path / "p.sqlite")
    pages.import_items("p", [make_item(f"page_{i:03d}", i, "t", {}) for i in range(3)])
    assert [i.key for i in pages.claim("p", 3, Claim(cover_first=True))] == ["page_000"]
    # a group commit guards every take on its own
    store.request([first[1].id], batch_id=None, priority=10)  # k0 regenerated while in flight
    ids = store.complete_many([(i, _take(n)) for n, i in enumerate(first, 1)])
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert [store.get_item(i.id).status for i in first] == ["completed", "pending", "completed"]


def test_a_paced_claim_is_the_providers_next_start_and_takes_none_without_an_item(tmp_path):
    store = _store(tmp_path, n=1)
    items, wait = store.claim_turn("c", 60.0, Claim(provider="p"))
    assert [i.key for i in items] == ["k0"] and wait == 0.0
    # the next start is 60 s away, for every worker: no claim before then
    items, wait = store.claim_turn("c", 60.0, Claim(provider="p"))
    assert items == [] and 59 < wait <= 60
    # nothing to claim: no start is taken, so a worker with no work delays no one
    other = _store(tmp_path / "other", n=0)
    assert other.claim_turn("c", 60.0, Claim(provider="p")) == ([], 0.0)
    assert other.reserve_start("p", 1.0) == 0.0


def test_recover_takes_back_expired_or_dead_leases_only_and_logs(tmp_path):
    store = _store(tmp_path)
    for worker in ("dead", "gone", "alive"):
        store.register_worker(worker, "h", 1, ["c"])
    store.claim_next("c", worker_id="dead", lease_s=30)
    store.claim_next("c", worker_id="gone", lease_s=0.01)
    store.claim_next("c", worker_id="alive", lease_s=30)
    store.close()
    time.sleep(0.02)
    store = open_store(tmp_path / "state.sqlite")
    recovered = store.recover(["dead"])
    assert sorted(k for _, k in recovered) == ["k0", "k1"]
    assert store.held("alive") == {store.find_item("c", "k2").id}
    store.recover(["alive"])
    assert store.counts(["c"])["c"]["generating"] == 0
    assert sum(e.kind == "recovered" for e in store.events()) == 3


def test_counts_are_queries_not_counters(tmp_path):
    store = _store(tmp_path)
    sql(tmp_path / "state.sqlite", "UPDATE items SET status='failed' WHERE key='k2'")
    assert store.counts(["c"])["c"]["failed"] == 1


def test_choose_sets_other_variants_aside(tmp_path):
    store = open_store(tmp_path / "s.sqlite")
    store.import_items(
        "v",
        [make_item(f"a.s{i}", i, "a.png", {"photo": "a.png"}) for i in range(3)]
        + [make_item("b.s0", 3, "b.png", {"photo": "b.png"})],
    )
    chosen = store.find_item("v", "a.s1")
    aside = store.choose(chosen.id).aside
    assert sorted(aside) == sorted(store.find_item("v", k).id for k in ("a.s0", "a.s2"))
    marks = {i.key: i.chosen for i in store.items("v")}
    assert marks == {"a.s0": -1, "a.s1": 1, "a.s2": -1, "b.s0": 0}


def test_listeners_receive_exactly_the_stored_events(tmp_path):
    store = open_store(tmp_path / "state.sqlite")
    heard: list[Event] = []
    store.subscribe(heard.append)
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(2)])
    store.import_items("c", [make_item("k0", 0, "changed text", {}), make_item("k1", 1, "text 1", {})])
    item = store.claim_next("c")
    store.complete(item, _take())
    store.log("warning", "note", "a line", collection="c", key="k1")
    assert [e.kind for e in heard] == ["stale", "started", "completed", "note"]
    assert heard == store.events()  # the same rows: ids, timestamps, levels, keys and messages


def test_a_rolled_back_change_publishes_nothing(tmp_path):
    store = _store(tmp_path)
    heard: list[Event] = []
    store.subscribe(heard.append)
    claim = store.claim_next("c")
    store.request([claim.id], batch_id=None, priority=10)
    heard.clear()
    assert store.complete(claim, _take()) is None  # refused by the guard: nothing written
    assert heard == [] and "completed" not in [e.kind for e in store.events()]
    # a transaction that fails after writing an event is rolled back with its event, which is never published
    first = store.find_item("c", "k1")
    with pytest.raises(sqlite3.Error):
        store.cancel([first.id, object()])  # the second id cannot be bound: ROLLBACK
    assert heard == [] and "cancelled" not in [e.kind for e in store.events()]
    assert store.get_item(first.id).status == "pending"
    assert store.cancel([first.id]) == 1  # the next commit publishes only its own event
    assert [(e.kind, e.key) for e in heard] == [("cancelled", "k1")]
    assert heard == store.events()[-1:]


def test_a_version_2_state_file_migrates_and_keeps_staleness(tmp_path):
    """tests/data/state_v2.sqlite was written by tui_app at schema 2: 3 entries, arctic_a0001
    regenerated (2 takes), then its text changed (stale, pending)."""
    import shutil

    from conftest import ROOT

    path = tmp_path / "state.sqlite"
    shutil.copy(ROOT / "tests" / "data" / "state_v2.sqlite", path)
    store = open_store(path)
    assert store.schema_version() == SCHEMA_VERSION
    items = {i.key: i for i in store.items("dataset")}
    assert items["arctic_a0001"].stale and items["arctic_a0001"].status == "pending"
    assert not items["arctic_a0002"].stale and items["arctic_a0002"].status == "completed"
    # the stale item's takes were made from other input: reverting to either keeps it stale
    assert store.revert(items["arctic_a0001"].id, 1)
    assert store.get_item(items["arctic_a0001"].id).stale
    store.close()
    assert open_store(path).schema_version() == SCHEMA_VERSION  # opening again changes nothing


def test_asr_checks_are_claimed_once_taken_over_when_cut_short_and_recorded(tmp_path):
    store = _store(tmp_path, n=3)
    for _ in range(3):
        item = store.claim_next("c")
        store.complete(item, _take())
    assert store.checks_left(["c"]) == 3
    first = store.claim_checks(["c"], 2, hold_s=60)
    assert [t.key for t in first] == ["k2", "k1"]  # newest first
    # claimed takes are left alone by the others while held ...
    assert [t.key for t in store.claim_checks(["c"], 5, hold_s=0.01)] == ["k0"]
    assert store.claim_checks(["c"], 5, hold_s=60) == []
    time.sleep(0.02)
    # ... and taken over once the hold expires (a check cut short by a crash is done again)
    assert [t.key for t in store.claim_checks(["c"], 5, hold_s=60)] == ["k0"]
    assert store.record_check(first[0].take.id, {"wer": 0.25, "asr_text": "text two"}, "asr_mismatch")
    done = store.get_take(first[0].take.id)
    assert done.qa == {"wer": 0.25, "asr_text": "text two"}  # merged into its (empty) QA metrics
    assert done.qa_flags == "asr_mismatch" and store.checks_left(["c"]) == 2


def _open_at(path: str, barrier) -> None:
    barrier.wait()
    SqliteStore(path).close()


def test_processes_opening_a_new_state_file_together_all_succeed(tmp_path):
    """Two `--batch` runs started at once on a new project: WAL switch and schema race, nobody fails."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(15):
        path = str(tmp_path / f"{round_}" / "state.sqlite")
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_at, args=(path, barrier)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(30)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0], f"round {round_}"
        store = SqliteStore(path)
        assert store.schema_version() == SCHEMA_VERSION and store.journal_mode() == "wal"
        store.close()
