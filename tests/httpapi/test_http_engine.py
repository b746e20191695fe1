"""The engine over the HTTP providers: retries, the shared cooldown, concurrency, secrets."""

from __future__ import annotations

import email.utils
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import anyio
import pytest
from PIL import Image

from httpapi.conftest import http_project, run_engine
from httpapi.loopback import API_KEY, Fault, LoopbackServer
from tui_app.providers.http import parse_duration, retry_after_seconds
from tui_app.store import Store

_run = run_engine


def _items(store: Store, collection: str) -> dict[str, dict]:
    return {
        i.key: {"status": i.status, "attempts": i.attempts, "error": i.last_error}
        for i in store.items(collection)
    }


def _take_files(root: Path, folder: str) -> list[Path]:
    return sorted(p for p in (root / folder).glob("*") if p.is_file())


def test_retry_after_header_forms():
    now = 1_700_000_000.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}, 429) == 1.5
    assert retry_after_seconds({"retry-after": "3"}, 503) == 3.0
    date = email.utils.formatdate(now + 7, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, 429, now=now) == pytest.approx(7.0)
    assert (
        retry_after_seconds(
            {
                "x-ratelimit-reset-requests": "6m0s",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-tokens": "20ms",
                "x-ratelimit-remaining-tokens": "5",
            },
            429,
        )
        == 360
    )
    assert (
        retry_after_seconds({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "2.5s"}, 429)
        == 2.5
    )
    assert (
        retry_after_seconds({"x-ratelimit-reset-requests": "1s"}, 200) is None
    )  # informational outside a 429
    assert retry_after_seconds({}, 429) is None
    assert (
        parse_duration("1h2m3.5s") == 3723.5
        and parse_duration("20ms") == 0.02
        and parse_duration("soon") is None
    )


