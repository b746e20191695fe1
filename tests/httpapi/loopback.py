"""A loopback HTTP/1.1 server that speaks the OpenAI, AUTOMATIC1111 and ElevenLabs protocols.

Real sockets, real HTTP (``h11``, the sans-IO HTTP/1.1 library httpx itself is
built on), keep-alive, the real request and response shapes and error bodies,
and injectable faults. Used by the tests (in a thread: :class:`LoopbackServer`)
and by ``bench/http.py`` (in its own process: ``python tests/httpapi/loopback.py``).

Routes (``route`` names used by :meth:`LoopbackServer.inject`):

=============  ==============================================  ==========================
route          endpoint                                        answer
=============  ==============================================  ==========================
speech         POST /v1/audio/speech                           WAV (or raw PCM) bytes
generations    POST /v1/images/generations                     {"data": [{"b64_json"}]} or url
edits          POST /v1/images/edits (multipart/form-data)     {"data": [{"b64_json"}]}
asset          GET  /files/NAME.png                            PNG bytes (for url answers)
txt2img        POST /sdapi/v1/txt2img                          {"images", "parameters", "info"}
img2img        POST /sdapi/v1/img2img                          same
upscale        POST /sdapi/v1/extra-single-image               {"image", "html_info"}
elevenlabs     POST /v1/text-to-speech/{voice_id}              raw PCM at ?output_format
stats          GET  /_stats                                    counters (JSON)
=============  ==============================================  ==========================

Faults (:class:`Fault`) are consumed in order per route; each may answer with a
status, headers and body, sleep first, drop the connection, truncate the body,
or corrupt the payload (bad base64, wrong content, wrong sample rate).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import email.parser
import email.policy
import functools
import io
import json
import math
import random
import sys
import threading
import time
import wave
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import h11

API_KEY = "sk-loopback-0123456789abcdefSECRET"
XI_KEY = "xi-loopback-9876543210SECRET"
BASIC = ("painter", "s3cret-password")


@dataclass
class Fault:
    """One injected misbehaviour.

    Attributes:
        status: answer with this status (and ``body``/``headers``) instead of the real thing.
        headers: extra response headers.
        body: the response body (dict -> JSON).
        delay_s: sleep this long before answering.
        drop: close the connection without any answer.
        truncate: announce the full Content-Length but send half the body, then close.
        corrupt: ``bad_base64`` | ``wrong_content`` | ``wrong_rate`` | ``not_json``.
    """

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay_s: float = 0.0
    drop: bool = False
    truncate: bool = False
    corrupt: str | None = None


@dataclass
class Recorded:
    """A request as received: method, path, query, headers (lower-case names), body, parsed parts."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    time: float
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)  # multipart: name -> str or (filename, mime, bytes)
    status: int = 0


@functools.lru_cache(maxsize=8)
def _tone_table(rate: int) -> bytes:
    """2 s of a quiet 220 Hz tone with a little noise at ``rate`` Hz, 16-bit little-endian mono."""
    rng = random.Random(rate)
    samples = array.array(
        "h",
        (int(6000 * math.sin(2 * math.pi * 220 * i / rate)) + rng.randint(-50, 50) for i in range(2 * rate)),
    )
    return samples.tobytes() if sys.byteorder == "little" else _swapped(samples)


def _swapped(samples: array.array) -> bytes:
    samples.byteswap()
    return samples.tobytes()


@functools.lru_cache(maxsize=1024)
def tone_pcm(seconds: float, rate: int, seed: int = 0) -> bytes:
    """Up to 2 s of tone (see :func:`_tone_table`), starting ``seed`` samples in; at least one sample."""
    table = _tone_table(rate)
    n = max(1, min(int(seconds * rate), 2 * rate))
    start = 2 * (seed % rate)
    return (table[start:] + table[:start])[: 2 * n]


