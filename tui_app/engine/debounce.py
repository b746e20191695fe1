"""Debounced regeneration: quick successive regenerate requests become one batch.

Each request is written to the store the moment it is accepted (the items are
``pending`` with priority, in a batch whose state is ``open``), so nothing is
lost if the process dies inside the window: crash recovery queues open
batches. While the batch is open the dispatchers do not claim its items; when
no request has arrived for ``window_s`` seconds the batch is closed, logged as
"3 regenerations queued as batch 12", and the dispatchers are woken. The old
system's failure, where requests were only recorded while an ``is_running``
flag was set, cannot happen: recording does not depend on any run state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from .core import Engine


class RegenerateDebouncer:
    """Merge regenerate requests within a quiet window into one batch.

    Args:
        engine: the engine whose store and dispatchers serve the batch.
        window_s: the quiet window, seconds (``[project] debounce_ms`` / 1000).
        on_batch: called with ``(batch_id, count, message)`` when a batch closes.

    Run :meth:`run` in a task group for as long as requests may arrive.
    """

    def __init__(
        self, engine: Engine, window_s: float, on_batch: Callable[[int, int, str], None] | None = None
    ):
        self.engine = engine
        self.window_s = window_s
        self.on_batch = on_batch
        self.batch_id: int | None = None
        self._deadline = 0.0
        self._collections: set[str] = set()
        self._kick = anyio.Event()

    def request(
        self, collection: str, item_ids: Iterable[int], overrides: Mapping[str, Any] | None = None
    ) -> int:
        """Accept a regenerate request now (durably) and return its batch id."""
        if self.batch_id is None:
            self.batch_id = self.engine.store.create_batch("regenerate", open_=True)
        self.engine.regenerate(collection, item_ids, batch_id=self.batch_id, overrides=overrides)
        self._collections.add(collection)
        self._deadline = time.monotonic() + self.window_s
        self._kick.set()
        return self.batch_id

    def flush(self) -> tuple[int, int] | None:
        """Close the open batch now; returns ``(batch_id, item count)`` or None."""
        if self.batch_id is None:
            return None
        batch_id, self.batch_id = self.batch_id, None
        count, message = self.engine.store.close_batch(batch_id)
        for collection in self._collections:
            self.engine.notify(collection)
        self._collections.clear()
        if self.on_batch is not None:
            self.on_batch(batch_id, count, message)
        return batch_id, count

    async def run(self) -> None:
        """Close each batch once its window has been quiet; runs until cancelled."""
        try:
            while True:
                await self._kick.wait()
                self._kick = anyio.Event()
                while self.batch_id is not None:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        self.flush()
                        break
                    await anyio.sleep(remaining)
        finally:
            self.flush()  # synchronous: a cancellation cannot cut it short
