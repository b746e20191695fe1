"""The ``simulated`` provider: a stand-in generator for tests, benchmarks and dry runs.

Options (``[providers.NAME]`` with ``kind = "simulated"``):
    latency_ms: base time per request, milliseconds (default 0).
    jitter_ms: extra uniformly random time per request, 0..jitter_ms milliseconds (default 0).
    failure_rate: probability 0..1 that a request fails with a retryable "HTTP 503" (default 0).
    seed: seed of the random draws (default 0); draws are per item and per call, so a
        run is reproducible whatever order items are scheduled in.
    trace: a file (relative to the project) that gets one JSON line per request,
        ``{"key", "start", "end", "pid"}`` (unix times, seconds), appended atomically, so
        tests and benchmarks can check throttles across worker processes (default: none).

It writes small but valid files: a 0.1 s 22,050 Hz mono 16-bit WAV for
dataset entries and a 32x32 PNG for pages and variants, each unique to its
item and take.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import struct
import time
from collections import defaultdict
from pathlib import Path

import anyio

from ..media import wav_bytes
from ..settings import ProviderConfig
from .base import Output, ProviderError, Request

SAMPLE_RATE = 22_050
_TONE = b"".join(
    struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / SAMPLE_RATE)))
    for n in range(SAMPLE_RATE // 10)
)


class SimulatedProvider:
    """See the module docstring. Thread-compatible, called from one event loop."""

    def __init__(self, config: ProviderConfig, root: Path = Path(".")):
        opts = config.options
        self.name = config.name
        self.latency_s = float(opts.get("latency_ms", 0)) / 1000.0
        self.jitter_s = float(opts.get("jitter_ms", 0)) / 1000.0
        self.failure_rate = float(opts.get("failure_rate", 0.0))
        self.seed = int(opts.get("seed", 0))
        self.trace = (root / str(opts["trace"])) if opts.get("trace") else None
        self._calls: dict[str, int] = defaultdict(int)

    async def prepare(self, options: dict | None = None) -> None:
        """Nothing to load."""

    async def generate(self, request: Request) -> Output:
        """Sleep the configured latency, maybe fail, return a small unique file."""
        ident = f"{request.collection}/{request.key}"
        call = self._calls[ident]
        self._calls[ident] += 1
        rng = random.Random(f"{self.seed}:{ident}:{call}")
        delay = self.latency_s + self.jitter_s * rng.random()
        start = time.time()
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()
        if self.trace is not None:
            line = json.dumps({"key": ident, "start": start, "end": time.time(), "pid": os.getpid()})
            fd = os.open(self.trace, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())  # one write with O_APPEND: lines never interleave
            finally:
                os.close(fd)
        if self.failure_rate and rng.random() < self.failure_rate:
            raise ProviderError("simulated HTTP 503: service unavailable", retryable=True, status=503)
        digest = hashlib.sha256(
            f"{ident}:{request.take_number}:{request.params.get('seed')}".encode()
        ).digest()
        if request.task == "speech":
            pcm = digest + _TONE[len(digest) :]
            return Output(
                wav_bytes(pcm, SAMPLE_RATE),
                ".wav",
                duration_s=len(pcm) / 2 / SAMPLE_RATE,
                sample_rate=SAMPLE_RATE,
                model="simulated",
                params={"latency_s": delay},
            )
        return Output(
            _png(digest),
            ".png",
            width=32,
            height=32,
            model="simulated",
            seed=request.params.get("seed"),
            params={"latency_s": delay},
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def _png(digest: bytes) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (32, 32), tuple(digest[:3]))
    img.putpixel((0, 0), tuple(digest[3:6]))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def validate_options(options: dict, error) -> None:
    """Check the simulated provider's options; ``error(key, msg)`` builds the ConfigError."""
    for key in options:
        if key not in ("latency_ms", "jitter_ms", "failure_rate", "seed", "trace"):
            raise error(
                key, "unknown key for a simulated provider (latency_ms, jitter_ms, failure_rate, seed, trace)"
            )
    if not isinstance(options.get("trace", ""), str):
        raise error("trace", f"must be a file path, got {options.get('trace')!r}")
    for key in ("latency_ms", "jitter_ms"):
        value = options.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise error(key, f"must be a number of milliseconds >= 0, got {value!r}")
    rate = options.get("failure_rate", 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise error("failure_rate", f"must be a number between 0 and 1, got {rate!r}")
    if not isinstance(options.get("seed", 0), int):
        raise error("seed", f"must be an integer, got {options.get('seed')!r}")


def create(pc: ProviderConfig, root: Path) -> SimulatedProvider:
    """The provider for a validated ``[providers.NAME]`` table (``root``: the project folder)."""
    return SimulatedProvider(pc, root)
