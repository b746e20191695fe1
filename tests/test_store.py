"""Store transitions, the guarded final write, recovery and counts: the store contract, run on both
backends (``store_factory``: SQLite and PostgreSQL), and SQLite's own file handling."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from conftest import open_together

from tui_app.sources import make_item
from tui_app.store import SCHEMA_VERSION, Claim, Event, RowFilter, SqliteStore, Store, TakeRecord, open_store


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


def _store(stores, n=3, name="state") -> Store:
    store = stores.open(name)
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(n)])
    return store


def test_schema_version(store_factory):
    store = _store(store_factory)
    assert store.schema_version() == SCHEMA_VERSION
    store.close()
    assert store_factory.open().schema_version() == SCHEMA_VERSION  # opening again changes nothing


def test_schema_version_and_wal(tmp_path):
    store = SqliteStore(tmp_path / "state.sqlite")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.journal_mode() == "wal"


def test_claim_complete_transitions(store_factory):
    store = _store(store_factory)
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


def test_stale_completion_cannot_overwrite_newer_intent(store_factory):
    store = _store(store_factory)
    claim = store.claim_next("c")
    store.request([claim.id], batch_id=None, priority=10)  # user regenerates while in flight
    assert store.complete(claim, _take()) is None  # the old result is refused
    row = store.get_item(claim.id)
    assert row.status == "pending" and row.current_take is None and store.takes(claim.id) == []
    assert store.fail(claim, "late error") is False
    assert store.get_item(claim.id).status == "pending"


def test_cancel_discards_in_flight_result(store_factory):
    store = _store(store_factory)
    claim = store.claim_next("c")
    assert store.cancel([claim.id]) == 1
    assert store.complete(claim, _take()) is None
    assert store.get_item(claim.id).status == "cancelled"


def test_priority_is_served_first(store_factory):
    store = _store(store_factory, n=5)
    last = store.find_item("c", "k4")
    store.request([last.id], batch_id=None, priority=10)
    assert store.claim_next("c").key == "k4"
    assert store.claim_next("c").key == "k0"


def test_retry_backoff_hides_item_until_not_before(store_factory):
    store = _store(store_factory, n=1)
    claim = store.claim_next("c")
    assert store.fail(claim, "HTTP 503", retry_at=time.time() + 60, max_attempts=3)
    assert store.claim_next("c") is None
    assert store.next_wakeup(["c"]) > time.time()
    assert store.get_item(claim.id).last_error == "HTTP 503"
    assert store.get_item(claim.id).attempts == 1  # a real provider error is a failed try


def test_leases_pauses_front_and_reclaim(store_factory):
    store = _store(store_factory, n=4)
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


def test_cover_first_gate(store_factory):
    store = store_factory.open("s")
    store.import_items("p", [make_item(f"page_{i:03d}", i, "t", {}) for i in range(3)])
    cover = store.claim_next("p", cover_first=True)
    assert cover.key == "page_000"
    assert store.claim_next("p", cover_first=True) is None
    store.complete(cover, _take())
    assert store.claim_next("p", cover_first=True).key == "page_001"


def test_claim_many_in_one_transaction_within_the_shared_limit_and_group_commit(store_factory):
    store = _store(store_factory, n=6)
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
    pages = store_factory.open("p")
    pages.import_items("p", [make_item(f"page_{i:03d}", i, "t", {}) for i in range(3)])
    assert [i.key for i in pages.claim("p", 3, Claim(cover_first=True))] == ["page_000"]
    # a group commit guards every take on its own
    store.request([first[1].id], batch_id=None, priority=10)  # k0 regenerated while in flight
    ids = store.complete_many([(i, _take(n)) for n, i in enumerate(first, 1)])
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert [store.get_item(i.id).status for i in first] == ["completed", "pending", "completed"]


def test_a_paced_claim_is_the_providers_next_start_and_takes_none_without_an_item(store_factory):
    store = _store(store_factory, n=1)
    items, wait = store.claim_turn("c", 60.0, Claim(provider="p"))
    assert [i.key for i in items] == ["k0"] and wait == 0.0
    # the next start is 60 s away, for every worker: no claim before then
    items, wait = store.claim_turn("c", 60.0, Claim(provider="p"))
    assert items == [] and 59 < wait <= 60
    # nothing to claim: no start is taken, so a worker with no work delays no one
    other = _store(store_factory, n=0, name="other")
    assert other.claim_turn("c", 60.0, Claim(provider="p")) == ([], 0.0)
    assert other.reserve_start("p", 1.0) == 0.0


def test_recover_takes_back_expired_or_dead_leases_only_and_logs(store_factory):
    store = _store(store_factory)
    for worker in ("dead", "gone", "alive"):
        store.register_worker(worker, "h", 1, ["c"])
    store.claim_next("c", worker_id="dead", lease_s=30)
    store.claim_next("c", worker_id="gone", lease_s=0.01)
    store.claim_next("c", worker_id="alive", lease_s=30)
    store.close()
    time.sleep(0.02)
    store = store_factory.open()
    recovered = store.recover(["dead"])
    assert sorted(k for _, k in recovered) == ["k0", "k1"]
    assert store.held("alive") == {store.find_item("c", "k2").id}
    store.recover(["alive"])
    assert store.counts(["c"])["c"]["generating"] == 0
    assert sum(e.kind == "recovered" for e in store.events()) == 3


def test_counts_are_queries_not_counters(store_factory):
    store = _store(store_factory)
    store_factory.sql("UPDATE items SET status='failed' WHERE key='k2'")
    assert store.counts(["c"])["c"]["failed"] == 1


def test_choose_sets_other_variants_aside(store_factory):
    store = store_factory.open("s")
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


def test_listeners_receive_exactly_the_stored_events(store_factory):
    store = store_factory.open()
    heard: list[Event] = []
    store.subscribe(heard.append)
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(2)])
    store.import_items("c", [make_item("k0", 0, "changed text", {}), make_item("k1", 1, "text 1", {})])
    item = store.claim_next("c")
    store.complete(item, _take())
    store.log("warning", "note", "a line", collection="c", key="k1")
    assert [e.kind for e in heard] == ["stale", "started", "completed", "note"]
    assert heard == store.events()  # the same rows: ids, timestamps, levels, keys and messages


def test_a_rolled_back_change_publishes_nothing(store_factory):
    store = _store(store_factory)
    heard: list[Event] = []
    store.subscribe(heard.append)
    claim = store.claim_next("c")
    store.request([claim.id], batch_id=None, priority=10)
    heard.clear()
    assert store.complete(claim, _take()) is None  # refused by the guard: nothing written
    assert heard == [] and "completed" not in [e.kind for e in store.events()]
    # a transaction that fails after writing an event is rolled back with its event, which is never published
    first = store.find_item("c", "k1")
    with pytest.raises(store_factory.bind_error):
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


def test_asr_checks_are_claimed_once_taken_over_when_cut_short_and_recorded(store_factory):
    store = _store(store_factory, n=3)
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


def test_processes_opening_a_new_state_file_together_all_succeed(tmp_path):
    """Two `--batch` runs started at once on a new project: WAL switch and schema race, nobody fails."""
    for round_ in range(15):
        path = str(tmp_path / f"{round_}" / "state.sqlite")
        assert open_together(path) == [0, 0, 0, 0], f"round {round_}"
        store = SqliteStore(path)
        assert store.schema_version() == SCHEMA_VERSION and store.journal_mode() == "wal"
        store.close()


# --------------------------------------------------------------------------- more of the contract


def _done(store, key: str, n: int = 1, **take) -> int:
    """Claim and complete item ``key`` of ``c`` (another take of it when it has one): the take id."""
    item = store.find_item("c", key)
    if item.status != "pending":
        store.request([item.id], batch_id=None, priority=5)
    claim = store.claim_next("c", min_priority=0)
    assert claim.key == key
    record = TakeRecord(
        path=f"out/{key}.take{n}.wav", sha256=f"{n:064d}", bytes=10 * n, provider="p", elapsed_s=0.1, number=n
    )
    return store.complete(claim, replace(record, **take))


def test_live_table_rows_filters_and_pages(store_factory):
    store = store_factory.open()
    texts = ["Alpha one", "beta two", "100% sure", "under_score", "plain"]
    store.import_items("c", [make_item(f"k{i}", i, t, {"n": i}) for i, t in enumerate(texts)])
    _done(store, "k0", qa_flags="asr_mismatch, too_quiet", qa={"wer": 0.5})
    _done(store, "k1")
    store.review(store.find_item("c", "k1").id, "accepted")
    everything = RowFilter()
    assert store.is_dense("c") and store.count_rows("c", everything) == 5
    assert [r.key for r in store.rows("c", everything, 1, 2, dense=True)] == ["k1", "k2"]
    assert [r.key for r in store.rows("c", everything, 3, 5)] == ["k3", "k4"]
    first = store.rows("c", everything, 0, 1)[0]
    assert (first.status, first.take_number, first.qa_flags, first.take_qa) == (
        "completed",
        1,
        "asr_mismatch, too_quiet",
        {"wer": 0.5},
    )
    assert first.params == {"n": 0} and first.review == "unreviewed" and not first.stale

    def keys(**where) -> list[str]:
        f = RowFilter(**where)
        found = [r.key for r in store.rows("c", f, 0, 10)]
        assert store.count_rows("c", f) == len(found)
        assert store.row_ids("c", f) == [store.find_item("c", k).id for k in found]
        return found

    assert keys(text="ALPHA") == ["k0"]  # case-insensitive
    assert keys(text="%") == ["k2"] and keys(text="_") == ["k3"]  # wildcards are literal
    assert keys(text="k4") == ["k4"]  # the key matches too
    assert keys(status="pending") == ["k2", "k3", "k4"]
    assert (
        keys(qa_only=True) == ["k0"] and keys(qa_code="too_quiet") == ["k0"] and keys(qa_code="quiet") == []
    )
    assert keys(review="accepted") == ["k1"]
    store.import_items("c", [make_item(f"k{i}", i, t, {"n": i}) for i, t in enumerate(texts[:4])])
    assert not store.is_dense("c") and store.count_rows("c", everything) == 4  # k4 retired


def test_reviews_reverts_requeues_and_forgotten_takes(store_factory):
    store = _store(store_factory, n=2)
    first = _done(store, "k0", 1, cache_key="req-a")
    second = _done(store, "k0", 2)
    item = store.find_item("c", "k0")
    assert item.current_take == second and store.next_take_number(item.id) == 3
    assert store.cache_keys() == {"req-a"} and store.cache_lookup("req-a").id == first
    # accepting an earlier take makes it current
    assert store.review(item.id, "accepted", "the better one", number=1) == 1
    assert store.get_item(item.id).current_take == first
    assert store.review_counts(["c"]) == {"c": {"unreviewed": 0, "accepted": 1, "rejected": 0}}
    assert store.get_take(first).review_note == "the better one"
    assert store.review(store.find_item("c", "k1").id, "rejected") is None  # no take yet
    with pytest.raises(ValueError, match="unknown review state"):
        store.review(item.id, "maybe")
    assert store.revert(item.id, 2) and store.get_item(item.id).current_take == second
    assert not store.revert(item.id, 9)
    assert [(k, t.number) for k, t in store.current_takes("c")] == [("k0", 2)]
    # the current take is never forgotten; another one is
    assert not store.forget_take(second, "superseded")
    assert store.forget_take(first, "superseded") and [t.number for t in store.takes(item.id)] == [2]
    assert [(f.key, f.current) for f in store.all_takes("c")] == [("k0", True)]
    # requeue is guarded by the current take
    assert not store.requeue(item.id, "file gone", take_id=first)
    assert store.requeue(item.id, "file gone", take_id=second)
    assert store.get_item(item.id).status == "pending" and store.get_item(item.id).current_take is None
    assert store.completed_without_take() == []


def test_a_sweep_queues_each_take_in_turn_with_its_overrides(store_factory):
    store = _store(store_factory, n=1)
    item = store.find_item("c", "k0")
    batch, queued = store.regenerate(
        [item.id], debounce_s=0.0, priority=10, overrides={"voice": "a"}, sweep=[{"speed": 1}, {"speed": 2}]
    )
    assert [i.overrides for i in queued] == [{"voice": "a", "speed": 1}]
    first = store.claim_next("c")
    store.complete(first, _take(first.next_take))
    again = store.get_item(item.id)
    assert (
        again.status == "pending" and again.overrides == {"voice": "a", "speed": 2} and again.priority == 10
    )
    assert store.events()[-1].message.endswith("; sweep: 1 more take queued")
    last = store.claim_next("c")
    store.complete(last, _take(last.next_take))
    done = store.get_item(item.id)
    assert done.status == "completed" and done.overrides is None and len(store.takes(item.id)) == 2
    assert store.get_batch(batch).kind == "regenerate"


def test_finals_are_recorded_replaced_forgotten_and_seen_by_sync(store_factory):
    store = store_factory.open()
    store.import_items("c", [make_item(f"a.s{i}", i, "a.png", {"photo": "a.png"}) for i in range(2)])
    take = _done(store, "a.s0")
    item = store.find_item("c", "a.s0")
    assert store.finals_to_build("c") == []
    store.choose(item.id)
    assert [(i.key, t.id) for i, t in store.finals_to_build("c")] == [("a.s0", take)]
    assert store.disk_state().finalizing == {("c", "a.s0"): 1}
    assert store.record_final(item.id, take, "finals/a.s0.take1.png", "f" * 64, 100, 64, 48) == (True, None)
    assert store.record_final(item.id, take, "finals/a.s0.v2.png", "e" * 64, 90, 64, 48) == (
        True,
        "finals/a.s0.take1.png",
    )
    assert store.record_final(item.id, take + 99, "finals/x.png", "e" * 64, 1, 1, 1) == (False, None)
    final = store.final(item.id)
    assert (final.take_number, final.path, final.width) == (1, "finals/a.s0.v2.png", 64)
    state = store.disk_state()
    assert [(f.key, f.current) for f in state.finals] == [("a.s0", True)] and state.finalizing == {}
    assert [t.key for t in state.takes] == ["a.s0"] and state.generating == set()
    claim = store.claim_next("c")
    assert store.disk_state().generating == {("c", claim.key)}
    # choosing the other variant sets this one aside and forgets its final
    assert store.choose(claim.id).dropped_finals == ["finals/a.s0.v2.png"]
    assert store.final(item.id) is None
    store.forget_final(claim.id, "missing")  # none: nothing happens


def test_shared_throttle_state_commands_workers_and_failures(store_factory):
    store = _store(store_factory, n=3)
    until = time.time() + 60
    store.cool_down("p", until)
    store.cool_down("p", until - 30)  # never shortens
    store.learn_pace("p", 2.5)
    cooldown, rps, learned_at = store.paces()["p"]
    assert cooldown == until and rps == 2.5 and learned_at <= time.time()
    assert 59 < store.reserve_start("p", 1.0) <= 60
    assert store.reserve_start("q", 30.0) == 0.0 and store.reserve_start("q", 30.0) > 29
    first = store.record_command("pause", {"names": ["c"]}, "h:1", "paused c")
    assert store.record_command("resume", {}, "h:1", "") > first
    store.register_worker("w1", "host", 42, ["c"])
    store.register_worker("w1", "host", 43, ["c", "d"])  # registering again replaces the row
    claim = store.claim_next("c", worker_id="w1")
    [worker] = store.workers()
    assert (worker.id, worker.pid, worker.collections, worker.in_flight) == ("w1", 43, ("c", "d"), 1)
    assert store.fail(claim, "HTTP 400 bad request")
    assert [i.key for i in store.failed_items(["c"])] == ["k0"] and store.waiting(["c", "d"]) == {"c"}
    batch = store.create_batch("retry", "again")
    assert store.reset_failed(["c"], batch) == 1 and store.get_item(claim.id).batch_id == batch
    assert store.next_wakeup(["c"]) is None
    store.log("info", "note", "api_key=sk-secret-123456789 leaked?")
    assert "sk-secret" not in store.recent_events(1)[0].message  # redacted before it is stored
    assert store.paused() == set()


def test_data_version_changes_when_another_connection_commits(store_factory):
    store = _store(store_factory)
    watcher = store.reader()
    before = watcher.data_version()
    store.claim_next("c")
    deadline = time.time() + 2
    while watcher.data_version() == before and time.time() < deadline:
        time.sleep(0.01)
    assert watcher.data_version() != before
    with pytest.raises(Exception):  # noqa: B017 - sqlite3 or psycopg: a reader refuses writes
        watcher.log("info", "note", "from a reader")
