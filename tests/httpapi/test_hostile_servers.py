"""The HTTP providers against hostile or broken servers: real loopback sockets, no mocks.

Each server here misbehaves on purpose: it redirects the key elsewhere, streams more than
any image, drips its answer, sends a gzip or decompression bomb, absurd rate-limit headers
or JSON no parser should recurse into. Every case must fail one item with a clear
:class:`ProviderError` (or, for rate-limit headers, a sane wait), in bounded time and memory,
and never hand a credential to another origin.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
import struct
import subprocess
import time
import zlib

import anyio
import pytest

from httpapi.conftest import http_project, run_engine
from httpapi.loopback import API_KEY, XI_KEY, Fault, RawServer, png_file
from tui_app.config import ProviderConfig
from tui_app.providers import ProviderError, Request
from tui_app.providers import http as http_module
from tui_app.providers.a1111 import A1111Provider
from tui_app.providers.elevenlabs import ElevenLabsProvider
from tui_app.providers.openai_api import OpenAIProvider

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- helpers


def _head(status: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status} Hostile\r\n{lines}connection: close\r\n\r\n".encode() + body


def _json(status: int, payload) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return _head(status, {"content-type": "application/json", "content-length": str(len(body))}, body)


@pytest.fixture
def raw():
    """Start RawServers for a test (``raw(handler, ssl=None)``); all stopped after it."""
    servers: list[RawServer] = []

    def start(handler, ssl=None) -> RawServer:
        servers.append(RawServer(handler, ssl).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _answer(data: bytes):
    """A handler writing ``data`` (a whole response) to every request."""

    async def handler(rec, writer):
        writer.write(data)

    return handler


def _elevenlabs(url: str, timeout_s: float = 5) -> ElevenLabsProvider:
    options = {"base_url": url, "api_key_env": "LOOPBACK_XI_KEY", "voice_id": "v1"}
    return ElevenLabsProvider(
        ProviderConfig("el", "elevenlabs", concurrency=1, timeout_s=timeout_s, options=options)
    )


def _openai(url: str, timeout_s: float = 5, **options) -> OpenAIProvider:
    options = {"base_url": f"{url}/v1", "api_key_env": "LOOPBACK_OPENAI_KEY", **options}
    return OpenAIProvider(ProviderConfig("oa", "openai", concurrency=1, timeout_s=timeout_s, options=options))


def _a1111(url: str, timeout_s: float = 5) -> A1111Provider:
    return A1111Provider(
        ProviderConfig("sd", "a1111", concurrency=1, timeout_s=timeout_s, options={"base_url": url})
    )


SPEECH = Request("dataset", "speech", "arctic_a0001", "Author of the danger trail.", {}, {})
PAGE = Request("pages", "picture", "page_001", "A rabbit.", {}, {"width": 64, "height": 48})


async def _fails(provider, request: Request = SPEECH, within_s: float = 3.0) -> ProviderError:
    """The ProviderError ``provider`` raises for ``request``, within ``within_s`` seconds."""
    try:
        with anyio.fail_after(within_s):
            with pytest.raises(ProviderError) as caught:
                await provider.generate(request)
    finally:
        await provider.aclose()
    assert "\n" not in caught.value.message
    assert XI_KEY not in caught.value.message and API_KEY not in caught.value.message
    return caught.value


# --------------------------------------------------------------------------- credentials on redirects


def _redirect_to(target: RawServer, status: int = 307):
    async def handler(rec, writer):
        writer.write(_head(status, {"location": f"{target.url}{rec.path}", "content-length": "0"}))

    return handler


@pytest.mark.parametrize("status", [302, 307])
async def test_a_redirect_to_another_port_never_gets_the_xi_api_key(raw, keys, status):
    pcm = b"\x01\x00" * 100
    target = raw(_answer(_head(200, {"content-type": "audio/pcm", "content-length": str(len(pcm))}, pcm)))
    origin = raw(_redirect_to(target, status))
    provider = _elevenlabs(origin.url)
    try:
        await provider.generate(SPEECH)
    except ProviderError:
        pass  # failing is fine; leaking is not
    finally:
        await provider.aclose()
    assert origin.requests[0].headers["xi-api-key"] == XI_KEY  # the origin itself gets the key
    assert target.requests, "the redirect was followed"
    assert all("xi-api-key" not in r.headers for r in target.requests)
    assert all(XI_KEY not in json.dumps(r.headers) for r in target.requests)


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory):
    """``(server SSLContext, CA file)``: a self-signed certificate for 127.0.0.1 (openssl)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_a_redirect_from_https_to_http_never_gets_the_key(raw, keys, tls_context, monkeypatch):
    context, cafile = tls_context
    monkeypatch.setenv("SSL_CERT_FILE", str(cafile))  # httpx trusts it (trust_env)
    pcm = b"\x01\x00" * 100
    plain = raw(_answer(_head(200, {"content-type": "audio/pcm", "content-length": str(len(pcm))}, pcm)))
    secure = raw(_redirect_to(plain), ssl=context)
    assert secure.url.startswith("https://")
    provider = _elevenlabs(secure.url)
    try:
        await provider.generate(SPEECH)
    except ProviderError:
        pass
    finally:
        await provider.aclose()
    assert secure.requests[0].headers["xi-api-key"] == XI_KEY
    assert plain.requests and all("xi-api-key" not in r.headers for r in plain.requests)


