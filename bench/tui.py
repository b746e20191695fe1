"""TUI benchmark (not a test): first paint, key latency under load, store change to repaint, peak memory.

Each size runs on a fresh temporary project of N dataset entries (simulated
provider, headless Textual via ``App.run_test``). The project is created and
imported by one process (as when a user reopens an existing project), and the
app runs in another, so the app's peak RSS is not inflated by the set-up. The
item updates come from a third process, an external writer (as a ``tui-app
--batch`` or ``worker`` process beside the TUI): the app sees them only through
the store (``PRAGMA data_version``, polled every 100 ms), never through its
in-process listener:

1. launch to first painted row: from ``build_app`` (opening the store,
   recovery; the source is then re-checked against the store in a background
   thread) to the end of the first frame in which ``ItemTable.render_line``
   rendered a real row. A frame ends when the screen hands its update to
   ``App._display``; headless Textual writes nothing there, so the bench then
   encodes the update into the escape sequences a terminal would be sent;
2. key-press-to-repaint latency while the external writer makes ``--rate`` item
   updates per second on random items (each a state write and an ``events`` row
   in one transaction, as a worker's completion): the time from posting a ``down``
   key to the end of the first frame that rendered the new cursor row. The key
   test starts once the background source check has finished (its time is
   reported). A key whose repaint does not come within ``--key-timeout`` is a
   miss: it is reported, and counted as infinitely slow in the percentiles (so
   p95 is "timeout" when more than 5 % of keys miss);
3. store change to repaint: the external writer makes ``--repaint-rate`` updates
   per second (200) on the rows on screen, each raising the row's attempts (the
   ``att`` column); the latency of an update is from its COMMIT in the writer to
   the end of the first frame that rendered its row with those attempts or more
   (``time.monotonic``, one clock for every process on Linux). An update not
   painted within ``--key-timeout`` after the writer stops is a miss;
4. peak RSS of the app process (``ru_maxrss``).

Nothing waits forever: the first paint, the background check and every key have
a time limit, a crashed app stops the run with its traceback, and the parent
kills a child that overruns ``--child-timeout``.

Usage:
    python bench/tui.py                 # 13,100 and 100,000 items
    python bench/tui.py --n 13100 --keys 50
    python bench/tui.py --no-worker     # the app as a pure viewer (tui-app --no-worker)

Targets on the 2-core reference machine: first paint <= 0.5 s at 13,100 and
<= 1.0 s at 100,000 items; p95 key latency <= 50 ms; p95 store change to repaint
<= 150 ms at 200 updates/s; peak RSS <= 300 MB at 100,000.
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
REPAINT_SECONDS = 10.0  # length of the store-change-to-repaint phase
VISIBLE_ROWS = 30  # the rows the repaint phase updates (all on screen at 160 x 45)


def make_project(root: Path, n: int, state: str | None = None) -> Path:
    (root / "data").mkdir(parents=True)
    if state:  # the take folder is a shared one, which must be there (mounted) before any worker starts
        (root / "data" / "out").mkdir()
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
        + (f'\n[project]\nstate = "{state}"\n' if state else "")
    )
    return config


def setup(root: Path, n: int, state: str | None = None) -> None:
    """Create the project and its state (run in its own process): the SQLite file, or the empty
    PostgreSQL database ``state`` names."""
    from tui_app.config import load_config
    from tui_app.project import Project

    with Project.open(load_config(make_project(root, n, state))) as project:
        project.import_sources()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class AppDied(RuntimeError):
    pass


def writer(db: str, ids: list[int], rate: float, stop: Path, log: Path, seed: int) -> None:
    """The external writer (run in its own process): ``rate`` updates per second on ``ids`` until
    ``stop`` exists, each one transaction (the item and its event row, as a worker's completion);
    then ``log`` gets ``[[item id, attempts after, monotonic commit time], ...]``. ``db``: the
    SQLite file, or a PostgreSQL URI (each transaction then also sends the store's change
    notification, as every write of the PostgreSQL store does)."""
    rng = random.Random(seed)
    postgres = db.startswith(("postgresql://", "postgres://"))
    if postgres:
        import psycopg

        from tui_app.store.postgres import CHANNEL

        conn = psycopg.connect(db, autocommit=True)
        begin = "BEGIN"
    else:
        conn = sqlite3.connect(db, isolation_level=None, timeout=10)
        begin = "BEGIN IMMEDIATE"
    update = "UPDATE items SET status=?, attempts=attempts+1, updated_at=? WHERE id=? RETURNING attempts"
    insert = "INSERT INTO events (ts, level, kind, collection, item_key, message) VALUES (?,?,?,?,?,?)"
    if postgres:
        update, insert = update.replace("?", "%s"), insert.replace("?", "%s")
    keys = dict(conn.execute("SELECT id, key FROM items").fetchall())
    done: list[tuple[int, int, float]] = []
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.exists():
        item_id = rng.choice(ids)
        # no "generating": the app's own idle worker would take an item without a lease back
        status = rng.choice(["pending", "completed", "failed"])
        kind = {"pending": "released", "completed": "completed", "failed": "failed"}[status]
        now = time.time()
        conn.execute(begin)
        (attempts,) = conn.execute(update, (status, now, item_id)).fetchone()
        conn.execute(
            insert,
            (
                now,
                "error" if status == "failed" else "info",
                kind,
                "dataset",
                keys[item_id],
                f"{keys[item_id]} {status} (bench update)",
            ),
        )
        if postgres:
            note = {"collection": "dataset", "id": item_id, "key": keys[item_id], "kind": kind}
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps(note)))
        conn.execute("COMMIT")
        done.append((item_id, attempts, time.monotonic()))
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()
    log.write_text(json.dumps(done))


def scenario(
    root: Path, n: int, keys: int, rate: float, key_timeout: float, repaint_rate: float, worker: bool
) -> dict:
    from textual import events

    from tui_app.config import load_config
    from tui_app.tui import table as table_module
    from tui_app.tui.app import build_app

    config = load_config(root / "config.toml")
    marks: dict[str, float] = {}
    rendered: list[int] = []  # cursor rows rendered for the frame being built
    painted: list[tuple[float, int]] = []  # (time the frame was handed to the display, cursor row)
    rows_rendered: list[tuple[int, int]] = []  # (item id, attempts) of the rows rendered for the frame
    first_shown: dict[tuple[int, int], float] = {}  # (item id, attempts) -> first frame that showed it
    original_render_line = table_module.ItemTable.render_line

    def render_line(self, y):
        strip = original_render_line(self, y)
        index = self.scroll_offset.y + y
        row = self.row_at(index)  # from the page cache
        if row is not None:
            if "first_row" not in marks:
                marks["first_row"] = time.monotonic()
            rows_rendered.append((row.id, row.attempts))
        if index == self.cursor:
            rendered.append(self.cursor)
        return strip

    table_module.ItemTable.render_line = render_line
    started = time.monotonic()
    app = build_app(config, clock_free=True, worker=worker)
    original_display = app._display

    def display(screen, renderable) -> None:
        """A frame is ready: what a terminal app then does (headless Textual skips it), then time it."""
        original_display(screen, renderable)
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)  # the escape sequences a terminal would be sent
        now = time.monotonic()
        if "first_row" in marks and "first_paint" not in marks:
            marks["first_paint"] = now
        painted.extend((now, c) for c in rendered)
        rendered.clear()
        for shown in rows_rendered:
            first_shown.setdefault(shown, now)
        rows_rendered.clear()

    app._display = display
    latencies: list[float] = []
    result: dict = {"n": n}

    def check_alive() -> None:
        if app._exception is not None or (app.return_code is not None and not app.is_running):
            raise AppDied(f"the app stopped (return code {app.return_code}): {app._exception!r}")

    async def wait_for(condition, limit: float, what: str) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: nothing after {limit:.0f} s")
            await asyncio.sleep(0.001)

    def start_writer(ids: list[int], per_s: float, name: str) -> tuple[subprocess.Popen, Path, Path]:
        stop, log, id_file = root / f"{name}.stop", root / f"{name}.json", root / f"{name}.ids.json"
        id_file.write_text(json.dumps(ids))
        args = [sys.executable, __file__, "--writer", str(config.state_location), "--rate", str(per_s)]
        args += ["--stop", str(stop), "--log", str(log), "--ids", str(id_file)]
        return subprocess.Popen(args), stop, log

    def read_log(log: Path) -> list[tuple[int, int, float]]:
        return [(u[0], u[1], u[2]) for u in json.loads(log.read_text())]

    async def stop_writer(proc: subprocess.Popen, stop: Path, log: Path) -> list[tuple[int, int, float]]:
        """Tell the writer to stop, wait for it (off the event loop), read what it wrote when."""
        await asyncio.to_thread(stop.touch)
        if await asyncio.to_thread(proc.wait) != 0:
            raise RuntimeError(f"the writer failed (exit {proc.returncode})")
        return await asyncio.to_thread(read_log, log)

    async def run() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            await wait_for(lambda: "first_paint" in marks, FIRST_PAINT_LIMIT_S, "first painted row")
            await wait_for(
                lambda: not any(w.group == "import" and not w.is_finished for w in app.workers),
                IMPORT_LIMIT_S,
                "background source check",
            )
            result["import_done_s"] = time.monotonic() - started
            await pilot.pause(0.2)
            table = app.query_one("#table-dataset", table_module.ItemTable)
            ids = [item.id for item in app.store.items("dataset")]

            # 3. store change to repaint (first, while the cursor is on the first row)
            visible = ids[:VISIBLE_ROWS]
            first_shown.clear()
            proc, stop, log = start_writer(visible, repaint_rate, "repaint")
            try:
                await asyncio.sleep(REPAINT_SECONDS)
            finally:
                updates = await stop_writer(proc, stop, log)
            await asyncio.sleep(key_timeout)  # the last updates' repaints
            check_alive()
            repaint = sorted(_repaint_latencies(updates, first_shown))
            span = updates[-1][2] - updates[0][2] if len(updates) > 1 else 1.0
            result.update(
                {
                    "repaint_rate": len(updates) / span,
                    "repaint_updates": len(updates),
                    "repaint_misses": sum(1 for v in repaint if math.isinf(v)),
                    "repaint_p50_ms": percentile(repaint, 0.50) * 1000,
                    "repaint_p95_ms": percentile(repaint, 0.95) * 1000,
                    "repaint_max_ms": repaint[-1] * 1000,
                }
            )

            # 2. key latency while random items change
            proc, stop, log = start_writer(ids, rate, "keys")
            misses = 0
            try:
                await asyncio.sleep(0.5)
                load_started = time.monotonic()
                for _ in range(keys):
                    check_alive()
                    target = table.cursor + 1
                    painted.clear()
                    rendered.clear()
                    t0 = time.monotonic()
                    app.post_message(events.Key("down", None))
                    deadline = t0 + key_timeout
                    hit = None
                    while hit is None and time.monotonic() < deadline:
                        await asyncio.sleep(0.0005)
                        hit = next((t for t, c in painted if c == target), None)
                    if hit is None:
                        misses += 1
                        latencies.append(math.inf)
                    else:
                        latencies.append(hit - t0)
                    await asyncio.sleep(0.02)
                load_ended = time.monotonic()
            finally:
                written = await stop_writer(proc, stop, log)
            result["update_rate"] = sum(1 for u in written if load_started <= u[2] <= load_ended) / (
                load_ended - load_started
            )
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


def _repaint_latencies(
    updates: list[tuple[int, int, float]], first_shown: dict[tuple[int, int], float]
) -> list[float]:
    """Seconds from each update's commit to the first frame that showed its row with those attempts
    or more (a later update of the row shows it too); inf when none did."""
    shown_at: dict[int, list[tuple[int, float]]] = {}
    for (item_id, attempts), at in first_shown.items():
        shown_at.setdefault(item_id, []).append((attempts, at))
    earliest: dict[int, list[tuple[int, float]]] = {}  # per row: (attempts, earliest frame showing >= it)
    for item_id, shown in shown_at.items():
        shown.sort(reverse=True)
        best, out = math.inf, []
        for attempts, at in shown:
            best = min(best, at)
            out.append((attempts, best))
        earliest[item_id] = out[::-1]  # ascending attempts
    latencies = []
    for item_id, attempts, committed in updates:
        at = next((t for a, t in earliest.get(item_id, []) if a >= attempts), math.inf)
        latencies.append(max(0.0, at - committed))
    return latencies


class BenchFailed(RuntimeError):
    """A size's run failed: why, with the end of the child's stderr."""


def run_size(
    n: int,
    *,
    keys: int = 200,
    rate: float = 500.0,
    key_timeout: float = 1.0,
    repaint_rate: float = 200.0,
    no_worker: bool = False,
    child_timeout: float = 300.0,
    state: str | None = None,
) -> dict:
    """One size: a fresh project of ``n`` items set up in one process, the scenario run in another;
    the scenario's result. ``state``: an empty PostgreSQL database's URI for the project's state
    (default: the SQLite file in the project).

    Raises:
        BenchFailed: a child failed or overran ``child_timeout``.
    """
    root = Path(tempfile.mkdtemp(prefix="tui_app_tuibench_"))
    try:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--setup",
                str(root),
                "--n",
                str(n),
                *(["--state", state] if state else []),
            ],
            check=True,
            timeout=child_timeout,
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
                str(keys),
                "--rate",
                str(rate),
                "--key-timeout",
                str(key_timeout),
                "--repaint-rate",
                str(repaint_rate),
                "--child-timeout",
                str(child_timeout),
                *(["--no-worker"] if no_worker else []),
            ],
            capture_output=True,
            text=True,
            timeout=child_timeout,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr or b""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        raise BenchFailed(f"FAILED, over {exc.timeout:.0f} s\n{err[-4000:]}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if out.returncode != 0:
        raise BenchFailed(f"FAILED (exit {out.returncode})\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    parser.add_argument(
        "--repaint-rate",
        type=float,
        default=200.0,
        help="updates per second of rows on screen (repaint test)",
    )
    parser.add_argument(
        "--no-worker", action="store_true", help="the app without a worker of its own (tui-app --no-worker)"
    )
    parser.add_argument("--child-timeout", type=float, default=300.0, help="seconds allowed per size")
    parser.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ids", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        setup(args.setup, args.n, args.state)
        return
    if args.writer:
        writer(args.writer, json.loads(args.ids.read_text()), args.rate, args.stop, args.log, seed=1)
        return
    if args.child:
        faulthandler.dump_traceback_later(
            max(1.0, args.child_timeout - 5), exit=True
        )  # stacks on stderr, not a hang
        result = scenario(
            args.child,
            args.n,
            args.keys,
            args.rate,
            args.key_timeout,
            args.repaint_rate,
            worker=not args.no_worker,
        )
        print(json.dumps(result))
        return
    failed = False
    for n in [args.n] if args.n else [13_100, 100_000]:
        try:
            r = run_size(
                n,
                keys=args.keys,
                rate=args.rate,
                key_timeout=args.key_timeout,
                repaint_rate=args.repaint_rate,
                no_worker=args.no_worker,
                child_timeout=args.child_timeout,
            )
        except BenchFailed as exc:
            print(f"N={n:>7}: {exc}", flush=True)
            failed = True
            continue
        print(
            f"N={r['n']:>7}: first paint {r['first_paint_s']:.3f} s, key latency p50 {_ms(r['key_p50_ms'])} "
            f"p95 {_ms(r['key_p95_ms'])} max {_ms(r['key_max_ms'])} ({r['key_misses']}/{r['keys']} keys "
            f"timed out) at {r['update_rate']:.0f} updates/s; store change to repaint p50 "
            f"{_ms(r['repaint_p50_ms'])} p95 {_ms(r['repaint_p95_ms'])} max {_ms(r['repaint_max_ms'])} "
            f"({r['repaint_misses']}/{r['repaint_updates']} not painted) at {r['repaint_rate']:.0f} "
            f"updates/s from an external writer; peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(background source check done at {r['import_done_s']:.2f} s)",
            flush=True,
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
