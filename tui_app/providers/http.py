"""What the HTTP providers share: an httpx client, error mapping, rate-limit headers, checks.

Every HTTP provider (``openai``, ``a1111``, ``elevenlabs``) sends its requests
through :class:`HttpClient`, which

* pools connections, sized to the provider's concurrency (``httpx.Limits``),
  with separate connect and read timeouts from the config;
* turns transport faults into retryable :class:`ProviderError` s (timeouts,
  refused or dropped connections, truncated bodies), and bounds the whole exchange,
  request sent to body read, by the provider's ``timeout_s`` (a server that drips its
  answer a byte at a time never trips httpx's per-read timeout);
* reads every body streamed, decoded, and refuses one over :data:`MAX_BODY_BYTES`
  (a gzip bomb or an endless stream costs no more memory than that);
* sends credential headers (``Authorization``, ``xi-api-key``, ...) only to the origin
  of ``base_url``: a redirect elsewhere, or an absolute URL in an answer, gets none;
* turns non-2xx answers into :class:`ProviderError` s carrying the server's own
  message, parsed from each API's error shape (:func:`error_detail`), whether to
  retry (:func:`is_retryable_status`, never ``insufficient_quota``/``quota_exceeded``),
  and how long the whole provider must wait (:func:`retry_after_seconds`);
* reads secrets from the environment (:func:`read_secret`), registers them with
  :func:`tui_app.redact.register_secret` at once and refuses, before any request, one
  that is not a valid HTTP header value (:func:`header_value_problem`); every message is
  redacted before it is shortened (:func:`tui_app.redact.clip`), and
  :class:`ProviderError` redacts whatever it is given.

The engine applies the verdict: backoff, a provider-wide cooldown, or a failed item.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import io
import json
import math
import os
import re
import time
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx

from ..media import image_info, wav_bytes, wav_info
from ..redact import clip, redact, register_secret
from ..settings import ProviderConfig
from .base import ProviderError, is_retryable_status

#: Error codes that mean "stop": retrying cannot help (OpenAI, ElevenLabs).
NEVER_RETRY_CODES = frozenset(
    {"insufficient_quota", "quota_exceeded", "invalid_api_key", "billing_hard_limit_reached"}
)
#: ElevenLabs' answer when more requests are in flight than the plan allows.
TOO_MANY_CONCURRENT = "too_many_concurrent_requests"

#: Most connections per httpx client; larger pools are split (see HttpClient).
SHARD_SIZE = 8
_MIB = 1024 * 1024
#: Largest answer body read, in bytes after decoding (gzip, deflate): 256 MiB, far above any
#: image or clip. A larger one (by its Content-Length, or once that much has arrived) fails
#: the item, not retryable, and is never held whole in memory.
MAX_BODY_BYTES = 256 * _MIB
#: Bytes of an error (non-2xx) body read for its message; the rest is discarded.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Most pixels of an image from a server (8192 x 8192, 256 MiB as RGBA), read from its header
#: before it is decoded: a small file claiming enormous dimensions (a decompression bomb) is refused.
MAX_IMAGE_PIXELS = 8192 * 8192
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_IMAGE_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
_IMAGE_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


# --------------------------------------------------------------------------- headers


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value: ``"1s"``, ``"6m0s"``, ``"20ms"``, ``"1h2m3.5s"`` or ``"0.5"``.

    The Go-style duration strings are what OpenAI sends in ``x-ratelimit-reset-requests``
    and ``x-ratelimit-reset-tokens``; a bare number is taken as seconds. None when unparsable,
    negative, or not finite (``nan``, ``inf``, ``1e400``, hundreds of digits).
    """
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return _finite(float(text))
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return _finite(sum(float(n) * scale[u] for n, u in parts))


def _finite(seconds: float) -> float | None:
    """``seconds`` when finite, else None (a header of hundreds of digits overflows to inf)."""
    return seconds if math.isfinite(seconds) else None


