"""Secrets out of every message: a process-wide registry, and redaction before any cut.

DESIGN.md invariant 7: secrets (API keys, passwords) never reach the store, logs, events,
notifications or ``--json``, and redaction happens *before* any truncation. Whoever reads a
secret (the HTTP providers, from the environment variables the config names) calls
:func:`register_secret` at once; whoever writes a message that may quote one calls
:func:`redact`, or :func:`clip` to shorten it, which redacts first so a cut can never fall
inside a secret and leave its first characters behind.

The registry is per process: a process that never read a secret has none to remove.

Besides registered secrets, :func:`redact` removes what is shaped like a credential
whoever it belongs to: the userinfo of URLs (``https://user:pass@host``), the values of
URL query parameters named like keys, tokens, signatures or passwords, and long
``sk-``/``xi-`` API keys.

This module is the bottom layer: it imports nothing from ``tui_app``.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, quote_plus

#: What replaces a secret.
MASK = "***"
#: Shorter values are not registered: replacing them everywhere would garble ordinary text.
MIN_SECRET_CHARS = 4

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first; replaced as a whole tuple, so readers need no lock

# ``scheme://userinfo@``: the userinfo goes, whatever it holds.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
# ``?name=value`` / ``&name=value`` where the name says credential (api_key, token, sig, X-Amz-Signature).
_URL_QUERY_SECRET = re.compile(
    r"([?&;][A-Za-z0-9_.\-]*(?:key|token|secret|passw(?:or)?d|pwd|sig|signature|auth|credential|session)"
    r"[A-Za-z0-9_.\-]*=)[^&#\s'\"<>]+",
    re.IGNORECASE,
)
# OpenAI (``sk-proj-...``, also masked ``sk-...****abcd``) and ElevenLabs (``sk_...``, ``xi-...``) keys.
_KEYLIKE = re.compile(r"\b(sk|xi)[-_][A-Za-z0-9_\-*]{16,}")


def _as_bytes(value: str) -> bytes:
    """``value`` as the bytes it came from (``os.environ`` keeps undecodable bytes as surrogates)."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _forms(value: str) -> set[str]:
    """The spellings of ``value`` a message may carry: as is, trimmed, with whitespace
    collapsed, escaped as in ``repr`` of str and of bytes (httpx's "Illegal header value
    b'...'"), in JSON, and percent-encoded."""
    forms = {
        value,
        value.strip(),
        " ".join(value.split()),
        repr(value)[1:-1],
        repr(_as_bytes(value))[2:-1],
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote_plus(value, safe=""),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


def register_secret(value: str) -> None:
    """Remember a secret so that :func:`redact` removes it from every message of this process.

    Call it as soon as the secret is read (before it is checked or used). Its other
    spellings in messages are registered too: trimmed, whitespace collapsed, ``repr``-escaped
    (str and bytes), JSON-escaped and percent-encoded.

    Args:
        value: the secret (an API key, a password, a Basic-auth token). Empty values and
            values shorter than :data:`MIN_SECRET_CHARS` (4) characters are ignored.
    """
    global _secrets
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        return
    forms = _forms(value)
    with _lock:
        if forms.issubset(_secrets):
            return
        _secrets = tuple(sorted(set(_secrets) | forms, key=lambda s: (-len(s), s)))


def redact(text: str) -> str:
    """``text`` with every registered secret, and anything shaped like a credential, replaced by ``***``.

    Every occurrence of every registered secret is found first (longest first, overlapping
    ones included) and each stretch of text they cover becomes one :data:`MASK`, so
    neither overlapping secrets nor a secret inside another leave a fragment behind.
    Then URL userinfo, credential-named query values and ``sk-``/``xi-`` keys are masked.

    Args:
        text: any message (a non-str is converted with ``str``).

    Returns:
        The redacted text; never longer than ``text`` by more than a few characters per URL.
    """
    if not isinstance(text, str):
        text = str(text)
    secrets = _secrets
    if secrets and text:
        spans: list[tuple[int, int]] = []
        for secret in secrets:
            start = text.find(secret)
            while start != -1:
                spans.append((start, start + len(secret)))
                start = text.find(secret, start + 1)
        if spans:
            spans.sort()
            parts: list[str] = []
            pos = 0
            cur_start, cur_end = spans[0]
            for start, end in spans[1:]:
                if start <= cur_end:
                    cur_end = max(cur_end, end)
                    continue
                parts += [text[pos:cur_start], MASK]
                pos = cur_end
                cur_start, cur_end = start, end
            parts += [text[pos:cur_start], MASK, text[cur_end:]]
            text = "".join(parts)
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _URL_QUERY_SECRET.sub(lambda m: m.group(1) + MASK, text)
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}-{MASK}", text)


def clip(text: str, limit: int) -> str:
    """``text`` redacted (:func:`redact`) and *then* cut to at most ``limit`` characters.

    Use it wherever a message is shortened: cutting first could split a secret and leave
    its first characters where redaction no longer recognises them. A cut text ends
    with ``…`` (counted in ``limit``).

    Args:
        text: any message.
        limit: the most characters returned, >= 1.

    Raises:
        ValueError: ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError(f"clip: limit must be >= 1, got {limit}")
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["MASK", "MIN_SECRET_CHARS", "clip", "redact", "register_secret"]
