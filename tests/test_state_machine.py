"""A stateful property test (hypothesis ``RuleBasedStateMachine``) of the edges that must not lose work.

Rules drive regenerate, a failing regenerate, revert, choose, cancel, a text change, sync, cleanup,
export and kill-and-restart (a claim left ``generating`` with its take file written but never
recorded) on the simulated provider. After every step, against a small model:

* every item's current take has its file with its recorded sha256, and no item is left generating
  once a run or a restart is over;
* no take is ever gone unless cleanup deleted it (superseded, beyond the newest ``keep``);
* no file is lost: every take file the store ever recorded is still a take or was deleted by cleanup;
* an export holds exactly the current non-stale takes (byte for byte), the chosen variant's final
  only when it was made from the current take.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import anyio
import hypothesis.strategies as st
from conftest import write_project
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.files import IntegrityError, atomic_write, sha256_file, take_path
from tui_app.project import Project

ENTRIES = ("arctic_a0001", "arctic_a0002", "arctic_a0003")
SLOTS = ("astronaut.s0-forensic", "astronaut.s1-balanced", "astronaut.s2-creative")
NAMES = ["dataset", "variants"]


class EdgesMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="tui_app-sm-"))
        self.config_path = write_project(self.root, entries=len(ENTRIES), pages=1, photos=1, max_attempts=1)
        self.exports = itertools.count()
        self.texts = itertools.count()
        self._open()
        self.project.import_sources(names=NAMES)
        self._run()
        self.deleted: set[tuple[int, int]] = set()  # (item id, take number) deleted by cleanup
        self.seen: dict[tuple[int, int], str] = {}  # every take ever recorded -> its sha256
        self._observe()

    def _open(self) -> None:
        self.project = Project.open(load_config(self.config_path))
        self.project.recover()
        self.engine = Engine(self.project)

    def _run(self) -> None:
        anyio.run(lambda: self.engine.run(NAMES))

    def _item(self, key: str):
        coll = "dataset" if key in ENTRIES else "variants"
        item = self.project.store.find_item(coll, key)
        assert item is not None
        return item

    def _observe(self) -> None:
        for coll in NAMES:
            for item in self.project.store.items(coll):
                for take in self.project.store.takes(item.id):
                    self.seen.setdefault((item.id, take.number), take.sha256)

    def teardown(self) -> None:
        self.project.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ rules

    @rule(keys=st.sets(st.sampled_from(ENTRIES + SLOTS), min_size=1, max_size=3))
    def regenerate(self, keys: set[str]) -> None:
        for key in keys:
            item = self._item(key)
            self.engine.regenerate(item.collection, [item.id])
        self._run()

    @rule(key=st.sampled_from(ENTRIES + SLOTS))
    def regenerate_that_fails(self, key: str) -> None:
        provider = self.engine.provider("simulated")
        provider.failure_rate = 1.0  # type: ignore[attr-defined]
        item = self._item(key)
        self.engine.regenerate(item.collection, [item.id])
        self._run()
        provider.failure_rate = 0.0  # type: ignore[attr-defined]
        assert self._item(key).status == "failed"

    @rule(key=st.sampled_from(ENTRIES + SLOTS), number=st.integers(1, 4))
    def revert(self, key: str, number: int) -> None:
        item = self._item(key)
        takes = {t.number: t for t in self.project.store.takes(item.id)}
        if number not in takes:
            assert not self.project.revert(item.id, number)
            return
        assert self.project.revert(item.id, number)
        now = self._item(key)
        assert now.current_take == takes[number].id and now.status == "completed"

    @rule(key=st.sampled_from(SLOTS))
    def choose(self, key: str) -> None:
        item = self._item(key)
        if item.current_take is None:
            try:
                self.project.choose(item.id)
            except IntegrityError:
                return
            raise AssertionError("choosing a variant without a take must be refused")
        self.project.choose(item.id)
        anyio.run(self.engine.build_finals)

    @rule(key=st.sampled_from(ENTRIES + SLOTS))
    def cancel(self, key: str) -> None:
        item = self._item(key)
        self.engine.regenerate(item.collection, [item.id])
        self.project.cancel([item.id])
        assert self._item(key).status == "cancelled"

    @rule(key=st.sampled_from(ENTRIES))
    def change_text(self, key: str) -> None:
        source = self.root / "data" / "prompts.data"
        text = f"A new text, version {next(self.texts)}."
        source.write_text(
            "\n".join(
                f'( {key} "{text}" )' if line.startswith(f"( {key} ") else line
                for line in source.read_text().splitlines()
            )
            + "\n"
        )
        self.project.import_sources(names=NAMES)
        assert self._item(key).stale or self._item(key).current_take is None

    @rule()
    def sync(self) -> None:
        findings = self.project.sync(fix=True)
        assert findings == [], [f.line(fixed=True) for f in findings]

    @rule(keep=st.integers(0, 2))
    def cleanup(self, keep: int) -> None:
        for coll in NAMES:
            for item in self.project.store.items(coll):
                superseded = sorted(
                    (t.number for t in self.project.store.takes(item.id) if t.id != item.current_take),
                    reverse=True,
                )
                self.deleted |= {(item.id, n) for n in superseded[keep:]}
        self.project.cleanup(keep=keep)

    @rule(key=st.sampled_from(ENTRIES + SLOTS))
    def kill_and_restart(self, key: str) -> None:
        """A crash mid-generation: the item was claimed and its take file renamed into place, but
        the record never committed (and a temp file is left behind)."""
        item = self._item(key)
        self.engine.regenerate(item.collection, [item.id])
        while True:  # items queued before it are claimed (and crash) too
            claimed = self.project.store.claim_next(item.collection, min_priority=1)
            assert claimed is not None
            if claimed.id == item.id:
                break
        folder = self.project.config.collections[item.collection].output
        suffix = ".wav" if item.collection == "dataset" else ".png"
        atomic_write(take_path(folder, item.key, claimed.next_take, suffix), b"written, never recorded")
        (folder / f".{item.key}.take{claimed.next_take}{suffix}.tmp-dead").write_bytes(b"partial")
        self.project.close()
        self._open()
        assert self._item(key).status == "pending" and self._item(key).attempts == 0
        self._run()

    @rule()
    def export(self) -> None:
        out = self.root / f"export{next(self.exports)}"
        store = self.project.store
        expected = {
            key: take
            for key, take in store.current_takes("dataset")
            if not store.find_item("dataset", key).stale
        }
        if not expected:
            return
        self.project.export("dataset", out / "lj")
        exported = {p.stem: sha256_file(p) for p in (out / "lj" / "wavs").iterdir()}
        assert exported == {k: t.sha256 for k, t in expected.items()}
        lines = (out / "lj" / "metadata.csv").read_text().splitlines()
        texts = {line.split("|")[0]: line.split("|")[1] for line in lines}
        assert texts == {k: store.find_item("dataset", k).text for k in expected}
        chosen = [i for i in store.items("variants") if i.chosen == 1 and i.current_take is not None]
        if chosen and not chosen[0].stale:
            self.project.export("variants", out / "variants")
            final = store.final(chosen[0].id)
            take = self.project.current_take(chosen[0].id)
            assert take is not None
            want = final.sha256 if final is not None and final.take_id == take.id else take.sha256
            assert sha256_file(out / "variants" / "astronaut.png") == want

    # ------------------------------------------------------------------ invariants

    @invariant()
    def current_takes_are_on_disk(self) -> None:
        store = self.project.store
        for coll in NAMES:
            for key, take in store.current_takes(coll):
                assert sha256_file(self.root / take.path) == take.sha256, f"{coll}/{key}"
            assert store.counts([coll])[coll]["generating"] == 0

    @invariant()
    def no_take_is_lost(self) -> None:
        self._observe()
        store = self.project.store
        present = {
            (item.id, take.number): take
            for coll in NAMES
            for item in store.items(coll)
            for take in store.takes(item.id)
        }
        for (item_id, number), sha in self.seen.items():
            if (item_id, number) in self.deleted:
                continue
            take = present.get((item_id, number))
            assert take is not None, f"take {number} of item {item_id} is gone"
            assert take.sha256 == sha and sha256_file(self.root / take.path) == sha


EdgesMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEdges = EdgesMachine.TestCase
