"""Batches: regenerate requests within the debounce window share one batch, whatever process sends them."""

from __future__ import annotations

import time

from tui_app.sources import make_item
from tui_app.store import Batch


def test_requests_within_the_window_form_one_batch_across_connections(store_factory):
    first = store_factory.open()
    first.import_items("c", [make_item(f"k{i}", i, f"text {i}", {}) for i in range(3)])
    second = store_factory.open()  # another process's connection
    k0, k2 = first.find_item("c", "k0").id, first.find_item("c", "k2").id
    batch_id, _ = first.regenerate([k0], debounce_s=0.4, priority=10)
    again, _ = second.regenerate([k2], debounce_s=0.4, priority=10)
    assert again == batch_id
    opened = first.get_batch(batch_id)
    assert isinstance(opened, Batch) and (opened.kind, opened.state) == ("regenerate", "open")
    assert opened.note == f"2 regenerations queued as batch {batch_id}"
    assert first.claim_next("c", min_priority=1) is None  # an open window is not claimable
    wake = first.next_wakeup(["c"])
    assert wake is not None and 0 < wake - time.time() <= 0.4
    time.sleep(wake - time.time() + 0.01)
    assert first.get_batch(batch_id).state == "queued"  # the window closed
    assert first.claim_next("c", min_priority=1).key == "k0"
    assert second.claim_next("c", min_priority=1).key == "k2"
    assert first.get_batch(batch_id + 1) is None
    later, _ = second.regenerate([k0], debounce_s=0.0, priority=10)
    assert later != batch_id  # the window closed: a new batch
