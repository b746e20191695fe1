"""Worker-process throughput benchmark (not a test): N processes draining one SQLite project.

Zero-latency simulated items, so what is measured is the engine and the store: every
claim, lease and take record is a SQLite transaction on the one state file, shared by
all processes (SQLite has a single writer: more processes do not make more writes).
For each N, a fresh project of ``--n`` items is drained by N ``tui-app --batch``
processes started together; items/s = items / wall time (process start-up included).

The speech QA (:mod:`tui_app.qa`: silences, levels, loudness per take, on the event loop) is
measured on and off (``[qa] enabled = false``), both in the same run: "off" is the engine and the
store alone; the difference is what measuring a 0.1 s clip costs.

Usage:
    python bench/workers.py                  # 10,000 items with 1, 2 and 4 processes, QA on and off
    python bench/workers.py --n 4000 --procs 1 2
    python bench/workers.py --dir /dev/shm   # the engine and the store without the disk

Target on the 2-core reference machine: >= 1,000 items/s in total for every N.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path


def make_project(
    root: Path, n: int, qa: bool = True, *, latency_ms: float = 0.0, state: str | None = None
) -> None:
    """A project with ``n`` festvox prompts on a simulated provider of ``latency_ms`` (default zero) at
    concurrency 16 (speech QA on or off); its state in ``state`` (a PostgreSQL URI) when given, else
    in the default SQLite file."""
    (root / "data").mkdir(parents=True)
    if state:  # the take folder is a shared one, which must be there (mounted) before any worker starts
        (root / "data" / "out").mkdir()
    (root / "data" / "prompts.data").write_text(
        "".join(f'( item_{i:06d} "Sentence number {i} of the benchmark." )\n' for i in range(n))
    )
    (root / "config.toml").write_text(
        textwrap.dedent("""\
        [collections.dataset]
        source = "data/prompts.data"
        provider = "sim"

        [providers.sim]
        kind = "simulated"
        concurrency = 16
        """)
        + (f"latency_ms = {latency_ms}\n" if latency_ms else "")
        + ("" if qa else "\n[qa]\nenabled = false\n")
        + (f'\n[project]\nstate = "{state}"\n' if state else "")
    )


def drain(
    n: int,
    procs: int,
    where: str | None = None,
    qa: bool = True,
    *,
    latency_ms: float = 0.0,
    state: str | None = None,
) -> tuple[float, int]:
    """Drain a fresh ``n``-item project in a new folder under ``where`` (default: the system's temp
    folder) with ``procs`` processes; returns (wall s, takes recorded). ``state``: an empty PostgreSQL
    database's URI for the project's state (default: the SQLite file in the project).

    The project is left in place: the caller removes ``where`` once every run is over (see
    :func:`scratch`), since deleting 10,000 files between runs slows the next run's file creation on
    some file systems (ext4 without a journal skips recently deleted inodes one by one).
    """
    root = Path(tempfile.mkdtemp(prefix="tui_app-bench-", dir=where))
    make_project(root, n, qa, latency_ms=latency_ms, state=state)
    # import first (and generate one item), so every process starts on the same ready queue
    warm = subprocess.run(
        [sys.executable, "-m", "tui_app", "--batch", "--limit", "1"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if warm.returncode:
        output = warm.stdout[-2000:] + warm.stderr[-4000:]
        raise SystemExit(f"the warm-up --batch exited with {warm.returncode}:\n{output}")
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "tui_app", "--batch"],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(procs)
    ]
    codes = [p.wait() for p in running]
    wall = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a worker exited with {codes}")
    if state:
        import psycopg

        with psycopg.connect(state) as conn:
            takes = conn.execute("SELECT COUNT(*) FROM takes").fetchone()
    else:
        db = sqlite3.connect(root / "data" / "state.sqlite")
        takes = db.execute("SELECT COUNT(*) FROM takes").fetchone()
        db.close()
    return wall, int(takes[0])


@contextlib.contextmanager
def scratch(where: str | None = None) -> Iterator[str]:
    """A temp folder under ``where`` for every run's project, removed (with them) on exit."""
    with tempfile.TemporaryDirectory(prefix="tui_app-bench-runs-", dir=where) as tmp:
        yield tmp


def main() -> None:
    """Run the benchmark and print one line per process count."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="items per run (default 10,000)")
    parser.add_argument(
        "--procs", type=int, nargs="+", default=[1, 2, 4], help="process counts (default 1 2 4)"
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="make the projects under this folder (default: the system temp folder); /dev/shm"
        " (tmpfs) leaves out the disk: fsync and inode allocation, which dominate on a virtual disk",
    )
    parser.add_argument(
        "--qa", choices=("both", "on", "off"), default="both", help="speech QA on, off or both (default)"
    )
    args = parser.parse_args()
    with scratch(args.dir) as where:
        for procs in args.procs:
            for qa in {"both": (True, False), "on": (True,), "off": (False,)}[args.qa]:
                wall, takes = drain(args.n, procs, where, qa)
                done = takes - 1  # one item was generated by the warm-up
                print(
                    f"processes={procs} qa={'on' if qa else 'off'}: {done} items in {wall:.2f} s, "
                    f"{done / wall:.0f} items/s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
