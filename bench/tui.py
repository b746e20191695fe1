"""TUI benchmark (not a test): first paint, key latency under load, peak memory.

Each size runs on a fresh temporary project of N dataset entries (simulated
provider, headless Textual via ``App.run_test``). The project is created and
imported by one process (as when a user reopens an existing project), and the
app runs in another, so the app's peak RSS is not inflated by the set-up:

1. launch to first painted row: from ``build_app`` (opening the store,
   recovery; the source is then re-checked against the store in a background
   thread) to the end of the first frame in which ``ItemTable.render_line``
   rendered a real row. A frame ends when the screen hands its update to
   ``App._display``; headless Textual writes nothing there, so the bench then
   encodes the update into the escape sequences a terminal would be sent;
2. key-press-to-repaint latency while ``--rate`` item updates per second arrive
   (each a state write and an ``events`` row in one transaction, then the event
   handed to the app's listener, as the store does after a commit, as the engine's
   events reach them): the time from
   posting a ``down`` key to the end of the first frame that rendered the new
   cursor row. The key test starts once the background source check has
   finished (its time is reported). A key whose repaint does not come within
   ``--key-timeout`` is a miss: it is reported, and counted as infinitely slow
   in the percentiles (so p95 is "timeout" when more than 5 % of keys miss);
3. peak RSS of the app process (``ru_maxrss``).

Nothing waits forever: the first paint, the background check and every key have
a time limit, a crashed app stops the run with its traceback, and the parent
kills a child that overruns ``--child-timeout``.

Usage:
    python bench/tui.py                 # 13,100 and 100,000 items
    python bench/tui.py --n 13100 --keys 50

Targets on the 2-core reference machine: first paint <= 0.5 s at 13,100 and
<= 1.0 s at 100,000 items; p95 key latency <= 50 ms; peak RSS <= 300 MB at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import math
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

FIRST_PAINT_LIMIT_S = 30.0
IMPORT_LIMIT_S = 120.0


def make_project(root: Path, n: int) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "prompts.data").write_text(
        "".join(
            f'( LJ{i // 1000:03d}-{i % 1000:04d} "Sentence number {i} of a large dataset, read aloud." )\n'
            for i in range(n)
        )
    )
    config = root / "config.toml"
    config.write_text(
        textwrap.dedent("""\
        [collections.dataset]
        source = "data/prompts.data"
        provider = "sim"

        [providers.sim]
        kind = "simulated"
        concurrency = 8
        """)
    )
    return config


def setup(root: Path, n: int) -> None:
    """Create the project and its state file (run in its own process)."""
    from tui_app.config import load_config
    from tui_app.project import Project

    with Project.open(load_config(make_project(root, n))) as project:
        project.import_sources()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class AppDied(RuntimeError):
    pass


def scenario(root: Path, n: int, keys: int, rate: float, key_timeout: float) -> dict:
    from textual import events

    from tui_app.config import load_config
    from tui_app.store import Event
    from tui_app.tui import table as table_module
    from tui_app.tui.app import build_app

    config = load_config(root / "config.toml")
    marks: dict[str, float] = {}
    rendered: list[int] = []  # cursor rows rendered for the frame being built
    painted: list[tuple[float, int]] = []  # (time the frame was handed to the display, cursor row)
    original_render_line = table_module.ItemTable.render_line

    def render_line(self, y):
        strip = original_render_line(self, y)
        index = self.scroll_offset.y + y
        if "first_row" not in marks and self.row_at(index) is not None:  # row_at: from the page cache
            marks["first_row"] = time.perf_counter()
        if index == self.cursor:
            rendered.append(self.cursor)
        return strip

    table_module.ItemTable.render_line = render_line
    started = time.perf_counter()
    app = build_app(config, clock_free=True)
    original_display = app._display

    def display(screen, renderable) -> None:
        """A frame is ready: what a terminal app then does (headless Textual skips it), then time it."""
        original_display(screen, renderable)
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)  # the escape sequences a terminal would be sent
        now = time.perf_counter()
        if "first_row" in marks and "first_paint" not in marks:
            marks["first_paint"] = now
        painted.extend((now, c) for c in rendered)
        rendered.clear()

    app._display = display
    latencies: list[float] = []
    result: dict = {"n": n}

    def check_alive() -> None:
        if app._exception is not None or (app.return_code is not None and not app.is_running):
            raise AppDied(f"the app stopped (return code {app.return_code}): {app._exception!r}")

    async def wait_for(condition, limit: float, what: str) -> None:
        deadline = time.perf_counter() + limit
        while not condition():
            check_alive()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{what}: nothing after {limit:.0f} s")
            await asyncio.sleep(0.001)

    async def run() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(lambda: "first_paint" in marks, FIRST_PAINT_LIMIT_S, "first painted row")
            await wait_for(
                lambda: not any(w.group == "import" and not w.is_finished for w in app.workers),
                IMPORT_LIMIT_S,
                "background source check",
            )
            result["import_done_s"] = time.perf_counter() - started
            await pilot.pause(0.2)
            table = app.query_one("#table-dataset", table_module.ItemTable)
            keys_of = {item.id: item.key for item in app.store.items("dataset")}
            ids = list(keys_of)
            rng = random.Random(1)
            stop = asyncio.Event()
            written = 0
            # the bench's own connection for the item writes (the store's connection is its own business)
            writer = sqlite3.connect(config.state_path, isolation_level=None, timeout=10)

            async def updates() -> None:  # `rate` item changes per second, on the event loop as the engine's
                nonlocal written
                interval = 1.0 / rate
                next_at = time.perf_counter()
                while not stop.is_set():
                    item_id = rng.choice(ids)
                    status = rng.choice(["generating", "completed", "failed"])
                    kind = {"generating": "started", "completed": "completed", "failed": "failed"}[status]
                    message = f"{keys_of[item_id]} {status} (bench update)"
                    # as the store does it: the item and its event row in one transaction, then the
                    # event to the app's listener
                    now = time.time()
                    level = "error" if status == "failed" else "info"
                    writer.execute("BEGIN IMMEDIATE")
                    writer.execute(
                        "UPDATE items SET status=?, attempts=attempts+1, updated_at=? WHERE id=?",
                        (status, now, item_id),
                    )
                    event_id = writer.execute(
                        "INSERT INTO events (ts, level, kind, collection, item_key, message)"
                        " VALUES (?,?,?,?,?,?)",
                        (now, level, kind, "dataset", keys_of[item_id], message),
                    ).lastrowid
                    writer.execute("COMMIT")
                    app.note_event(
                        Event(event_id or 0, now, level, kind, "dataset", keys_of[item_id], message)
                    )
                    written += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

            task = asyncio.create_task(updates())
            misses = 0
            try:
                await asyncio.sleep(0.5)
                load_started, written_before = time.perf_counter(), written
                for _ in range(keys):
                    check_alive()
                    target = table.cursor + 1
                    painted.clear()
                    rendered.clear()
                    t0 = time.perf_counter()
                    app.post_message(events.Key("down", None))
                    deadline = t0 + key_timeout
                    hit = None
                    while hit is None and time.perf_counter() < deadline:
                        await asyncio.sleep(0.0005)
                        hit = next((t for t, c in painted if c == target), None)
                    if hit is None:
                        misses += 1
                        latencies.append(math.inf)
                    else:
                        latencies.append(hit - t0)
                    await asyncio.sleep(0.02)
                result["update_rate"] = (written - written_before) / (time.perf_counter() - load_started)
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)
                writer.close()
                app.engine.cancel()
            check_alive()
            result["key_misses"] = misses
            result["final_cursor"] = table.cursor

    asyncio.run(run())
    latencies.sort()
    result.update(
        {
            "first_paint_s": marks["first_paint"] - started,
            "keys": len(latencies),
            "key_p50_ms": percentile(latencies, 0.50) * 1000,
            "key_p95_ms": percentile(latencies, 0.95) * 1000,
            "key_max_ms": latencies[-1] * 1000,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    return result


def _ms(v: float) -> str:
    return "timeout" if math.isinf(v) else f"{v:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, help="items (default: 13,100 and 100,000)")
    parser.add_argument("--keys", type=int, default=200, help="key presses to time")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="item updates per second during the key test"
    )
    parser.add_argument(
        "--key-timeout",
        type=float,
        default=1.0,
        help="seconds to wait for one key's repaint before counting a miss",
    )
    parser.add_argument("--child-timeout", type=float, default=300.0, help="seconds allowed per size")
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup(args.setup, args.n)
        return
    if args.child:
        faulthandler.dump_traceback_later(
            max(1.0, args.child_timeout - 5), exit=True
        )  # stacks on stderr, not a hang
        print(json.dumps(scenario(args.child, args.n, args.keys, args.rate, args.key_timeout)))
        return
    failed = False
    for n in [args.n] if args.n else [13_100, 100_000]:
        root = Path(tempfile.mkdtemp(prefix="tui_app_tuibench_"))
        try:
            subprocess.run(
                [sys.executable, __file__, "--setup", str(root), "--n", str(n)],
                check=True,
                timeout=args.child_timeout,
            )
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(root),
                    "--n",
                    str(n),
                    "--keys",
                    str(args.keys),
                    "--rate",
                    str(args.rate),
                    "--key-timeout",
                    str(args.key_timeout),
                    "--child-timeout",
                    str(args.child_timeout),
                ],
                capture_output=True,
                text=True,
                timeout=args.child_timeout,
            )
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr or b""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            print(f"N={n:>7}: FAILED, over {exc.timeout:.0f} s\n{err[-4000:]}", flush=True)
            failed = True
            continue
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if out.returncode != 0:
            print(f"N={n:>7}: FAILED (exit {out.returncode})\n{out.stderr[-4000:]}", flush=True)
            failed = True
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"N={r['n']:>7}: first paint {r['first_paint_s']:.3f} s, key latency p50 {_ms(r['key_p50_ms'])} "
            f"p95 {_ms(r['key_p95_ms'])} max {_ms(r['key_max_ms'])} ({r['key_misses']}/{r['keys']} keys "
            f"timed out) at {r['update_rate']:.0f} updates/s, peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(background source check done at {r['import_done_s']:.2f} s)",
            flush=True,
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
