"""TUI benchmark (not a test): first paint, key latency under load, peak memory.

Each scenario runs in its own process on a fresh temporary project of N
dataset entries (simulated provider, headless Textual via ``App.run_test``):

1. launch to first painted table: from building the app (opening the store,
   re-reading the source, checking it against the store) to the first row the
   table renders;
2. key-press-to-repaint latency while 500 item updates per second arrive
   (state writes plus engine events, as the engine makes them): the time from
   posting a ``down`` key to the table repainting the new cursor row;
3. peak RSS of the process (``ru_maxrss``).

Usage:
    python bench/tui.py                 # 13,100 and 100,000 items
    python bench/tui.py --n 13100 --keys 200

Targets on the 2-core reference machine: first paint <= 0.5 s at 13,100 and
<= 1.0 s at 100,000 items; p95 key latency <= 50 ms; peak RSS <= 300 MB at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


def make_project(root: Path, n: int) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "prompts.data").write_text(
        "".join(f'( LJ{i // 1000:03d}-{i % 1000:04d} "Sentence number {i} of a large dataset, read aloud." )\n'
                for i in range(n)))
    config = root / "config.toml"
    config.write_text(textwrap.dedent("""\
        [collections.dataset]
        source = "data/prompts.data"
        provider = "sim"

        [providers.sim]
        kind = "simulated"
        concurrency = 8
        """))
    return config


def scenario(n: int, keys: int, rate: float) -> dict:
    from tui_app.config import load_config
    from tui_app.engine import Engine
    from tui_app.store import Store
    from tui_app.tui import table as table_module
    from tui_app.tui.app import build_app

    root = Path(tempfile.mkdtemp(prefix="tui_app_tuibench_"))
    config = load_config(make_project(root, n))
    store = Store(config.state_path)  # the project exists already, as when a user reopens it
    engine = Engine(config, store)
    engine.import_sources()
    store.close()

    marks: dict[str, float] = {}
    painted: list[tuple[float, int]] = []
    original = table_module.ItemTable.render_line

    def render_line(self, y):
        now = time.perf_counter()
        marks.setdefault("first_paint", now)
        if self.scroll_offset.y + y == self.cursor:
            painted.append((now, self.cursor))
        return original(self, y)

    table_module.ItemTable.render_line = render_line
    started = time.perf_counter()
    app = build_app(config, clock_free=True)
    latencies: list[float] = []

    async def run() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            while "first_paint" not in marks:
                await asyncio.sleep(0.001)
            await pilot.pause(0.2)
            table = app.query_one("#table-dataset", table_module.ItemTable)
            ids = [r[0] for r in app.store.conn.execute("SELECT id FROM items")]
            rng = random.Random(1)
            stop = False

            async def updates() -> None:  # 500 item changes per second, like a busy engine
                from textual import events  # noqa: F401

                interval = 1.0 / rate
                next_at = time.perf_counter()
                while not stop:
                    item_id = rng.choice(ids)
                    with app.store.transaction() as c:
                        c.execute("UPDATE items SET status=?, attempts=attempts+1 WHERE id=?",
                                  (rng.choice(["generating", "completed", "failed"]), item_id))
                    app.engine.emit("completed", "dataset", "bench update")
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

            from textual import events

            task = asyncio.create_task(updates())
            await asyncio.sleep(0.5)
            for _ in range(keys):
                target = table.cursor + 1
                painted.clear()
                t0 = time.perf_counter()
                app.post_message(events.Key("down", None))
                while not any(c == target for _, c in painted):
                    await asyncio.sleep(0.0005)
                latencies.append(next(t for t, c in painted if c == target) - t0)
                await asyncio.sleep(0.02)
            stop = True
            await task
            app.engine.cancel()

    asyncio.run(run())
    latencies.sort()
    return {
        "n": n,
        "first_paint_s": marks["first_paint"] - started,
        "key_p50_ms": statistics.median(latencies) * 1000,
        "key_p95_ms": latencies[int(0.95 * (len(latencies) - 1))] * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="items (default: 13,100 and 100,000)")
    parser.add_argument("--keys", type=int, default=200, help="key presses to time")
    parser.add_argument("--rate", type=float, default=500.0, help="item updates per second during the key test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scenario(args.n, args.keys, args.rate)))
        return
    for n in ([args.n] if args.n else [13_100, 100_000]):
        out = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--keys", str(args.keys),
                              "--rate", str(args.rate)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"N={r['n']:>7}: first paint {r['first_paint_s']:.3f} s, key latency p50 {r['key_p50_ms']:.1f} ms "
              f"p95 {r['key_p95_ms']:.1f} ms at {args.rate:.0f} updates/s, peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)


if __name__ == "__main__":
    main()