def _delta_seconds(text: str, scale: float = 1.0) -> float | None:
    """A non-negative decimal number times ``scale``, or None (``-1``, ``nan``, ``inf``, ``1_0``, text)."""
    text = text.strip()
    return _finite(float(text) * scale) if _NUMBER.fullmatch(text) else None


def retry_after_seconds(headers: Mapping[str, str], status: int, now: float | None = None) -> float | None:
    """The delay a server asks for before the next request, in seconds, or None.

    In order of precedence: ``retry-after-ms`` (milliseconds, as OpenAI sends it),
    ``retry-after`` (delta-seconds or an HTTP-date, RFC 9110 section 10.2.3), and, for a
    429 only, the ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` durations
    (the one whose ``x-ratelimit-remaining-*`` is 0, else the longer one). A header whose
    value is not a non-negative finite number (``-5``, ``nan``, ``inf``, garbage) is ignored,
    so the next one, or the engine's backoff, applies. A date in the past gives 0; a far
    future one its (large) distance: the engine caps every wait (``max_retry_after_s``, 120 s).

    Args:
        headers: response headers (case-insensitive mapping such as ``httpx.Headers``).
        status: the HTTP status code.
        now: the current Unix time, seconds (for HTTP-dates; defaults to ``time.time()``).
    """
    value = headers.get("retry-after-ms")
    seconds = _delta_seconds(value, 0.001) if value is not None else None
    if seconds is not None:
        return seconds
    value = headers.get("retry-after")
    if value is not None:
        seconds = _delta_seconds(value)
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    if status != 429:
        return None
    resets: list[float] = []
    for kind in ("requests", "tokens"):
        raw = headers.get(f"x-ratelimit-reset-{kind}")
        seconds = parse_duration(raw) if raw is not None else None
        if seconds is None:
            continue
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0":
            return seconds
        resets.append(seconds)
    return max(resets) if resets else None


# --------------------------------------------------------------------------- error bodies


