"""Engine throughput benchmark (not a test): simulated items through the real engine.

Measures, on a fresh temporary project each time (state writes, atomic file
writes with fsync and sha256 included):

1. N items with zero provider latency: items/s and engine overhead per item (ms).
2. N items with a fixed latency L at concurrency C: wall time / ideal, where
   ideal = N x L / C (the time a perfect scheduler would need).

Usage:
    python bench/engine.py                    # the issue's targets: 10,000 x 0 ms; 400 x 200 ms at C=16
    python bench/engine.py --n 2000 --latency-ms 50 --concurrency 8

Targets on the 2-core reference machine: >= 1,000 items/s at N = 10,000 with
zero latency, and <= 1.10 x ideal for N = 400, 200 ms, C = 16.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

from tui_app.config import load_config
from tui_app.engine import Engine
from tui_app.project import Project


def make_project(root: Path, n: int, latency_ms: float, concurrency: int) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "prompts.data").write_text(
        "".join(f'( item_{i:06d} "Sentence number {i} of the benchmark." )\n' for i in range(n))
    )
    config = root / "config.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [collections.dataset]
        source = "data/prompts.data"
        provider = "sim"

        [providers.sim]
        kind = "simulated"
        concurrency = {concurrency}
        latency_ms = {latency_ms}
        """)
    )
    return config


def run_once(n: int, latency_ms: float, concurrency: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="tui_app_bench_"))
    try:
        config = load_config(make_project(root, n, latency_ms, concurrency))
        with Project.open(config) as project:
            project.import_sources()
            engine = Engine(project)
            started = time.perf_counter()
            anyio.run(engine.run)
            wall = time.perf_counter() - started
            done = project.counts()["dataset"]["completed"]
            assert done == n, f"only {done} of {n} completed"
            files = len(list(config.collections["dataset"].output.iterdir()))
            assert files == n, f"{files} files for {n} items"
        ideal = n * latency_ms / 1000.0 / concurrency
        return {
            "n": n,
            "latency_ms": latency_ms,
            "concurrency": concurrency,
            "wall_s": wall,
            "items_per_s": n / wall,
            "overhead_ms": (wall - ideal) / n * 1000.0 * concurrency if latency_ms else wall / n * 1000.0,
            "ratio": wall / ideal if ideal else float("nan"),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, help="items (default: run both reference scenarios)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    scenarios = (
        [(args.n, args.latency_ms, args.concurrency)] if args.n else [(10_000, 0.0, 16), (400, 200.0, 16)]
    )
    for n, latency, conc in scenarios:
        r = run_once(n, latency, conc)
        line = (
            f"N={r['n']:>6} latency={r['latency_ms']:>5.0f} ms C={r['concurrency']:>3}: "
            f"wall {r['wall_s']:.2f} s, {r['items_per_s']:.0f} items/s"
        )
        if latency:
            line += f", wall/ideal {r['ratio']:.3f} (ideal {n * latency / 1000 / conc:.2f} s)"
        else:
            line += f", {r['overhead_ms']:.3f} ms per item"
        print(line, flush=True)


if __name__ == "__main__":
    main()
