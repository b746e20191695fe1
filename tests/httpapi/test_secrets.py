"""Secrets never leak: redaction before any cut, and keys that are not valid header values refused.

Invariant 7 of DESIGN.md. The keys here deliberately do not look like keys (no ``sk-``
prefix), so only the registry of secrets read from the environment can catch them.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
import subprocess
import sys
from pathlib import Path

import pytest

from httpapi.conftest import http_project
from httpapi.loopback import BASIC, LoopbackServer, Recorded
from tui_app.config import ProviderConfig
from tui_app.providers import ProviderError, Request
from tui_app.providers.a1111 import A1111Provider
from tui_app.providers.elevenlabs import ElevenLabsProvider
from tui_app.providers.openai_api import OpenAIProvider

#: Where the echoed credentials start in the server's message: 19 characters before the
#: 200-character cut of error messages, as in the leak this guards against.
ECHO_AT = 181


def _random_key(n: int = 40) -> str:
    """A key with no recognisable shape: letters and digits, never ``sk-``/``xi-``."""
    rng = random.SystemRandom()
    return "Q" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n - 1))


def _fragments(secret: str, n: int = 8) -> list[str]:
    """Every ``n``-character substring of ``secret``."""
    return [secret[i : i + n] for i in range(len(secret) - n + 1)]


def _assert_clean(blob: str, *secrets: str) -> None:
    for secret in secrets:
        for fragment in _fragments(secret):
            assert fragment not in blob, f"{fragment!r} of a secret leaked into {blob[:300]!r}"


def _padded(given: str) -> str:
    """A long message quoting ``given`` at :data:`ECHO_AT`, then more text (> 200 characters)."""
    lead = "Incorrect API key provided. The key below is not known here; check it and try again. "
    lead += "." * (ECHO_AT - len(lead))
    return f"{lead}{given} is the value that was sent. " + "More explanation follows. " * 8


class EchoingServer(LoopbackServer):
    """Refuses every API request with a long 401 body that quotes the credentials it was sent.

    Args:
        shape: ``openai`` (``{"error": {...}}``), ``elevenlabs`` (``{"detail": {...}}``),
            ``fastapi`` (``{"detail": "..."}``) or ``text`` (a text/plain body).
    """

    def __init__(self, shape: str, **kwargs):
        super().__init__(**kwargs)
        self.shape = shape

    def _auth_error(self, route: str, rec: Recorded):
        given = rec.headers.get("xi-api-key") or rec.headers.get("authorization", "")
        message = _padded(given.removeprefix("Bearer "))
        if self.shape == "openai":
            body: object = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
        elif self.shape == "elevenlabs":
            body = {"detail": {"status": "invalid_api_key", "message": message}}
        elif self.shape == "fastapi":
            body = {"detail": message}
        else:
            return 401, {"content-type": "text/plain"}, message.encode()
        return 401, {}, body


@pytest.fixture
def echo(request):
    server = EchoingServer(request.param).start()
    yield server
    server.stop()


def _speech() -> Request:
    return Request("dataset", "speech", "arctic_a0001", "Author of the danger trail.", {}, {"speed": 1.0})


def _picture() -> Request:
    return Request(
        "pages", "picture", "page_000", "t", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64}
    )


def _provider(kind: str, url: str):
    if kind == "openai":
        options = {"base_url": f"{url}/v1", "api_key_env": "SECRETS_TEST_KEY"}
        return OpenAIProvider(ProviderConfig("oa", "openai", options=options)), _speech()
    if kind == "elevenlabs":
        options = {"base_url": url, "api_key_env": "SECRETS_TEST_KEY", "voice_id": "v"}
        return ElevenLabsProvider(ProviderConfig("el", "elevenlabs", options=options)), _speech()
    options = {"base_url": url, "username": BASIC[0], "password_env": "SECRETS_TEST_KEY"}
    return A1111Provider(ProviderConfig("sd", "a1111", options=options)), _picture()


# --------------------------------------------------------------------------- redaction before the cut


@pytest.mark.anyio
@pytest.mark.parametrize(
    "echo,kind",
    [("openai", "openai"), ("text", "openai"), ("elevenlabs", "elevenlabs"), ("fastapi", "a1111")],
    indirect=["echo"],
)
async def test_a_cut_never_leaves_part_of_a_key_in_the_message(echo, kind, monkeypatch):
    key = _random_key()
    monkeypatch.setenv("SECRETS_TEST_KEY", key)
    echo.basic_auth = kind == "a1111"
    provider, request = _provider(kind, echo.url)
    with pytest.raises(ProviderError) as info:
        await provider.generate(request)
    await provider.aclose()
    sent = echo.requests[0].headers
    given = sent.get("xi-api-key") or sent["authorization"]
    assert key in given or base64.b64decode(given.split()[1]).decode() == f"{BASIC[0]}:{key}"
    message = info.value.message
    assert message.startswith("HTTP 401: Incorrect API key provided.") and "***" in message
    # the key, and for Basic auth the base64 credentials, are gone whole: no fragment survives the cut
    _assert_clean(message, key, given.removeprefix("Bearer ").removeprefix("Basic "))
    _assert_clean(str(info.value), key)


def _batch_json(tmp_path: Path, server: object, key: str) -> subprocess.CompletedProcess:
    """``tui-app --batch --json`` on a 2-entry openai project against ``server``, with ``key`` set."""
    config = http_project(tmp_path, server, dataset="openai", entries=2)
    return subprocess.run(
        [sys.executable, "-m", "tui_app", "--config", str(config), "--batch", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOOPBACK_OPENAI_KEY": key},
        timeout=60,
    )


def test_a_whole_batch_leaks_no_part_of_a_key(tmp_path):
    """``tui-app --batch --json`` against a server that echoes the key where the cut falls."""
    key = _random_key()
    server = EchoingServer("openai").start()
    try:
        batch = _batch_json(tmp_path, server, key)
    finally:
        server.stop()
    assert batch.returncode == 1, batch.stderr
    summary = json.loads(batch.stdout)
    assert summary["collections"]["dataset"]["failed"] == 2
    assert all("Incorrect API key provided" in f["error"] for f in summary["failed"])
    assert any(key in r.headers.get("authorization", "") for r in server.requests)  # it was sent
    blobs = {"stdout": batch.stdout, "stderr": batch.stderr}
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "state.sqlite" for p in files)
    for path in files:  # state.sqlite, its -wal while it exists, logs, takes
        blobs[str(path)] = path.read_bytes().decode("latin-1")
    for blob in blobs.values():
        _assert_clean(blob, key)


# --------------------------------------------------------------------------- keys that are not header values


@pytest.mark.parametrize(
    "where,bad,problem",
    [
        ("end", "\r", "it ends with a carriage return"),
        ("end", "\n", "it ends with a newline"),
        ("end", " ", "it ends with a space"),
        ("end", "\t", "it ends with a tab"),
        ("start", " ", "it starts with a space"),
        ("start", "\r", "it starts with a carriage return"),
        ("middle", "\r", "it contains a carriage return"),
        ("middle", "\n", "it contains a newline"),
        ("middle", "\t", "it contains a tab"),
    ],
)
@pytest.mark.anyio
async def test_a_key_that_is_not_a_header_value_is_refused_before_any_request(
    server, monkeypatch, where, bad, problem
):
    key = _random_key()
    value = {"end": key + bad, "start": bad + key, "middle": key[:20] + bad + key[20:]}[where]
    monkeypatch.setenv("SECRETS_TEST_KEY", value)
    for kind in ("openai", "elevenlabs"):
        provider, _ = _provider(kind, server.url)
        with pytest.raises(ProviderError) as info:
            await provider.prepare()
        message = info.value.message
        assert message == (
            f"providers.{provider.name}: environment variable SECRETS_TEST_KEY is not a valid "
            f"HTTP header value ({problem}); fix the variable"
        )
        _assert_clean(message, key)
    assert server.requests == []


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["openai", "elevenlabs", "a1111"])
async def test_non_ascii_and_control_characters_are_refused(server, monkeypatch, kind):
    key = _random_key()
    cases = [("\x1b", "control character"), ("\x7f", "control character")]
    if kind != "a1111":  # a Basic-auth password is base64-encoded: any Unicode text travels
        cases.append(("é", "outside ASCII"))
    for bad, problem in cases:
        monkeypatch.setenv("SECRETS_TEST_KEY", key[:10] + bad + key[10:])
        provider, _ = _provider(kind, server.url)
        with pytest.raises(ProviderError) as info:
            await provider.prepare()
        assert problem in info.value.message and "SECRETS_TEST_KEY" in info.value.message
        _assert_clean(info.value.message, key)
    assert server.requests == []


@pytest.mark.anyio
async def test_a1111_password_with_a_trailing_carriage_return_is_refused(server, monkeypatch):
    password = _random_key()
    monkeypatch.setenv("SECRETS_TEST_KEY", password + "\r")
    provider, _ = _provider("a1111", server.url)
    with pytest.raises(ProviderError) as info:
        await provider.prepare()
    assert "SECRETS_TEST_KEY" in info.value.message and "carriage return" in info.value.message
    _assert_clean(info.value.message, password)


def test_header_value_problem_names_the_character_never_the_value():
    from tui_app.providers.http import header_value_problem

    assert header_value_problem("abcd\0efgh") == "it contains a NUL character"
    assert header_value_problem("abcd\x1befgh") == "it contains a control character"
    assert header_value_problem("abcd\u00a0") == "it ends with whitespace"
    assert header_value_problem("abcdefgh") is None
    assert header_value_problem("two words-0123456789") is None  # a space inside is a valid header value
    assert header_value_problem("abcdéfgh") == "it contains a character outside ASCII"
    assert header_value_problem("abcdéfgh", ascii_only=False) is None
    assert header_value_problem("abcd\udcfffgh", ascii_only=False) == "it contains bytes that are not UTF-8"


def test_redact_masks_every_registered_secret_before_any_cut():
    from tui_app.redact import clip, redact, register_secret

    a, b = _random_key(24), _random_key(24)
    register_secret(a)
    register_secret(b[:12] + "\r" + b[12:])  # registered with its escaped and trimmed spellings
    register_secret("abc")  # too short: ignored
    c = _random_key(16)
    d = c[8:] + _random_key(8)  # overlaps c: "c" + d[8:] holds both, neither whole outside the other
    register_secret(c)
    register_secret(d)
    assert redact(f"x {a} y") == "x *** y"
    assert "abc" in redact("abc abc")
    text = "Illegal header value " + repr(f"Bearer {b[:12]}\r{b[12:]}".encode())
    assert redact(text) == "Illegal header value b'Bearer ***'"
    assert redact(f"<{c}{d[8:]}>") == "<***>"
    cut = clip("." * 190 + a + "." * 50, 200)
    assert len(cut) == 200 and cut.endswith("…") and "***" in cut
    _assert_clean(cut, a)
    assert redact("GET https://user:pa55word@host/x?api_key=abcdef123&size=2&X-Amz-Signature=f00d") == (
        "GET https://***@host/x?api_key=***&size=2&X-Amz-Signature=***"
    )
    assert redact("key sk-proj-0123456789abcdefghij and item key_lime_pie") == (
        "key sk-*** and item key_lime_pie"
    )
    with pytest.raises(ValueError):
        clip("text", 0)


def test_batch_with_a_trailing_carriage_return_is_a_one_line_config_error(tmp_path):
    """Exit 2, one error line naming the variable, nothing sent, the key nowhere.

    (The only other stderr line is the import note, written before providers start.)
    """
    key = _random_key()
    server = LoopbackServer().start()
    try:
        batch = _batch_json(tmp_path, server, key + "\r")
    finally:
        server.stop()
    assert batch.returncode == 2, batch.stderr
    assert "Traceback" not in batch.stderr and batch.stdout == ""
    errors = [line for line in batch.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "tui-app: error: providers.openai: environment variable LOOPBACK_OPENAI_KEY is not a valid "
        "HTTP header value (it ends with a carriage return); fix the variable"
    ], batch.stderr
    assert server.requests == []
    blobs = [batch.stdout, batch.stderr]
    blobs += [p.read_bytes().decode("latin-1") for p in Path(tmp_path).rglob("*") if p.is_file()]
    for blob in blobs:
        _assert_clean(blob, key)
