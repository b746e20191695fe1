"""The engine end to end on the simulated provider and on scripted providers."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import anyio
from conftest import write_project

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.media import wav_bytes
from tui_app.project import Project
from tui_app.providers import Output, ProviderError


def _engine(config_path: Path, providers=None) -> Engine:
    project = Project.open(load_config(config_path))
    project.import_sources()
    return Engine(project, providers)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_lost_update_case_64_concurrent_completions(tmp_path):
    """The old system lost updates when parallel workers rewrote a JSON file. Here 64
    completions run at once; afterwards the DB's completed count equals the files on
    disk and every recorded sha256 matches its file."""
    config_path = write_project(
        tmp_path, entries=64, pages=1, photos=1, concurrency=64, latency_ms=20, jitter_ms=20
    )
    engine = _engine(config_path)
    anyio.run(lambda: engine.run(["dataset"]))
    store = engine.store
    assert store.counts(["dataset"])["dataset"]["completed"] == 64
    on_disk = _files(engine.config.collections["dataset"].output)
    takes = store.current_takes("dataset")
    assert len(on_disk) == len(takes) == 64
    for key, take in takes:
        assert on_disk[Path(take.path).name] == take.sha256, key


def test_run_is_a_noop_the_second_time(project):
    engine = _engine(project)
    anyio.run(engine.run)
    counts = engine.store.counts()
    assert all(c["completed"] == sum(c.values()) for c in counts.values())
    events = len(engine.store.events(limit=100_000))
    anyio.run(engine.run)
    assert len(engine.store.events(limit=100_000)) == events


class Scripted:
    """A provider whose answers per key are scripted: a list of 'ok' / exceptions."""

    name = "simulated"

    def __init__(self, script: dict[str, list], latency_s: float = 0.0):
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[tuple[str, float]] = []
        self.latency_s = latency_s

    async def generate(self, request):
        self.calls.append((request.key, time.monotonic()))
        if self.latency_s:
            await anyio.sleep(self.latency_s)
        step = self.script.get(request.key, ["ok"]).pop(0) if self.script.get(request.key) else "ok"
        if isinstance(step, Exception):
            raise step
        return Output(wav_bytes(request.key.encode() * 10, 22050), ".wav", duration_s=0.01, sample_rate=22050)

    async def aclose(self):
        pass


def test_one_failure_never_stops_the_others_and_retries_only_retryable(tmp_path):
    config_path = write_project(tmp_path, entries=6, max_attempts=3)
    provider = Scripted(
        {
            "arctic_a0002": [ProviderError("HTTP 503", retryable=True, status=503), "ok"],
            "arctic_a0003": [ProviderError("HTTP 401: invalid key", status=401)],
            "arctic_a0004": [ProviderError("HTTP 500", retryable=True)] * 3,
        }
    )
    engine = _engine(config_path, {"simulated": provider})
    anyio.run(lambda: engine.run(["dataset"]))
    store = engine.store
    status = {i.key: (i.status, i.attempts, i.last_error) for i in store.items("dataset")}
    assert status["arctic_a0002"][:2] == ("completed", 1)  # one failed try, then the take
    assert status["arctic_a0003"] == ("failed", 1, "HTTP 401: invalid key")
    assert status["arctic_a0004"] == ("failed", 3, "HTTP 500")
    assert [s for s, *_ in status.values()].count("completed") == 4
    calls = [k for k, _ in provider.calls]
    assert calls.count("arctic_a0003") == 1 and calls.count("arctic_a0004") == 3
    messages = [e.message for e in store.events(limit=1000)]
    assert any("arctic_a0002 failed: HTTP 503, retry 2/3 in" in m for m in messages)


def test_retry_after_cools_down_the_whole_provider(tmp_path):
    config_path = write_project(tmp_path, entries=4, concurrency=4)
    provider = Scripted(
        {"arctic_a0001": [ProviderError("HTTP 429", retryable=True, retry_after_s=0.3), "ok"]}, latency_s=0.05
    )
    engine = _engine(config_path, {"simulated": provider})
    anyio.run(lambda: engine.run(["dataset"]))
    first = min(t for _, t in provider.calls)
    retry = [t for k, t in provider.calls if k == "arctic_a0001"][1]
    assert retry - first >= 0.3
    assert engine.store.counts(["dataset"])["dataset"]["completed"] == 4


def test_timeout_is_retryable(tmp_path):
    config_path = write_project(tmp_path, entries=1, max_attempts=2, extra="")
    text = config_path.read_text().replace("max_attempts = 2", "max_attempts = 2\ntimeout_s = 0.05")
    config_path.write_text(text)
    provider = Scripted({}, latency_s=0.2)
    engine = _engine(config_path, {"simulated": provider})
    anyio.run(lambda: engine.run(["dataset"]))
    item = engine.store.items("dataset")[0]
    assert item.status == "failed" and item.attempts == 2 and "timed out after 0.05 s" in item.last_error


def test_cover_page_completes_before_other_pages_start(tmp_path):
    config_path = write_project(tmp_path, pages=4, concurrency=4)
    provider = Scripted({}, latency_s=0.05)
    engine = _engine(config_path, {"simulated": provider})
    anyio.run(lambda: engine.run(["pages"]))
    assert provider.calls[0][0] == "page_000"
    assert provider.calls[1][1] - provider.calls[0][1] >= 0.05


def test_regeneration_during_a_run_is_served_first(tmp_path):
    config_path = write_project(tmp_path, entries=40, concurrency=2, latency_ms=20)
    engine = _engine(config_path)
    store = engine.store
    last = store.find_item("dataset", "arctic_a0040")
    order: list[str] = []
    engine.subscribe(lambda e: order.append(e.key) if e.kind == "started" else None)

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.run(["dataset"]))
            await anyio.sleep(0.1)
            engine.regenerate("dataset", [last.id])

    anyio.run(main)
    assert order.index("arctic_a0040") < 15
    assert store.get_item(last.id).status == "completed"


def test_debounced_requests_50ms_apart_form_one_batch_and_all_are_generated(tmp_path):
    config_path = write_project(tmp_path, entries=30, concurrency=2, latency_ms=30)
    engine = _engine(config_path)
    store = engine.store
    targets = [store.find_item("dataset", k) for k in ("arctic_a0020", "arctic_a0025", "arctic_a0030")]
    batches: set[int | None] = set()

    async def main():
        with anyio.fail_after(30):
            await scenario()

    async def scenario():
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.run(["dataset"], until_idle=False))
            await anyio.sleep(0.1)
            for item in targets:
                batches.update(i.batch_id for i in engine.regenerate("dataset", [item.id], debounce=True))
                await anyio.sleep(0.05)
            while (  # noqa: ASYNC110 - polls the store, which another connection's commits change
                any(
                    store.get_item(i.id).status != "completed" or store.get_item(i.id).current_take is None
                    for i in targets
                )
                or store.counts(["dataset"])["dataset"]["pending"]
            ):
                await anyio.sleep(0.05)
            engine.stop()
            tg.cancel_scope.cancel()

    anyio.run(main)
    (batch,) = batches
    assert batch is not None and store.get_batch(batch).note == f"3 regenerations queued as batch {batch}"
    assert {store.get_item(i.id).batch_id for i in targets} == {batch}
    assert all(store.get_item(i.id).status == "completed" for i in targets)


def test_cancel_puts_in_flight_items_back_to_pending(tmp_path):
    config_path = write_project(tmp_path, entries=8, concurrency=4, latency_ms=5000)
    engine = _engine(config_path)

    async def main():
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: engine.run(["dataset"]))
            await anyio.sleep(0.2)
            engine.cancel()

    anyio.run(main)
    counts = engine.store.counts(["dataset"])["dataset"]
    assert counts["generating"] == 0 and counts["pending"] == 8
    assert not list(engine.config.collections["dataset"].output.glob("*"))


def test_limit_per_collection(project):
    engine = _engine(project)
    anyio.run(lambda: engine.run(["dataset"], limit=5))
    assert engine.store.counts(["dataset"])["dataset"]["completed"] == 5


def test_explicit_regenerate_gets_a_new_seed_and_a_new_take(project):
    engine = _engine(project)
    anyio.run(lambda: engine.run(["pages"]))
    page = engine.store.find_item("pages", "page_002")
    engine.regenerate("pages", [page.id])
    anyio.run(lambda: engine.run(["pages"]))
    takes = engine.store.takes(page.id)
    assert [t.number for t in takes] == [1, 2]
    assert takes[0].seed == page.params["seed"] and takes[1].seed != takes[0].seed
    assert Path(engine.config.root / takes[0].path).exists()  # old take kept


def test_collections_sharing_a_provider_take_turns(tmp_path):
    config_path = write_project(tmp_path, entries=40, pages=2, photos=1, concurrency=2)
    provider = Scripted({}, latency_s=0.02)
    engine = _engine(config_path, {"simulated": provider})
    anyio.run(lambda: engine.run(["dataset", "pages"]))
    order = [k for k, _ in provider.calls]
    assert order.index("page_000") < 5  # not starved until the 40 entries are done
    assert engine.store.counts(["pages"])["pages"]["completed"] == 3


def test_outputs_waiting_for_the_disk_are_bounded(tmp_path, monkeypatch):
    """A provider faster than the disk cannot pile up claimed items and their outputs in memory."""
    import time as _time

    from tui_app.engine import takes

    real_write = takes._write_file

    def slow_write(*args, **kwargs):
        _time.sleep(0.02)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(takes, "_write_file", slow_write)
    engine = _engine(write_project(tmp_path, entries=80, concurrency=2))
    peak = 0

    def watch(event):
        nonlocal peak
        peak = max(peak, engine.stats["dataset"].in_flight)

    engine.subscribe(watch)
    anyio.run(lambda: engine.run(["dataset"]))
    assert engine.store.counts(["dataset"])["dataset"]["completed"] == 80
    assert 2 < peak <= 2 + takes.WRITER_THREADS


def test_a_group_whose_serving_fails_hands_the_error_to_every_call():
    """When the group's thread call or transaction itself fails, every call of the group raises its
    error (none gets a result of None)."""
    from tui_app.engine.takes import _Grouped

    served: list[list[int]] = []

    async def serve(calls) -> None:
        served.append([c.arg for c in calls])
        raise OSError(5, "Input/output error")

    grouped = _Grouped(serve)
    outcomes: dict[int, object] = {}

    async def one(n: int) -> None:
        try:
            outcomes[n] = await grouped(n)
        except OSError as exc:
            outcomes[n] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(one, n)

    anyio.run(main)
    assert served == [[0, 1, 2, 3]]  # one group
    assert all(isinstance(outcomes[n], OSError) and outcomes[n].errno == 5 for n in range(4))


def test_tolerate_outage_catches_a_lost_connection_only():
    from tui_app.store import tolerate_outage

    class Lost(Exception):
        pass

    class Store:
        def lost_connection(self, exc: BaseException) -> bool:
            return isinstance(exc, Lost)

    with tolerate_outage(Store()) as outage:
        raise Lost("server closed the connection unexpectedly")
    assert isinstance(outage.error, Lost)
    with tolerate_outage(Store()) as outage:
        pass
    assert outage.error is None
    try:
        with tolerate_outage(Store()):
            raise ValueError("a bug, not an outage")
    except ValueError:
        pass
    else:
        raise AssertionError("an error other than a lost connection was swallowed")


def test_grouped_file_writes_keep_each_takes_result_error_and_cancellation(tmp_path):
    """Take files finished in one turn of the event loop are written by one thread call; each task
    still gets its own result or error, and a task cancelled before its group runs is not written."""
    engine = _engine(write_project(tmp_path, entries=1, pages=1, photos=1))
    writer = engine.takes
    written: list[int] = []
    threads: set[int] = set()

    def job(n: int):
        def write() -> int:
            import threading

            threads.add(threading.get_ident())
            if n == 3:
                raise OSError(28, "No space left on device")
            written.append(n)
            return n * 10

        return write

    results: dict[int, object] = {}

    async def one(n: int) -> None:
        try:
            results[n] = await writer._write(job(n))
        except OSError as exc:
            results[n] = exc

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(one, n)
        # a follower cancelled while its group waits for its leader's checkpoint is not written;
        # the cancelled leader still writes its group's other files, and later writes go on
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, 10)
                tg.start_soon(one, 11)
                await anyio.lowlevel.cancel_shielded_checkpoint()
                scope.cancel()
        with anyio.fail_after(5):
            await one(12)

    anyio.run(main)
    assert {n: results[n] for n in (0, 1, 2, 4, 5)} == {0: 0, 1: 10, 2: 20, 4: 40, 5: 50}
    assert isinstance(results[3], OSError) and results[3].errno == 28
    assert sorted(written[:5]) == [0, 1, 2, 4, 5] and len(threads) == 1  # one group, one thread call
    assert 11 not in written and 10 in written and results[12] == 120
