"""HTTP provider benchmark (not a test): the engine and the ``openai`` provider against the loopback server.

The loopback server (``tests/httpapi/loopback.py``) runs in its own process and
answers ``POST /v1/audio/speech`` with real WAVs; the engine generates a
dataset of N entries through it, writing takes and state as in a real run.

(a) latency: every answer takes 200 ms; N = 400, concurrency 32. Ideal wall
    time = N x latency / concurrency = 2.5 s; target: at most 1.10 x ideal.
(b) rate limit: the server allows 20 requests in any 1 s window and answers
    429 (OpenAI's error body, ``retry-after-ms``) above it. The provider is set to
    ``requests_per_minute = 1170`` (19.5/s, a little under the server's limit, as
    one configures a client for a documented limit) and concurrency 32.
    Targets: completed items/s at least 0.95 x 20 = 19; 429s at most 2 % of the
    requests after the first 5 s.
(c) (b) without ``requests_per_minute``: the client learns the pace from the
    429s (the throttle's learned pace plus the Retry-After cooldown); same targets.

Usage:
    python bench/http.py                 # all scenarios
    python bench/http.py --only a --n 400
"""

from __future__ import annotations

import sys
from pathlib import Path

# this file is named http.py: keep its folder off sys.path so ``import http`` finds the standard library
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "sk-loopback-0123456789abcdefSECRET"  # what the loopback server expects


def start_server(latency_ms: float, limit_rps: float | None) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, str(ROOT / "tests" / "httpapi" / "loopback.py"), "--latency-ms", str(latency_ms)]
    if limit_rps:
        cmd += ["--limit-rps", str(limit_rps)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def stats(port: int, reset: bool = False) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats{'?reset=1' if reset else ''}") as response:
        return json.loads(response.read())


def make_project(root: Path, port: int, n: int, concurrency: int, rpm: float) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "prompts.data").write_text(
        "".join(f'( bench_{i:05d} "Sentence number {i} of the benchmark." )\n' for i in range(n))
    )
    config = root / "config.toml"
    config.write_text(
        textwrap.dedent(f"""\
        [collections.dataset]
        source = "data/prompts.data"
        provider = "api"

        [providers.api]
        kind = "openai"
        base_url = "http://127.0.0.1:{port}/v1"
        api_key_env = "BENCH_OPENAI_KEY"
        concurrency = {concurrency}
        requests_per_minute = {rpm}
        max_attempts = 8

        [qa.asr]
        engine = "none"                      # the offline ASR step would be what is measured
        """)
    )
    return config


def run_engine(config_path: Path) -> tuple[float, dict]:
    import anyio

    from tui_app.config import load_config
    from tui_app.engine import Engine
    from tui_app.project import Project

    project = Project.open(load_config(config_path))
    project.import_sources()
    engine = Engine(project)

    async def main() -> float:
        await engine.prepare()
        started = time.perf_counter()
        await engine.run()
        elapsed = time.perf_counter() - started
        await engine.aclose()
        return elapsed

    try:
        elapsed = anyio.run(main)
        counts = project.counts()["dataset"]
        attempts = sum(i.attempts for i in project.store.items("dataset"))
    finally:
        project.close()
    return elapsed, {**counts, "attempts": attempts}


def scenario(
    name: str, n: int, concurrency: int, latency_ms: float, limit_rps: float | None, rpm: float
) -> dict:
    proc, port = start_server(latency_ms, limit_rps)
    try:
        root = Path(tempfile.mkdtemp(prefix=f"tui_app_httpbench_{name}_"))
        config = make_project(root, port, n, concurrency, rpm)
        stats(port, reset=True)
        elapsed, counts = run_engine(config)
        server = stats(port)
    finally:
        proc.terminate()
        proc.wait(5)
    result = {
        "scenario": name,
        "n": n,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "limit_rps": limit_rps,
        "requests_per_minute": rpm,
        "wall_s": round(elapsed, 3),
        "completed": counts["completed"],
        "failed": counts["failed"],
        "requests": server["total"],
        "http_429": len(server["rate_limited"]),
        "items_per_s": round(counts["completed"] / elapsed, 2),
        "max_in_flight_at_server": server["max_in_flight"],
    }
    if limit_rps is None:
        ideal = n * latency_ms / 1000.0 / concurrency
        result.update(ideal_s=round(ideal, 3), wall_over_ideal=round(elapsed / ideal, 3) if ideal else None)
    else:
        late = [t for t in server["request_times"] if t >= 5.0]
        late_429 = [t for t in server["rate_limited"] if t >= 5.0]
        result.update(
            requests_after_5s=len(late),
            http_429_after_5s=len(late_429),
            share_429_after_5s=round(len(late_429) / max(1, len(late)), 4),
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["a", "b", "c"], action="append", help="scenario(s) to run")
    parser.add_argument("--n", type=int, default=None, help="items (default: 400 for a, 500 for b and c)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args()
    os.environ["BENCH_OPENAI_KEY"] = KEY
    plans = {
        "a": dict(n=args.n or 400, concurrency=32, latency_ms=200, limit_rps=None, rpm=0),
        "b": dict(n=args.n or 500, concurrency=32, latency_ms=50, limit_rps=20, rpm=1170),
        "c": dict(n=args.n or 500, concurrency=32, latency_ms=50, limit_rps=20, rpm=0),
    }
    for name in args.only or ["a", "b", "c"]:
        result = scenario(name, **plans[name])
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(
            f"({name}) N={result['n']} C={result['concurrency']} latency={result['latency_ms']:g} ms "
            f"server limit={result['limit_rps'] or '-'} req/s "
            f"client rpm={result['requests_per_minute'] or '-'}"
        )
        print(
            f"    wall {result['wall_s']:.2f} s, {result['completed']} completed, {result['failed']} failed, "
            f"{result['items_per_s']:.1f} items/s, {result['requests']} requests, {result['http_429']} x 429"
        )
        if "ideal_s" in result:
            verdict = "ok" if result["wall_over_ideal"] <= 1.10 else "MISSED"
            print(
                f"    ideal {result['ideal_s']:.2f} s -> wall/ideal {result['wall_over_ideal']:.3f} "
                f"(target <= 1.10: {verdict})"
            )
        else:
            rate_ok = "ok" if result["items_per_s"] >= 19.0 else "MISSED"
            share_ok = "ok" if result["share_429_after_5s"] <= 0.02 else "MISSED"
            print(
                f"    items/s {result['items_per_s']:.2f} (target >= 19: {rate_ok}); 429s after 5 s: "
                f"{result['http_429_after_5s']}/{result['requests_after_5s']} = "
                f"{100 * result['share_429_after_5s']:.2f} % (target <= 2 %: {share_ok})"
            )


if __name__ == "__main__":
    main()