async def test_an_absolute_url_glued_to_base_url_does_not_carry_the_key_elsewhere(server, raw, keys):
    # the answer's URL starts with base_url, then names another server: still base_url's origin
    other = raw(_answer(_head(200, {"content-type": "image/png", "content-length": "4"}, b"\x89PNG")))
    server.inject(
        "generations",
        Fault(status=200, body={"data": [{"url": f"{server.url}/v1/{other.url}/files/img.png"}]}),
    )
    await _fails(_openai(server.url, image_response_format="url"), PAGE)
    assert all("authorization" not in r.headers for r in other.requests)


@pytest.mark.parametrize(
    "url,needle",
    [("file:///etc/passwd", "not an http(s) URL"), ("http://[::1", "not an http(s) URL")],
)
async def test_an_asset_url_that_is_not_http_fails_without_retry(server, keys, url, needle):
    server.inject("generations", Fault(status=200, body={"data": [{"url": url}]}))
    error = await _fails(_openai(server.url, image_response_format="url"), PAGE)
    assert needle in error.message and not error.retryable


# --------------------------------------------------------------------------- bodies: size and time


async def test_an_answer_larger_than_the_cap_fails_without_being_read(raw, keys, monkeypatch):
    monkeypatch.setattr(http_module, "MAX_BODY_BYTES", 1024 * 1024)
    sent = []

    async def handler(rec, writer):
        writer.write(_head(200, {"content-type": "audio/pcm", "content-length": str(8 * 1024 * 1024)}))
        for _ in range(8):
            writer.write(b"\0" * 1024 * 1024)
            await writer.drain()
            sent.append(1)

    error = await _fails(_elevenlabs(raw(handler).url))
    assert "answer too large" in error.message and "Content-Length 8388608 bytes" in error.message
    assert "1 MiB" in error.message and not error.retryable


async def test_an_endless_chunked_answer_stops_at_the_cap(raw, keys, monkeypatch):
    monkeypatch.setattr(http_module, "MAX_BODY_BYTES", 1024 * 1024)
    chunk = b"\0" * 65536

    async def handler(rec, writer):
        writer.write(_head(200, {"content-type": "audio/pcm", "transfer-encoding": "chunked"}))
        while True:  # gigabytes, for ever
            writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            await writer.drain()

    error = await _fails(_elevenlabs(raw(handler).url, timeout_s=10))
    assert "answer too large" in error.message and not error.retryable


@functools.cache
def _gzip_zeros(mib: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip
    return b"".join(compressor.compress(b"\0" * 1024 * 1024) for _ in range(mib)) + compressor.flush()


async def test_a_gzip_bomb_is_refused_by_its_decoded_size(raw, keys, monkeypatch):
    monkeypatch.setattr(http_module, "MAX_BODY_BYTES", 1024 * 1024)
    bomb = _gzip_zeros(32)  # 32 KiB on the wire, 32 MiB decoded
    assert len(bomb) < 64 * 1024
    headers = {"content-type": "audio/pcm", "content-encoding": "gzip", "content-length": str(len(bomb))}
    error = await _fails(_elevenlabs(raw(_answer(_head(200, headers, bomb))).url))
    assert "answer too large" in error.message and not error.retryable


async def test_a_huge_error_body_is_not_waited_for(raw, keys):
    async def handler(rec, writer):
        text = json.dumps({"detail": {"status": "overloaded", "message": "try later"}})
        writer.write(_head(503, {"content-type": "application/json", "content-length": str(1 << 30)}))
        writer.write(text.encode())
        while True:  # then a gigabyte of JSON whitespace, as fast as the socket takes it
            writer.write(b" " * 65536)
            await writer.drain()

    started = time.monotonic()
    error = await _fails(_elevenlabs(raw(handler).url, timeout_s=5), within_s=4)
    assert time.monotonic() - started < 1.5
    assert error.message.startswith("HTTP 503: try later") and error.retryable and error.status == 503


async def test_a_dripping_answer_times_out_at_the_providers_timeout(raw, keys):
    async def handler(rec, writer):
        writer.write(_head(200, {"content-type": "audio/pcm", "content-length": "400"}))
        for _ in range(400):  # 40 s: every read arrives well within the read timeout
            writer.write(b"\0")
            await writer.drain()
            await asyncio.sleep(0.1)

    started = time.monotonic()
    error = await _fails(_elevenlabs(raw(handler).url, timeout_s=1), within_s=3)
    assert 0.9 < time.monotonic() - started < 2.0
    assert "timeout" in error.message and "within 1 s" in error.message and error.retryable


# --------------------------------------------------------------------------- rate-limit headers


@pytest.mark.parametrize(
    "headers,expected",
    [
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "1e400"}, None),
        ({"retry-after": "1_000"}, None),
        ({"retry-after-ms": "NaN", "retry-after": "2"}, 2.0),
        ({"retry-after-ms": "-1", "retry-after": "3"}, 3.0),
        ({"x-ratelimit-reset-requests": "1e400", "x-ratelimit-remaining-requests": "0"}, None),
        ({"x-ratelimit-reset-requests": "9" * 400, "x-ratelimit-remaining-requests": "0"}, None),
    ],
)
async def test_absurd_rate_limit_headers_are_ignored_not_obeyed(server, keys, headers, expected):
    # before: -5 and nan meant "retry at once, no backoff", inf a wait of for ever
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    server.inject("speech", Fault(status=429, headers=headers, body=body))
    error = await _fails(_openai(server.url))
    assert error.retryable and error.status == 429
    assert error.retry_after_s == expected