def error_detail(body: bytes) -> tuple[str, str | None]:
    """``(message, code)`` from an error response body, whatever API sent it.

    Shapes understood:

    * OpenAI: ``{"error": {"message", "type", "param", "code"}}``
    * ElevenLabs: ``{"detail": {"status", "message"}}``
    * FastAPI / Kokoro-FastAPI / A1111 validation: ``{"detail": "text"}`` or
      ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``
    * A1111 exceptions:
      ``{"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory"}``

    Anything else gives the body on one line. Messages are redacted
    (:func:`tui_app.redact.redact`) and only then cut to 200 characters.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text[:1] in "{[" else None
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):  # OpenAI
            code = err.get("code") or err.get("type")
            message = str(err.get("message") or code or "error")
            if err.get("param"):
                message += f" (param: {err['param']})"
            return _one_line(message), str(code) if code else None
        detail = data.get("detail")
        if isinstance(detail, dict):  # ElevenLabs
            code = detail.get("status") or detail.get("code")
            return _one_line(str(detail.get("message") or code or "error")), str(code) if code else None
        if isinstance(detail, list) and detail:  # FastAPI validation errors
            parts = []
            for entry in detail[:5]:
                if isinstance(entry, dict):
                    where = entry.get("loc")
                    loc = [str(p) for p in where if p != "body"] if isinstance(where, list) else []
                    parts.append(
                        f"{'.'.join(loc)}: {entry.get('msg', '')}" if loc else str(entry.get("msg", ""))
                    )
                else:
                    parts.append(str(entry))
            return _one_line("; ".join(parts)), None
        if isinstance(err, str) and err:  # A1111 exception handler
            extra = data.get("errors") or data.get("detail") or data.get("body") or ""
            return _one_line(f"{err}: {extra}" if extra else err), None
        if isinstance(detail, str) and detail:
            return _one_line(detail), None
        for key in ("message", "msg"):
            if isinstance(data.get(key), str):
                return _one_line(data[key]), None
    if not text:
        return "empty body", None
    return _one_line(text), None


def _one_line(text: str, limit: int = 200) -> str:
    """``text`` redacted, on one line, and only then cut to ``limit`` characters."""
    return clip(" ".join(redact(text).split()), limit)


# --------------------------------------------------------------------------- payload checks


def decode_b64(data: Any, what: str) -> bytes:
    """Bytes of a base64 string from a JSON answer.

    Raises:
        ProviderError: not a string, or not valid base64 (not retryable).
    """
    if not isinstance(data, str) or not data:
        raise ProviderError(f"malformed answer: {what} is missing or not a base64 string")
    if data.startswith("data:") and "," in data:  # data URL, as some servers send
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError(f"malformed answer: {what} is not valid base64") from None


def check_image(
    data: bytes, what: str = "the image", max_pixels: int | None = MAX_IMAGE_PIXELS
) -> tuple[int, int, str, str]:
    """``(width, height, suffix, mime)`` of PNG, JPEG or WebP bytes after a full decode.

    The header's dimensions are checked first: an image of more than ``max_pixels`` pixels
    (default :data:`MAX_IMAGE_PIXELS`; None: Pillow's own limit only) is never decoded.

    Raises:
        ProviderError: not a decodable PNG/JPEG/WebP, or too many pixels (not retryable).
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                size = img.size
    except Image.DecompressionBombError as exc:
        raise ProviderError(f"{what} is too large to decode ({exc})") from None
    except Exception:  # noqa: BLE001 - image_info below says what is wrong
        size = None
    if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
        raise ProviderError(
            f"malformed answer: {what} claims {size[0]}x{size[1]} pixels, more than the "
            f"{max_pixels} allowed (MAX_IMAGE_PIXELS)"
        )
    try:
        width, height, fmt = image_info(data)
    except ValueError as exc:
        raise ProviderError(f"malformed answer: {what} is not a decodable image ({exc})") from None
    if fmt not in _IMAGE_SUFFIX:
        raise ProviderError(f"malformed answer: {what} is {fmt}, expected PNG, JPEG or WebP")
    return width, height, _IMAGE_SUFFIX[fmt], _IMAGE_MIME[fmt]


def check_wav(data: bytes, expected_rate: int | None = None) -> tuple[float, int]:
    """``(duration s, sample rate Hz)`` of a complete 16-bit PCM WAV.

    Raises:
        ProviderError: not a WAV, truncated, not 16-bit, or not at ``expected_rate`` Hz (not retryable).
    """
    try:
        info = wav_info(data)
    except ValueError as exc:
        raise ProviderError(f"malformed answer: {exc}") from None
    if info.sample_width != 2:
        raise ProviderError(f"malformed answer: {8 * info.sample_width}-bit WAV, expected 16-bit PCM")
    if info.frames == 0:
        raise ProviderError("malformed answer: the WAV holds no samples")
    if expected_rate and info.sample_rate != expected_rate:
        raise ProviderError(
            f"wrong sample rate: the WAV is {info.sample_rate} Hz, expected {expected_rate} Hz"
        )
    return info.duration_s, info.sample_rate


_CONTAINER_MAGIC = {
    b"RIFF": "a WAV file",
    b"ID3": "an MP3 file",
    b"\xff\xfb": "an MP3 file",
    b"\xff\xf3": "an MP3 file",
    b"OggS": "an Ogg file",
    b"fLaC": "a FLAC file",
    b"{": "JSON",
    b"<": "HTML or XML",
}


def pcm_to_wav(data: bytes, sample_rate: int) -> tuple[bytes, float]:
    """Wrap raw 16-bit little-endian mono PCM in a WAV; returns ``(wav bytes, duration s)``.

    Raises:
        ProviderError: empty, an odd byte count (a truncated sample), or a container
            or text instead of raw PCM (not retryable).
    """
    if not data:
        raise ProviderError("malformed answer: no audio in the response body")
    for magic, name in _CONTAINER_MAGIC.items():
        if data.startswith(magic):
            raise ProviderError(f"malformed answer: expected raw 16-bit PCM, got {name}")
    if len(data) % 2:
        raise ProviderError(
            f"malformed answer: truncated PCM ({len(data)} bytes is not a whole number of samples)"
        )
    return wav_bytes(data, sample_rate), len(data) / 2 / sample_rate


# --------------------------------------------------------------------------- options


_CHAR_NAMES = {
    "\r": "a carriage return",
    "\n": "a newline",
    "\0": "a NUL character",
    "\t": "a tab",
    " ": "a space",
}


def _char_name(char: str) -> str:
    """How a message names a character of a secret, without showing it."""
    if char in _CHAR_NAMES:
        return _CHAR_NAMES[char]
    if unicodedata.category(char) == "Cc":
        return "a control character"
    if char.isspace():
        return "whitespace"
    if unicodedata.category(char) == "Cs":  # os.environ keeps undecodable bytes as lone surrogates
        return "bytes that are not UTF-8"
    return "a character outside ASCII"


def header_value_problem(value: str, ascii_only: bool = True) -> str | None:
    """What makes ``value`` unfit to send as (part of) an HTTP header value, or None when it fits.

    Refused: leading or trailing whitespace, and anywhere a control character
    (Unicode category Cc: CR, LF, NUL, tab, ESC, DEL, ...) or bytes that are not UTF-8;
    with ``ascii_only`` also any character outside ASCII (httpx encodes ``str`` header
    values as ASCII). A space
    inside is allowed (RFC 9110 field values may hold one). The answer names the kind of
    character, never the value, e.g. ``"it ends with a carriage return"``.

    Args:
        value: the secret, as read from the environment.
        ascii_only: False for a Basic-auth password, which travels base64-encoded (UTF-8).
    """
    if not value:
        return None
    for where, char in (("starts", value[0]), ("ends", value[-1])):
        if char.isspace() or unicodedata.category(char) == "Cc":
            return f"it {where} with {_char_name(char)}"
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs") or (ascii_only and not char.isascii()):
            return f"it contains {_char_name(char)}"
    return None


def read_secret(env_name: str | None, provider: str, ascii_only: bool = True) -> str | None:
    """The value of the environment variable ``env_name`` (None when ``env_name`` is empty).

    The value is registered with :func:`tui_app.redact.register_secret` as soon as it is
    read, then checked with :func:`header_value_problem`, before any request is sent.

    Args:
        env_name: the variable named in the config (``api_key_env``, ``password_env``).
        provider: the provider's name, for messages.
        ascii_only: see :func:`header_value_problem` (False for a Basic-auth password).

    Raises:
        ProviderError: the variable is named but not set or empty, or its value is not a
            valid HTTP header value (one line naming the variable and the problem, never the value).
    """
    if not env_name:
        return None
    value = os.environ.get(env_name, "")
    if not value:
        raise ProviderError(
            f"provider {provider!r}: the environment variable {env_name} is not set "
            f'(it should hold the API key; set api_key_env = "" for a server without one)'
        )
    register_secret(value)
    problem = header_value_problem(value, ascii_only)
    if problem:
        raise ProviderError(
            f"providers.{provider}: environment variable {env_name} is not a valid HTTP header value "
            f"({problem}); fix the variable"
        )
    return value


def check_options(
    options: Mapping[str, Any],
    error: Callable[[str, str], Exception],
    kind: str,
    strings: Iterable[str] = (),
    numbers: Iterable[str] = (),
    allowed: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Config-time checks shared by the HTTP providers: known keys and their types.

    Raises:
        ConfigError: built by ``error(key, message)`` for the first unknown or mistyped key.
    """
    strings = set(strings) | {"base_url"}
    numbers = set(numbers) | {"connect_timeout_s", "read_timeout_s"}
    known = strings | numbers
    for key, value in options.items():
        if key not in known:
            raise error(key, f"unknown key for a provider of kind {kind} (known: {', '.join(sorted(known))})")
        if key in strings and not isinstance(value, str):
            raise error(key, f"must be a string, got {value!r}")
        if key in numbers and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (value == 0 and key.endswith("_s"))
        ):
            raise error(key, f"must be a number {'> 0' if key.endswith('_s') else '>= 0'}, got {value!r}")
        if allowed and key in allowed and value not in allowed[key]:
            raise error(key, f"must be one of {', '.join(map(str, allowed[key]))}, got {value!r}")
    base = options.get("base_url")
    if base is not None and not re.match(r"https?://[^/\s]+", base):
        raise error("base_url", f"must be an http:// or https:// URL, got {base!r}")
    if base is not None and re.match(r"https?://[^/@\s]*@", base):
        raise error("base_url", "must not hold credentials: use api_key_env (or username/password_env)")


# --------------------------------------------------------------------------- client


class HttpClient:
    """One provider's connection pool and request helper.

    Args:
        provider: the provider name (for messages).
        base_url: prefix of every relative path (no trailing slash needed).
        concurrency: pool size: connections kept and allowed at once (split over
            ``ceil(concurrency / SHARD_SIZE)`` clients; each request goes to the least busy).
        connect_timeout_s, read_timeout_s: httpx timeouts, seconds (read also bounds writes).
        headers: sent with every request to the origin (scheme, host, port) of ``base_url``
            and to no other: each may hold the API key (it is redacted from messages), so a
            redirect to another origin, even https to http on the same host, goes without them.
        auth: optional ``(username, password)`` for HTTP Basic auth (the password, and the
            base64 token sent, are registered with :func:`tui_app.redact.register_secret`);
            its ``Authorization`` header also goes to ``base_url``'s origin only.
        secrets: strings never to appear in a message (the key, the password); registered
            with :func:`tui_app.redact.register_secret`.
        total_timeout_s: the longest one exchange may take, seconds, from sending the request
            to the last byte of the answer, redirects included (None: no such bound).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        concurrency: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: Iterable[str] = (),
        total_timeout_s: float | None = None,
    ):
        self.provider = provider
        self.total_timeout_s = total_timeout_s
        self._origin = _origin(httpx.URL(base_url))
        self._credential_headers = {name.lower() for name in headers or {}} | {"authorization"}
        self.secrets = [s for s in secrets if s]
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode("utf-8", "surrogateescape"))
            self.secrets += [auth[1], token.decode("ascii")]
        for secret in self.secrets:
            register_secret(secret)
        timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=None
        )
        # httpcore's pool does O(connections x queued requests) work, with a poll() per
        # connection, on every pool event (encode/httpcore#928, #1035): at 32 connections that
        # costs more than the requests. Shards of at most SHARD_SIZE connections keep it small.
        count = max(1, math.ceil(concurrency / SHARD_SIZE))
        per_shard = math.ceil(concurrency / count)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self.shards = [
            httpx.AsyncClient(
                base_url=base_url.rstrip("/") + "/",
                headers=dict(headers or {}),
                auth=auth,
                limits=limits,
                timeout=timeout,
                follow_redirects=True,
                event_hooks={"request": [self._strip_credentials]},  # every hop, redirects too
            )
            for _ in range(count)
        ]
        self._busy = [0] * count
        self.client = self.shards[0]
        self._plain: httpx.AsyncClient | None = None  # for asset URLs on other hosts: no credentials
        self._timeout = timeout

    def error(self, message: str, **kwargs: Any) -> ProviderError:
        """A :class:`ProviderError` (whose constructor removes every registered secret)."""
        return ProviderError(message, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request (``path`` relative to the base URL) and return a 2xx response.

        Keyword arguments go to ``httpx.AsyncClient.request`` (``json``, ``data``,
        ``files``, ``params``, ``headers``).

        Raises:
            ProviderError: transport faults (retryable) or a non-2xx status (see the module doc).
        """
        index = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[index] += 1
        try:
            return await self._send(self.shards[index], method, path.lstrip("/"), **kwargs)
        finally:
            self._busy[index] -= 1

    async def _strip_credentials(self, request: httpx.Request) -> None:
        """httpx request hook: no credential header leaves for an origin other than ``base_url``'s.

        httpx itself drops only ``Authorization`` on a cross-origin redirect, and keeps it from
        http to https on the same host; custom key headers (``xi-api-key``) it keeps everywhere.
        """
        if _origin(request.url) != self._origin:
            for name in self._credential_headers:
                request.headers.pop(name, None)

    async def _send(self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One exchange under ``total_timeout_s``; the body is read (capped) before it returns."""
        try:
            request = client.build_request(method, url, **kwargs)
        except httpx.InvalidURL as exc:
            raise self.error(f"malformed URL: {exc}") from None
        try:
            with anyio.fail_after(self.total_timeout_s):
                return await self._exchange(client, request)
        except TimeoutError:
            raise self.error(
                f"timeout: no complete answer from {request.url.host} within {self.total_timeout_s:g} s",
                retryable=True,
            ) from None

    async def _exchange(self, client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        try:
            if response.status_code >= 300:
                await self._read_body(response, MAX_ERROR_BODY_BYTES, truncate=True)
                raise self.status_error(response)
            await self._read_body(response, MAX_BODY_BYTES)
        finally:
            await response.aclose()
        return response

    async def _read_body(self, response: httpx.Response, limit: int, truncate: bool = False) -> None:
        """Read ``response``'s decoded body, at most ``limit`` bytes, into ``response.content``.

        Raises:
            ProviderError: more than ``limit`` bytes (announced or received) unless ``truncate``
                (not retryable), or a transport fault while reading (retryable).
        """
        declared = response.headers.get("content-length", "")
        if (
            not truncate
            and declared.isdigit()
            and int(declared) > limit
            and response.headers.get("content-encoding", "identity") == "identity"
        ):
            raise self._too_large(f"Content-Length {int(declared)} bytes", limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                if size + len(chunk) > limit:
                    if not truncate:
                        raise self._too_large(f"more than {size + len(chunk)} bytes", limit)
                    chunks.append(chunk[: limit - size])
                    break
                size += len(chunk)
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        response._content = b"".join(chunks)  # what response.aread() sets; .content and .json() read it

    def _too_large(self, size: str, limit: int) -> ProviderError:
        return self.error(
            f"answer too large: {size}, the limit is {limit // _MIB} MiB (MAX_BODY_BYTES)"
            if limit >= _MIB
            else f"answer too large: {size}, the limit is {limit} bytes"
        )

    async def fetch(self, url: str) -> bytes:
        """GET an asset URL from an answer (e.g. an image URL); the body, at most :data:`MAX_BODY_BYTES`.

        A path (``/files/x.png``, relative to ``base_url``) or a URL under ``base_url`` is
        fetched with the API credentials; any other http(s) URL without them.

        Raises:
            ProviderError: not an http(s) URL (not retryable), else as :meth:`request`.
        """
        base = self.client.base_url
        try:
            target = base.join(url.lstrip("/")) if url.startswith("/") else httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            target = None
        if target is None or target.scheme not in ("http", "https") or not target.host:
            raise self.error(f"malformed answer: the asset URL {clip(url, 80)!r} is not an http(s) URL")
        if _origin(target) == self._origin and target.raw_path.startswith(base.raw_path):
            return (await self.request("GET", str(target))).content
        if self._plain is None:
            self._plain = httpx.AsyncClient(timeout=self._timeout, follow_redirects=True)
        return (await self._send(self._plain, "GET", str(target))).content

    def status_error(self, response: httpx.Response) -> ProviderError:
        """The :class:`ProviderError` for a non-2xx answer (message, retryable, Retry-After).

        ``response`` must have been read (its first :data:`MAX_ERROR_BODY_BYTES` are enough).
        """
        status = response.status_code
        message, code = error_detail(response.content)
        retryable = is_retryable_status(status) and code not in NEVER_RETRY_CODES
        text = f"HTTP {status}: {message}"
        if code and code not in message:
            text += f" [{code}]"
        return self.error(
            text,
            retryable=retryable,
            status=status,
            retry_after_s=retry_after_seconds(response.headers, status) if retryable else None,
            lower_concurrency=code == TOO_MANY_CONCURRENT,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        if isinstance(exc, httpx.TimeoutException):
            what = {
                httpx.ConnectTimeout: "connect",
                httpx.ReadTimeout: "read",
                httpx.WriteTimeout: "write",
                httpx.PoolTimeout: "pool",
            }.get(type(exc), "request")
            return self.error(f"{what} timeout talking to {self.client.base_url.host}", retryable=True)
        if isinstance(exc, httpx.RemoteProtocolError) and "complete message body" in str(exc):
            return self.error(f"truncated body: the connection closed mid-answer ({exc})", retryable=True)
        if isinstance(exc, httpx.TransportError):
            reason = str(exc) or type(exc).__name__
            return self.error(f"connection error: {reason}", retryable=True)
        return self.error(f"{type(exc).__name__}: {exc}")

    async def aclose(self) -> None:
        """Close the pools."""
        for shard in self.shards:
            await shard.aclose()
        if self._plain is not None:
            await self._plain.aclose()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of a URL, the port made explicit (80 for http, 443 for https)."""
    return url.scheme, url.host, url.port or {"http": 80, "https": 443}.get(url.scheme)


def json_body(response: httpx.Response, what: str) -> Any:
    """The JSON of a 2xx answer.

    Raises:
        ProviderError: the body is not JSON, or nested too deep to parse (not retryable).
    """
    try:
        return response.json()
    except (ValueError, RecursionError):
        ctype = response.headers.get("content-type", "?")
        raise ProviderError(
            f"malformed answer: {what} is not JSON (content-type {ctype}, {len(response.content)} bytes)"
        ) from None


class HttpProvider:
    """Base of the HTTP providers: one lazily opened :class:`HttpClient` per provider table.

    Subclasses set ``default_base_url`` and implement :meth:`open_client` and ``generate``.
    """

    default_base_url = ""

    def __init__(self, config: ProviderConfig):
        self.name = config.name
        self.config = config
        self.options: dict[str, Any] = dict(config.options)
        self._client: HttpClient | None = None

    async def prepare(self, params: Mapping[str, Any] | None = None) -> None:
        """Read the secret and open the connection pool.

        Raises:
            ProviderError: the secret's environment variable is not set.
        """
        self.client()

    def client(self) -> HttpClient:
        """The connection pool (opened on first use)."""
        if self._client is None:
            self._client = self.open_client()
        return self._client

    def open_client(self) -> HttpClient:
        """Build the :class:`HttpClient` (reads secrets from the environment)."""
        raise NotImplementedError

    def make_client(
        self,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        secrets: Iterable[str] = (),
    ) -> HttpClient:
        """An :class:`HttpClient` for this provider's ``base_url``, concurrency and timeouts.

        ``connect_timeout_s`` defaults to 10 s; ``read_timeout_s`` to the provider's ``timeout_s``,
        which also bounds each whole exchange (``total_timeout_s``).
        """
        o = self.options
        return HttpClient(
            self.name,
            str(o.get("base_url", self.default_base_url)),
            self.config.concurrency,
            float(o.get("connect_timeout_s", 10.0)),
            float(o.get("read_timeout_s", self.config.timeout_s)),
            headers=headers,
            auth=auth,
            secrets=secrets,
            total_timeout_s=self.config.timeout_s,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def read_photo(path: Path | None, key: str) -> tuple[bytes, int, int, str]:
    """``(bytes, width, height, MIME type)`` of a variant's source photo.

    Raises:
        ProviderError: no path, unreadable, or not a PNG/JPEG/WebP image (not retryable).
    """
    if path is None:
        raise ProviderError(f"{key}: no source photo")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProviderError(f"{path.name}: cannot read the photo: {exc.strerror or exc}") from None
    width, height, _, mime = check_image(data, f"the photo {path.name}", max_pixels=None)
    return data, width, height, mime