@functools.lru_cache(maxsize=1024)
def wav_file(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


_PNG_CACHE: dict[tuple[int, int, int], bytes] = {}


def png_file(width: int, height: int, seed: int) -> bytes:
    """A small-to-encode PNG of the given size whose colour follows the seed."""
    key = (width, height, seed % 4096)
    if key not in _PNG_CACHE:
        from PIL import Image

        rng = random.Random(seed)
        img = Image.new("RGB", (width, height), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        img.putpixel((0, 0), (seed % 256, 0, 0))
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
        _PNG_CACHE[key] = buf.getvalue()
    return _PNG_CACHE[key]


class _Background:
    """An asyncio server on a free loopback port, served from a background thread: :meth:`start`,
    :meth:`stop`; a subclass sets up ``_init_background()`` and defines ``serve()`` (awaiting
    :meth:`_listen`) and ``_connection(reader, writer)``."""

    def _init_background(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    async def serve(self, port: int = 0) -> None:  # pragma: no cover - each subclass has its own
        raise NotImplementedError

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError  # pragma: no cover

    def start(self) -> Self:
        """Serve on a free port in a background thread; returns self once listening."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        """Stop the background server (connections still open are abandoned)."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(5)

    async def _listen(self, port: int = 0, **kwargs: Any) -> None:
        """Listen on 127.0.0.1:``port`` (0: a free one) until closed; ``kwargs`` go to
        ``asyncio.start_server`` (``backlog``, ``ssl``)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", port, **kwargs)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            async with self._server:
                await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    @staticmethod
    async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader):
        """The next request on a connection: ``(h11.Request, body)``, or ``(None, b"")`` when the
        client closed it first."""
        request = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data and conn.their_state is h11.IDLE:
                    return None, b""
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return request, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None, b""


class LoopbackServer(_Background):
    """The server. Start with :meth:`start` (a background thread) or ``await serve()``.

    Args:
        latency_s: time every answer takes (on top of any fault delay).
        limit_rps: when set, more than this many requests in any sliding 1 s window get
            HTTP 429 with ``retry-after-ms`` (the bench's rate-limited server).
        speech_rate: sample rate of ``/v1/audio/speech`` WAVs, Hz.
        check_auth: require the keys above (401/403 in each API's error shape otherwise).
        basic_auth: require HTTP Basic auth on /sdapi routes.
        max_concurrent: ElevenLabs-style limit on requests in flight (429 too_many_concurrent_requests).
    """

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        limit_rps: float | None = None,
        speech_rate: int = 24_000,
        check_auth: bool = True,
        basic_auth: bool = False,
        max_concurrent: int | None = None,
    ):
        self.latency_s = latency_s
        self.limit_rps = limit_rps
        self.speech_rate = speech_rate
        self.check_auth = check_auth
        self.basic_auth = basic_auth
        self.max_concurrent = max_concurrent
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.requests: list[Recorded] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.rate_limited: list[float] = []  # times of 429s sent by the rate limiter
        self.in_flight = 0
        self.max_in_flight = 0
        self._init_background()
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        self.started = time.monotonic()
        for rate in (speech_rate, 22_050):  # build the tone tables now, not inside the first answers
            _tone_table(rate)

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, route: str, *faults: Fault) -> None:
        """Queue faults for ``route``; each is used by one request, in order."""
        with self._lock:
            self.faults[route].extend(faults)

    def of(self, route: str) -> list[Recorded]:
        """The recorded requests of one route."""
        return [r for r in self.requests if _route(r.method, r.path) == route]

    async def serve(self, port: int = 0) -> None:
        """Serve until closed (also the entry point of the subprocess mode)."""
        self.started = time.monotonic()
        await self._listen(port, backlog=512)

    # ------------------------------------------------------------------ HTTP plumbing

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request, body = await self._read_request(conn, reader)
                if request is None:
                    break
                keep = await self._respond(conn, writer, request, body)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    break
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    break
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _respond(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, body: bytes
    ) -> bool:
        target = request.target.decode()
        parts = urlsplit(target)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        rec = Recorded(
            request.method.decode(), parts.path, parse_qs(parts.query), headers, body, time.monotonic()
        )
        if headers.get("content-type", "").startswith("application/json") and body:
            try:
                rec.json = json.loads(body)
            except ValueError:
                rec.json = None
        if headers.get("content-type", "").startswith("multipart/form-data"):
            rec.form = _parse_multipart(headers["content-type"], body)
        route = _route(rec.method, rec.path)
        if route != "stats":
            with self._lock:
                self.requests.append(rec)
                self.counts[route] += 1
        fault = None
        with self._lock:
            if self.faults.get(route):
                fault = self.faults[route].popleft()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            status, resp_headers, payload = await self._answer(route, rec, fault)
        finally:
            self.in_flight -= 1
        rec.status = status
        if fault is not None and fault.drop:
            return False
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload).encode()
            resp_headers.setdefault("content-type", "application/json")
        hdrs = [(k, v) for k, v in resp_headers.items()]
        hdrs.append(("content-length", str(len(payload))))
        head = conn.send(h11.Response(status_code=status, headers=hdrs))
        if fault is not None and fault.truncate:
            writer.write(head + payload[: len(payload) // 2])
            await writer.drain()
            return False
        # one write: head and body leave in as few segments as the socket allows
        writer.write(head + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    # ------------------------------------------------------------------ the APIs

    async def _answer(
        self, route: str, rec: Recorded, fault: Fault | None
    ) -> tuple[int, dict[str, str], Any]:
        if route == "stats":
            if "reset" in rec.query:
                with self._lock:
                    self.requests.clear()
                    self.counts.clear()
                    self.rate_limited.clear()
                    self._window.clear()
                    self.max_in_flight = 0
                    self.started = time.monotonic()
            return 200, {}, self.stats()
        if route == "unknown":
            return 404, {}, {"detail": "Not Found"}
        if self.max_concurrent is not None and route == "elevenlabs" and self.in_flight > self.max_concurrent:
            await asyncio.sleep(0.01)
            return (
                429,
                {},
                {
                    "detail": {
                        "status": "too_many_concurrent_requests",
                        "message": "Too many concurrent requests for your plan.",
                    }
                },
            )
        if self.limit_rps is not None:
            now = time.monotonic()
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= self.limit_rps:
                self.rate_limited.append(now - self.started)
                wait_ms = max(1, int((window[0] + 1.0 - now) * 1000))
                return (
                    429,
                    {
                        "retry-after-ms": str(wait_ms),
                        "x-ratelimit-limit-requests": str(self.limit_rps),
                        "x-ratelimit-remaining-requests": "0",
                    },
                    {
                        "error": {
                            "message": "Rate limit reached for requests",
                            "type": "requests",
                            "param": None,
                            "code": "rate_limit_exceeded",
                        }
                    },
                )
            window.append(now)
        delay = self.latency_s + (fault.delay_s if fault else 0.0)
        if delay:
            await asyncio.sleep(delay)
        if fault is not None and fault.status is not None:
            return fault.status, dict(fault.headers), fault.body if fault.body is not None else b""
        auth = self._auth_error(route, rec)
        if auth is not None:
            return auth
        handler = getattr(self, f"_{route}")
        status, headers, payload = handler(rec, fault.corrupt if fault else None)
        if fault is not None:
            headers.update(fault.headers)
        return status, headers, payload

    def _auth_error(self, route: str, rec: Recorded):
        if route in ("speech", "generations", "edits") and self.check_auth:
            if rec.headers.get("authorization") != f"Bearer {API_KEY}":
                given = rec.headers.get("authorization", "").removeprefix("Bearer ")
                # OpenAI echoes a masked key; echo it whole here to prove the client redacts it
                return (
                    401,
                    {},
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {given}.",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                )
        if route == "elevenlabs" and self.check_auth and rec.headers.get("xi-api-key") != XI_KEY:
            return 401, {}, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}
        if route in ("txt2img", "img2img", "upscale") and self.basic_auth:
            expected = "Basic " + base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
            if rec.headers.get("authorization") != expected:
                return 401, {"www-authenticate": "Basic"}, {"detail": "Incorrect username or password"}
        return None

    def _speech(self, rec: Recorded, corrupt: str | None):
        body = rec.json or {}
        missing = [k for k in ("model", "input", "voice") if not body.get(k)]
        if missing:
            return (
                400,
                {},
                {
                    "error": {
                        "message": f"Missing required parameter: '{missing[0]}'.",
                        "type": "invalid_request_error",
                        "param": missing[0],
                        "code": None,
                    }
                },
            )
        rate = 16_000 if corrupt == "wrong_rate" else self.speech_rate
        pcm = tone_pcm(min(2.0, 0.04 * len(body["input"])), rate, len(body["input"]))
        if corrupt == "wrong_content":
            return (
                200,
                {"content-type": "audio/wav"},
                b"<html><body>Service temporarily unavailable</body></html>",
            )
        if body.get("response_format") == "pcm":
            return 200, {"content-type": "audio/pcm"}, pcm
        return 200, {"content-type": "audio/wav"}, wav_file(pcm, rate)

    def _image_data(self, corrupt: str | None, width: int, height: int, seed: int, as_url: bool = False):
        if corrupt == "bad_base64":
            return {"created": int(time.time()), "data": [{"b64_json": "iVBORw0KGgo***not-base64***"}]}
        data = png_file(width, height, seed)
        if corrupt == "wrong_content":
            data = b"GIF89a" + b"\0" * 32
        if as_url:
            name = f"img_{width}x{height}_{seed}.png"
            return {"created": int(time.time()), "data": [{"url": f"{self.url}/files/{name}"}]}
        return {
            "created": int(time.time()),
            "data": [{"b64_json": base64.b64encode(data).decode(), "revised_prompt": None}],
        }

    def _generations(self, rec: Recorded, corrupt: str | None):
        body = rec.json or {}
        if not body.get("prompt"):
            return (
                400,
                {},
                {
                    "error": {
                        "message": "Missing required parameter: 'prompt'.",
                        "type": "invalid_request_error",
                        "param": "prompt",
                        "code": None,
                    }
                },
            )
        try:
            width, height = (int(v) for v in str(body.get("size", "1024x1024")).split("x"))
        except ValueError:
            return (
                400,
                {},
                {
                    "error": {
                        "message": f"Invalid value: '{body.get('size')}'.",
                        "type": "invalid_request_error",
                        "param": "size",
                        "code": "invalid_value",
                    }
                },
            )
        if corrupt == "not_json":
            return 200, {"content-type": "text/html"}, b"<html>oops</html>"
        seed = len(self.requests)
        return 200, {}, self._image_data(corrupt, width, height, seed, body.get("response_format") == "url")

    def _edits(self, rec: Recorded, corrupt: str | None):
        image = rec.form.get("image")
        if not isinstance(image, tuple) or image[1] not in ("image/png", "image/jpeg", "image/webp"):
            return (
                400,
                {},
                {
                    "error": {
                        "message": "Invalid file 'image': unsupported mimetype "
                        f"('{image[1] if isinstance(image, tuple) else None}').",
                        "type": "invalid_request_error",
                        "param": "image",
                        "code": "unsupported_file_mimetype",
                    }
                },
            )
        if not rec.form.get("prompt"):
            return (
                400,
                {},
                {
                    "error": {
                        "message": "Missing required parameter: 'prompt'.",
                        "type": "invalid_request_error",
                        "param": "prompt",
                        "code": None,
                    }
                },
            )
        return 200, {}, self._image_data(corrupt, 64, 48, len(self.requests))

    def _asset(self, rec: Recorded, corrupt: str | None):
        name = rec.path.rsplit("/", 1)[1].removesuffix(".png")
        _, size, seed = name.split("_")
        width, height = (int(v) for v in size.split("x"))
        return 200, {"content-type": "image/png"}, png_file(width, height, int(seed))

    def _sd(self, rec: Recorded, corrupt: str | None, img2img: bool):
        body = rec.json
        if not isinstance(body, dict):
            return (
                422,
                {},
                {"detail": [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]},
            )
        if img2img:
            init = body.get("init_images")
            if not isinstance(init, list) or not init:
                return (
                    422,
                    {},
                    {
                        "detail": [
                            {
                                "loc": ["body", "init_images"],
                                "msg": "field required",
                                "type": "value_error.missing",
                            }
                        ]
                    },
                )
            try:
                base64.b64decode(init[0], validate=True)
            except ValueError:
                return (
                    500,
                    {},
                    {"error": "Exception", "detail": "", "body": "", "errors": "Invalid encoded image"},
                )
        width, height = int(body.get("width", 512)), int(body.get("height", 512))
        if width % 8 or height % 8:
            return (
                500,
                {},
                {
                    "error": "RuntimeError",
                    "detail": "",
                    "body": "",
                    "errors": f"width and height must be multiples of 8, got {width}x{height}",
                },
            )
        seed = int(body.get("seed", -1))
        used = seed if seed >= 0 else random.randrange(2**32)
        info = json.dumps(
            {
                "prompt": body.get("prompt", ""),
                "seed": used,
                "all_seeds": [used],
                "width": width,
                "height": height,
                "sd_model_name": "v1-5-pruned-emaonly",
                "denoising_strength": body.get("denoising_strength"),
            }
        )
        if corrupt == "bad_base64":
            image = "####"
        elif corrupt == "wrong_content":
            image = base64.b64encode(b"this is not an image at all").decode()
        else:
            image = base64.b64encode(png_file(width, height, used)).decode()
        return 200, {}, {"images": [image], "parameters": body, "info": info}

    def _txt2img(self, rec: Recorded, corrupt: str | None):
        return self._sd(rec, corrupt, False)

    def _img2img(self, rec: Recorded, corrupt: str | None):
        return self._sd(rec, corrupt, True)

    def _upscale(self, rec: Recorded, corrupt: str | None):
        from PIL import Image

        body = rec.json or {}
        src = Image.open(io.BytesIO(base64.b64decode(body["image"])))
        scale = float(body.get("upscaling_resize", 2))
        big = src.convert("RGB").resize((int(src.width * scale), int(src.height * scale)))
        buf = io.BytesIO()
        big.save(buf, "PNG")
        return 200, {}, {"image": base64.b64encode(buf.getvalue()).decode(), "html_info": "<p>upscaled</p>"}

    def _elevenlabs(self, rec: Recorded, corrupt: str | None):
        body = rec.json or {}
        fmt = (rec.query.get("output_format") or ["mp3_44100_128"])[0]
        if not body.get("text"):
            return (
                422,
                {},
                {
                    "detail": [
                        {"loc": ["body", "text"], "msg": "field required", "type": "value_error.missing"}
                    ]
                },
            )
        if not fmt.startswith("pcm_"):
            return 200, {"content-type": "audio/mpeg"}, b"ID3" + b"\0" * 64
        rate = int(fmt.split("_")[1])
        pcm = tone_pcm(min(2.0, 0.04 * len(body["text"])), rate, len(body["text"]))
        if corrupt == "wrong_content":
            return 200, {"content-type": "application/json"}, {"message": "queued"}
        if corrupt == "truncated_sample":
            pcm = pcm[:-1]
        return 200, {"content-type": "audio/pcm"}, pcm

    def stats(self) -> dict[str, Any]:
        """Counters: requests per route, times of the rate limiter's 429s and of every request
        (seconds since start or the last ``GET /_stats?reset``), the most requests in flight."""
        return {
            "counts": dict(self.counts),
            "rate_limited": list(self.rate_limited),
            "total": len(self.requests),
            "max_in_flight": self.max_in_flight,
            "request_times": [round(r.time - self.started, 4) for r in self.requests],
        }


class RawServer(_Background):
    """A loopback server whose answers are raw bytes written by a test (hostile servers).

    Each connection carries one request: it is parsed (``h11``) and recorded in
    :attr:`requests`, then ``handler(recorded, writer)`` writes whatever it likes (a
    redirect, a drip, a lying Content-Length, gigabytes); the connection is closed after.
    Optionally TLS (``ssl``: a server-side ``ssl.SSLContext``).

    Args:
        handler: ``async (Recorded, asyncio.StreamWriter) -> None``.
        ssl: a server-side TLS context, or None for plain HTTP.
    """

    def __init__(self, handler: Any, ssl: Any = None):
        self.handler = handler
        self.ssl = ssl
        self.requests: list[Recorded] = []
        self._init_background()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def serve(self, port: int = 0) -> None:
        """Serve until closed."""
        await self._listen(port, ssl=self.ssl)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            request, body = await self._read_request(conn, reader)
            if request is None:
                return
            parts = urlsplit(request.target.decode())
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            rec = Recorded(
                request.method.decode(), parts.path, parse_qs(parts.query), headers, body, time.monotonic()
            )
            self.requests.append(rec)
            await self.handler(rec, writer)
            await writer.drain()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _route(method: str, path: str) -> str:
    if path == "/_stats":
        return "stats"
    if method == "GET" and path.startswith("/files/"):
        return "asset"
    if method != "POST":
        return "unknown"
    if path.endswith("/audio/speech"):
        return "speech"
    if path.endswith("/images/generations"):
        return "generations"
    if path.endswith("/images/edits"):
        return "edits"
    if path == "/sdapi/v1/txt2img":
        return "txt2img"
    if path == "/sdapi/v1/img2img":
        return "img2img"
    if path == "/sdapi/v1/extra-single-image":
        return "upscale"
    if path.startswith("/v1/text-to-speech/"):
        return "elevenlabs"
    return "unknown"


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """name -> value (str) or (filename, content type, bytes) for file parts."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    form: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None:
            form[name] = (filename, part.get_content_type(), payload)
        else:
            form[name] = payload.decode()
    return form


def main() -> None:
    """Subprocess mode for the benchmark: prints the port, serves until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--limit-rps", type=float, default=None)
    args = parser.parse_args()
    server = LoopbackServer(latency_s=args.latency_ms / 1000.0, limit_rps=args.limit_rps)

    async def run() -> None:
        task = asyncio.create_task(server.serve(args.port))
        while not server.port:  # noqa: ASYNC110 - polls the port the server sets once it listens
            await asyncio.sleep(0.01)
        print(server.port, flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