# --------------------------------------------------------------------------- error and answer shapes


@pytest.mark.parametrize(
    "body",
    [
        {"detail": [{"loc": 5, "msg": "server busy"}]},
        {"detail": [{"loc": None, "msg": "server busy"}]},
        b"[" * 100_000,
    ],
    ids=["loc-int", "loc-null", "deep-nesting"],
)
async def test_an_odd_error_body_keeps_the_status_verdict(raw, keys, body):
    error = await _fails(_elevenlabs(raw(_answer(_json(503, body))).url))
    assert error.message.startswith("HTTP 503: ") and error.retryable and error.status == 503


async def test_a_deeply_nested_json_answer_is_a_malformed_answer(raw):
    error = await _fails(_a1111(raw(_answer(_json(200, b"[" * 100_000 + b"]" * 100_000))).url), PAGE)
    assert "is not JSON" in error.message and not error.retryable


def _png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG (8-bit RGB) of the given header size around the given compressed pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` around 64 bytes of pixels."""
    return _png(width, height, zlib.compress(b"\0" * 64))


@functools.cache
def _big_blank_png(width: int, height: int) -> bytes:
    """A complete, valid PNG of zeros (small on disk, width x height x 3 bytes decoded)."""
    compressor = zlib.compressobj(1)
    row = b"\0" * (width * 3 + 1)
    return _png(width, height, b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush())


@pytest.mark.parametrize(
    "image,needle",
    [
        (lambda: _png_header_only(60_000, 60_000), "too large to decode"),  # Pillow's bomb error
        (lambda: _big_blank_png(9000, 8000), "claims 9000x8000 pixels"),  # valid, 216 MB decoded
    ],
    ids=["bomb-header", "72-megapixels"],
)
async def test_an_image_claiming_enormous_dimensions_is_refused_before_decoding(raw, image, needle):
    payload = {"images": [base64.b64encode(image()).decode()], "info": "{}"}
    error = await _fails(_a1111(raw(_answer(_json(200, payload))).url), PAGE)
    assert needle in error.message and not error.retryable


@pytest.mark.parametrize("seed", [True, -3, 2**70])
async def test_a1111_records_no_seed_it_could_not_store(raw, seed):
    info = json.dumps({"seed": seed, "all_seeds": [seed], "sd_model_name": {"not": "a name"}})
    payload = {"images": [base64.b64encode(png_file(64, 48, 1)).decode()], "info": info}
    provider = _a1111(raw(_answer(_json(200, payload))).url)
    try:
        out = await provider.generate(PAGE)
    finally:
        await provider.aclose()
    assert out.seed is None and out.model is None


def test_a1111_info_of_the_wrong_types_does_not_crash_the_run(tmp_path, server):
    info = json.dumps({"seed": 2**70, "sd_model_name": {"name": ["v1-5"]}})
    server.inject(
        "txt2img",
        Fault(status=200, body={"images": [base64.b64encode(png_file(128, 96, 1)).decode()], "info": info}),
    )
    # before: sqlite3 could not bind the dict nor the 70-bit seed, and the run died
    _, store = run_engine(http_project(tmp_path, server, pages="a1111", page_count=1), timeout_s=30)
    items = store.items("pages")
    assert items and all(item.status == "completed" for item in items), [i.last_error for i in items]
