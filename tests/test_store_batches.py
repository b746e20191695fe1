"""Batches: a debounce batch is open while it collects requests, then queued (typed rows)."""

from __future__ import annotations

from tui_app.sources import make_item
from tui_app.store import Batch, open_store


def test_debounce_batch_is_open_then_queued(tmp_path):
    store = open_store(tmp_path / "state.sqlite")
    store.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(3)])
    batch_id = store.create_batch("regenerate", open_=True)
    ids = [store.find_item("c", "k0").id, store.find_item("c", "k2").id]
    store.request(ids, batch_id=batch_id, priority=10)
    opened = store.get_batch(batch_id)
    assert isinstance(opened, Batch) and (opened.kind, opened.state) == ("regenerate", "open")
    assert store.claim_next("c", min_priority=1) is None  # an open batch is not claimable
    assert store.close_batch(batch_id) == (2, f"2 regenerations queued as batch {batch_id}")
    closed = store.get_batch(batch_id)
    assert closed.state == "queued" and closed.note == f"2 regenerations queued as batch {batch_id}"
    assert store.claim_next("c", min_priority=1).key == "k0"
    assert store.get_batch(batch_id + 1) is None