@pytest.mark.parametrize(
    "headers,delay",
    [
        ({"retry-after-ms": "800"}, 0.8),
        ({"retry-after": "1"}, 1.0),
        ("date", 1.0),
        ({"x-ratelimit-reset-requests": "900ms", "x-ratelimit-remaining-requests": "0"}, 0.9),
    ],
)
def test_429_cools_down_the_whole_provider(tmp_path, keys, headers, delay):
    server = LoopbackServer(latency_s=0.15).start()
    try:
        if headers == "date":  # an HTTP-date 3 s ahead: whole seconds, so well over 1 s from the answer
            headers = {"retry-after": email.utils.formatdate(time.time() + 3, usegmt=True)}
        server.inject(
            "speech",
            Fault(
                status=429,
                headers=headers,
                body={
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
            ),
        )
        engine, store = _run(http_project(tmp_path, server, dataset="openai", entries=8))
    finally:
        server.stop()
    items = _items(store, "dataset")
    assert all(i["status"] == "completed" for i in items.values())
    assert sorted(i["attempts"] for i in items.values()) == [0] * 7 + [1]  # only the refused one was retried
    reqs = server.of("speech")
    assert len(reqs) == 9
    refused = next(r for r in reqs if r.status == 429)
    answered = refused.time + 0.15
    later = [r.time for r in reqs if r.time > refused.time + 0.05]
    assert later, "requests after the 429"
    # no worker of the provider sent anything during the cooldown, not only the refused one
    assert min(later) >= answered + delay * 0.95
    assert any("cooling down" in e.message for e in store.events())


def test_retryable_faults_are_retried_up_to_max_attempts(tmp_path, keys):
    server = LoopbackServer().start()
    try:
        server.inject(
            "speech", Fault(status=503, body=b"upstream busy"), Fault(status=500, body={"detail": "boom"})
        )
        config = http_project(
            tmp_path, server, dataset="openai", entries=1, provider_settings="max_attempts = 2", concurrency=1
        )
        _, store = _run(config)
    finally:
        server.stop()
    (item,) = _items(store, "dataset").values()
    assert item == {"status": "failed", "attempts": 2, "error": "HTTP 500: boom"}
    assert [r.status for r in server.of("speech")] == [503, 500]
    assert _take_files(tmp_path, "data/out/dataset") == []
    messages = [e.message for e in store.events()]
    assert any("failed: HTTP 503: upstream busy, retry 2/2" in m for m in messages)


def test_each_fault_costs_one_retry_and_the_run_finishes(tmp_path, keys):
    server = LoopbackServer().start()
    try:
        server.inject(
            "speech",
            Fault(status=503, body=b"upstream busy"),
            Fault(status=500, body={"detail": "boom"}),
            Fault(drop=True),
        )
        config = http_project(tmp_path, server, dataset="openai", entries=3, concurrency=1)
        _, store = _run(config)
    finally:
        server.stop()
    items = _items(store, "dataset")
    assert all(i["status"] == "completed" for i in items.values())
    assert sum(i["attempts"] for i in items.values()) == 3  # failed tries: one per fault
    assert len(server.of("speech")) == 6
    assert len(_take_files(tmp_path, "data/out/dataset")) == 3


def test_timeouts_are_retried(tmp_path, keys):
    server = LoopbackServer().start()
    try:
        server.inject("speech", Fault(delay_s=1.5))
        config = http_project(
            tmp_path, server, dataset="openai", entries=2, provider_settings="read_timeout_s = 0.4"
        )
        _, store = _run(config)
    finally:
        server.stop()
    items = _items(store, "dataset")
    assert all(i["status"] == "completed" for i in items.values())
    assert sorted(i["attempts"] for i in items.values()) == [0, 1]
    assert any("read timeout" in e.message for e in store.events())


@pytest.mark.parametrize(
    "route,fault,needle",
    [
        (
            "speech",
            Fault(
                status=422,
                body={"detail": [{"loc": ["body", "voice"], "msg": "unknown voice", "type": "value_error"}]},
            ),
            "HTTP 422: voice: unknown voice",
        ),
        ("speech", Fault(corrupt="wrong_content"), "not a valid WAV file"),
        ("speech", Fault(corrupt="wrong_rate"), "wrong sample rate"),
        ("speech", Fault(truncate=True), "truncated body"),
    ],
)
def test_failed_items_leave_no_file_and_the_others_finish(tmp_path, keys, route, fault, needle):
    server = LoopbackServer().start()
    try:
        server.inject(route, fault)
        # a truncated body is retryable: with one attempt allowed it fails at once
        settings = "sample_rate = 24000" + ("\nmax_attempts = 1" if fault.truncate else "")
        config = http_project(
            tmp_path, server, dataset="openai", entries=4, provider_settings=settings, concurrency=1
        )
        _, store = _run(config)
    finally:
        server.stop()
    items = _items(store, "dataset")
    failed = [i for i in items.values() if i["status"] == "failed"]
    assert len(failed) == 1 and needle in failed[0]["error"]
    assert failed[0]["attempts"] == 1
    files = _take_files(tmp_path, "data/out/dataset")
    assert len(files) == 3 and not [p for p in files if ".tmp" in p.name]
    for path in files:
        with wave.open(str(path)) as w:
            assert w.getframerate() == 24_000 and w.getnframes() > 0


def test_elevenlabs_too_many_concurrent_requests_lowers_concurrency(tmp_path, keys):
    server = LoopbackServer(latency_s=0.1, max_concurrent=2).start()
    try:
        config = http_project(
            tmp_path, server, dataset="elevenlabs", entries=12, provider_settings="max_attempts = 6"
        )
        engine, store = _run(config)
    finally:
        server.stop()
    assert all(i["status"] == "completed" for i in _items(store, "dataset").values())
    assert 1 <= engine.throttles["elevenlabs"].limit <= 2  # in flight is read when the 429 arrives
    assert any("concurrency lowered to" in e.message for e in store.events())
    for path in _take_files(tmp_path, "data/out/dataset"):
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (22_050, 1, 2)


def test_a1111_pages_and_variants_end_to_end_with_min_interval(tmp_path, keys):
    server = LoopbackServer().start()
    try:
        config = http_project(
            tmp_path,
            server,
            pages="a1111",
            variants="a1111",
            page_count=3,
            photos=2,
            provider_settings="min_interval_s = 0.1",
        )
        engine, store = _run(config)
    finally:
        server.stop()
    for name in ("pages", "variants"):
        assert all(i["status"] == "completed" for i in _items(store, name).values())
    starts = list(engine.throttles["a1111"].starts)
    # the stagger held
    assert len(starts) == 10 and min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 0.099
    arrivals = sorted(
        r.time for r in server.requests
    )  # as the server saw it (a new connection adds its setup)
    assert min(b - a for a, b in zip(arrivals, arrivals[1:], strict=False)) >= 0.05
    seeds = {t.key: t.take.seed for t in store.all_takes("variants")}
    sent = {base: r.json["seed"] for r in server.of("img2img") for base in [None]}
    assert all(isinstance(s, int) for s in seeds.values()) and sent
    forensic = [s for k, s in seeds.items() if k.endswith("forensic")]
    assert forensic == [42, 42]
    assert sorted(r.json["denoising_strength"] for r in server.of("img2img")) == [
        0.1,
        0.1,
        0.5,
        0.5,
        0.8,
        0.8,
    ]
    for path in _take_files(tmp_path, "data/out/pages") + _take_files(tmp_path, "data/out/variants"):
        Image.open(path).load()


def test_finalize_upscales_through_a1111(tmp_path, keys):
    server = LoopbackServer().start()
    try:
        config_path = http_project(tmp_path, server, variants="a1111", photos=1, slots='["forensic"]')
        engine, store = _run(config_path)
        (path,) = _take_files(tmp_path, "data/out/variants")
        (item,) = store.items("variants")
        engine.project.choose(item.id)
        final = anyio.run(engine.build_final, "variants", item.id)
    finally:
        server.stop()
    assert len(server.of("upscale")) == 1
    assert final is not None
    with Image.open(path) as src, Image.open(tmp_path / final.path) as big:
        assert big.size == (final.width, final.height) == (2 * src.width, 2 * src.height)


def test_secrets_never_leak(tmp_path, monkeypatch):
    """A wrong key that the server echoes back: not in output, --json, the DB, events or status."""
    wrong = "sk-wrong-key-0123456789-TOPSECRET"
    server = LoopbackServer().start()
    try:
        server.inject(
            "generations",
            Fault(
                status=400,
                body={
                    "error": {
                        "message": f"Bad request from key {API_KEY}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
        )
        config = http_project(tmp_path, server, dataset="openai", pages="openai", entries=2, page_count=1)
        env = {**os.environ, "LOOPBACK_OPENAI_KEY": wrong}
        batch = subprocess.run(
            [
                sys.executable,
                "-m",
                "tui_app",
                "--config",
                str(config),
                "--batch",
                "--json",
                "--collection",
                "dataset",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        env["LOOPBACK_OPENAI_KEY"] = API_KEY
        pages = subprocess.run(
            [
                sys.executable,
                "-m",
                "tui_app",
                "--config",
                str(config),
                "--batch",
                "--json",
                "--collection",
                "pages",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        status = subprocess.run(
            [sys.executable, "-m", "tui_app", "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        server.stop()
    assert batch.returncode == 1, batch.stderr
    summary = json.loads(batch.stdout)
    assert summary["collections"]["dataset"]["failed"] == 2
    assert "Incorrect API key provided" in batch.stdout + batch.stderr  # the server's message is kept...
    assert any(
        r.headers.get("authorization") == f"Bearer {wrong}" for r in server.requests
    )  # ...and it was sent
    assert pages.returncode == 1 and "Bad request from key" in pages.stdout
    blobs = [batch.stdout, batch.stderr, pages.stdout, pages.stderr, status.stdout, status.stderr]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("latin-1"))
    for blob in blobs:
        assert wrong not in blob and API_KEY not in blob
        assert "wrong-key-0123456789" not in blob and "0123456789abcdef" not in blob


def test_rate_limited_server_without_configured_rate_is_learned(tmp_path, keys):
    """No requests_per_minute set: after the first 429s the provider paces itself under the limit."""
    server = LoopbackServer(limit_rps=40, latency_s=0.02).start()
    try:
        config = http_project(
            tmp_path,
            server,
            dataset="openai",
            entries=0,
            concurrency=16,
            provider_settings="max_attempts = 10",
        )
        (tmp_path / "data" / "prompts.data").write_text(
            "".join(f'( e{i:04d} "Entry number {i} of the rate test." )\n' for i in range(160))
        )
        engine, store = _run(config)
    finally:
        server.stop()
    assert all(i["status"] == "completed" for i in _items(store, "dataset").values())
    assert engine.throttles["openai"].learned_rps is not None
    assert any("pacing requests at" in e.message for e in store.events())
    late = [r for r in server.requests if r.time - server.started >= 1.5]
    limited = [r for r in late if r.status == 429]
    assert len(late) > 50 and len(limited) <= 0.1 * len(late)
