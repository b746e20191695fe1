"""ASR round trip: transcribe a speech take and compare the transcript with the text it should say.

Transcribers:

* :class:`PocketsphinxTranscriber` (offline, the default): pocketsphinx from PyPI with the
  en-US acoustic model, dictionary and language model it bundles; no download. About 27 % mean
  WER and 0.3 to 0.4 s per clip on Piper's joe voice, so a *relative* signal: its threshold
  (:attr:`tui_app.qa.QAThresholds.max_cer`) is calibrated on good clips (``bench/qa.py``).
* :class:`HttpTranscriber`: an OpenAI-compatible ``POST {base_url}/audio/transcriptions``
  (OpenAI ``whisper-1``, faster-whisper-server / speaches, LocalAI): ``multipart/form-data`` with
  the WAV as ``file``, ``model``, ``response_format=json`` and optionally ``language``; the answer
  is ``{"text": "..."}`` (OpenAI API reference, "Create transcription").

Comparison (:func:`asr_metrics`): both sides go through :func:`normalize_text` (case,
punctuation, numbers spelled out with num2words, a few abbreviations), then jiwer measures the
word and character error rates, and an alignment tells how much of the text's end the
transcript misses (for :func:`tui_app.qa.take_flags`' ``truncated``).

Settings (:class:`ASRSettings`, the ``[qa.asr]`` table, read by :func:`tui_app.config.load_config`):
``engine`` (``pocketsphinx`` | ``http`` | ``none``), and for ``http``: ``base_url``, ``model``
(``whisper-1``), ``api_key_env`` (default none: a local server without a key), ``language``
(ISO-639-1, optional), ``timeout_s`` (120), ``concurrency`` (2), ``max_attempts`` (3).
"""

from __future__ import annotations

import importlib
import os
import random
import re
import threading
import unicodedata
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.to_process

from .media import read_pcm
from .providers.base import ProviderError
from .qa_limits import ENGINES as ENGINES  # the [qa.asr] table, kept with the [qa] one: re-exported
from .qa_limits import ASRSettings as ASRSettings

#: The sample rate pocketsphinx's bundled en-US model was trained at, Hz.
ASR_RATE = 16_000
#: Samples fed to pocketsphinx per call (0.1 s): it holds the GIL during a call, so short calls
#: let other threads (an event loop) run between them.
CHUNK_SAMPLES = 1_600
#: Where pocketsphinx's live cepstral mean normalization starts each take (bundled model only): the
#: mean of the per-take cepstral means of 40 Piper clips (CMU ARCTIC b0001-b0040, joe voice). From
#: the model's generic start (40,3,-1,0...) the mean CER on 100 good clips was 0.173; from this,
#: 0.149, as good as normalizing each whole take first (0.150).
CMN_START = "54.83,5.19,1.00,9.45,2.58,-4.03,1.74,-10.22,-2.86,5.06,-2.03,4.39,-8.96"

#: Abbreviations spelled out before comparison (the way a recognizer writes what it hears).
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "etc": "et cetera", "vs": "versus"}
_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_NOT_WORD = re.compile(r"[^\w' ]+")
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at "}


@runtime_checkable
class Transcriber(Protocol):
    """Turns a speech take into text, blocking (called in a worker thread)."""

    def transcribe(self, wav: bytes) -> str:
        """The words heard in ``wav`` (a 16-bit PCM WAV), as plain text.

        Raises:
            ValueError: the bytes are not a 16-bit PCM WAV.
        """
        ...


class AsyncTranscriber(Protocol):
    """Turns a speech take into text, awaited on the event loop (an HTTP server)."""

    async def transcribe(self, wav: bytes) -> str:
        """The words heard in ``wav``.

        Raises:
            ProviderError: the server failed or answered malformed JSON.
        """
        ...

    async def aclose(self) -> None:
        """Release the connections."""
        ...


# --------------------------------------------------------------------------- comparison


def _spell_number(match: re.Match[str]) -> str:
    num2words = importlib.import_module("num2words").num2words  # no type hints

    raw = match.group(0).replace(",", "")
    if "." in raw:
        return f" {num2words(float(raw))} "
    value = int(raw)
    if "," not in match.group(0) and len(raw) == 4 and 1100 <= value <= 2099 and value % 1000 >= 10:
        return f" {num2words(value, to='year')} "  # 1908: nineteen oh-eight, as it is read
    return f" {num2words(value)} "


def normalize_text(text: str) -> str:
    """Lower-case words separated by single spaces, for comparing a text with a transcript.

    Steps: Unicode NFKC; ``&``, ``%``, ``+``, ``@`` as words; ordinals (``29th``: twenty-ninth)
    and numbers spelled out with num2words (four-digit numbers from 1100 to 2099, but for 2000 to
    2009, as years: ``1908``: nineteen oh-eight; decimals with "point"; ``1,000``: one thousand);
    lower case; punctuation and hyphens become spaces (apostrophes inside words stay: ``don't``);
    :data:`ABBREVIATIONS` spelled out. The same steps apply to both sides, so a transcript that
    writes digits and one that writes words compare alike.
    """
    num2words = importlib.import_module("num2words").num2words  # no type hints

    text = unicodedata.normalize("NFKC", text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = _ORDINAL.sub(lambda m: f" {num2words(int(m.group(1)), to='ordinal')} ", text)
    text = _NUMBER.sub(_spell_number, text)
    text = _NOT_WORD.sub(" ", text.lower().replace("_", " "))
    words = [w.strip("'") for w in text.split()]
    return " ".join(ABBREVIATIONS.get(w, w) for w in words if w)


def asr_metrics(text: str, transcript: str) -> dict[str, Any]:
    """Compare a take's text with its transcript after :func:`normalize_text` on both.

    Returns:
        ``wer`` and ``cer`` (word and character error rates, jiwer: (substitutions + deletions +
        insertions) / reference length; 0 = identical, may exceed 1), ``asr_text`` (the
        normalized transcript), and for :func:`tui_app.qa.take_flags`' ``truncated``:
        ``asr_len_ratio`` (transcript characters / text characters, spaces excluded),
        ``asr_prefix_cer`` (the lowest CER of the transcript against a beginning of the text,
        in whole words) and ``asr_tail_missing`` (the share of the text's words after that
        beginning: 0 when the whole text matches best, 0.5 when its first half does; 1 for an
        empty transcript). The prefix search costs one CER per word of the text (about 0.1 ms
        each; milliseconds for a long text, next to the transcription's 0.4 s). A text without words scores
        as matched (rates 0.0, ratio 1.0) when the transcript is empty too, else as missed.
    """
    import jiwer

    ref, hyp = normalize_text(text), normalize_text(transcript)
    if not ref:
        miss = 0.0 if not hyp else 1.0
        return {
            "wer": miss,
            "cer": miss,
            "asr_text": hyp,
            "asr_len_ratio": 1.0 if not hyp else 0.0,
            "asr_tail_missing": miss,
            "asr_prefix_cer": miss,
        }
    ref_words = ref.split()
    if not hyp:
        wer = cer = prefix_cer = 1.0
        covered = 0
    else:
        wer = float(jiwer.wer(ref, hyp))
        cer = float(jiwer.cer(ref, hyp))
        # the text's beginning the transcript matches best (on a tie, the longer one)
        scores = [(float(jiwer.cer(" ".join(ref_words[:k]), hyp)), -k) for k in range(1, len(ref_words) + 1)]
        best, minus_k = min(scores)
        prefix_cer, covered = best, -minus_k
    return {
        "wer": round(wer, 4),
        "cer": round(cer, 4),
        "asr_text": hyp,
        "asr_len_ratio": round(len(hyp.replace(" ", "")) / len(ref.replace(" ", "")), 4),
        "asr_tail_missing": round(1.0 - covered / len(ref_words), 4),
        "asr_prefix_cer": round(prefix_cer, 4),
    }


# --------------------------------------------------------------------------- pocketsphinx


def pcm16k(wav: bytes) -> bytes:
    """A 16-bit PCM WAV as 16 kHz mono 16-bit little-endian raw PCM, peak-normalized to -1 dBFS
    (channels averaged; resampled with soxr's HQ filter; silence stays silence).

    Raises:
        ValueError: the bytes are not a 16-bit PCM WAV.
    """
    import numpy as np  # loaded when a take is transcribed, not with the config

    soxr = importlib.import_module("soxr")  # no type hints

    x, info = read_pcm(wav, "ASR")
    mono = x.mean(axis=1) / 32768.0
    if info.sample_rate != ASR_RATE and mono.size:
        mono = soxr.resample(mono, info.sample_rate, ASR_RATE, quality="HQ")
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak > 1e-6:
        mono = mono * (0.891 / peak)
    return (np.clip(mono, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class PocketsphinxTranscriber:
    """Offline ASR with pocketsphinx's bundled en-US models (see the module docstring).

    The decoder is loaded once, on the first call (about 0.3 to 0.5 s), and shared: calls are
    serialized by a lock (one decoder decodes one utterance at a time), so several threads
    share one core's worth of decoding. For more, use one transcriber per worker process.

    Each take is decoded from the same state (the feature extractor, with its cepstral mean and
    noise estimates, is reset first, and the cepstral mean starts from :data:`CMN_START`), so a
    take's transcript does not depend on the takes decoded before it. pocketsphinx holds the GIL
    while it decodes: by default the audio goes in 0.1 s pieces, so an event loop in another
    thread keeps running between them.

    Args:
        hmm, lm, dict: paths of another acoustic model folder, language model and pronunciation
            dictionary (default: the bundled en-US ones).
        whole_utterance: decode the take in one call, normalizing with the cepstral mean of the
            whole take (as accurate on Piper, and adapted to any voice) while holding the GIL for
            the whole decode (0.3 to 0.5 s): for a worker process.

    Raises:
        ImportError: on the first call, pocketsphinx is not installed.
    """

    def __init__(
        self,
        *,
        hmm: str | None = None,
        lm: str | None = None,
        dict: str | None = None,
        whole_utterance: bool = False,
    ):
        self._options = {k: v for k, v in {"hmm": hmm, "lm": lm, "dict": dict}.items() if v}
        self.whole_utterance = whole_utterance
        self._decoder: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._decoder is None:
            decoder_class = importlib.import_module("pocketsphinx").Decoder  # no type hints

            self._decoder = decoder_class(samprate=ASR_RATE, logfn="/dev/null", **self._options)
        return self._decoder

    def transcribe(self, wav: bytes) -> str:
        """The words pocketsphinx hears in ``wav`` (lower case, no punctuation; ``""`` for none).

        Raises:
            ValueError: the bytes are not a 16-bit PCM WAV.
        """
        pcm = pcm16k(wav)
        step = (len(pcm) or 1) if self.whole_utterance else 2 * CHUNK_SAMPLES
        with self._lock:
            decoder = self._load()
            decoder.reinit_feat()  # the same starting state for every take: order-independent
            if "hmm" not in self._options:
                decoder.set_cmn(CMN_START)
            decoder.start_utt()
            for start in range(0, len(pcm), step):
                decoder.process_raw(pcm[start : start + step], False, self.whole_utterance)
            decoder.end_utt()
            hyp = decoder.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""


#: Niceness of the ASR processes (Linux/Unix ``nice``): they get the CPU that generation leaves.
ASR_NICENESS = 19

_child_transcriber: PocketsphinxTranscriber | None = None  # in an ASR process: its decoder


def _transcribe_in_child(wav: bytes) -> str:
    """Run in an ASR process (:class:`PocketsphinxProcesses`): lower its priority and load the
    decoder on the first call, then transcribe."""
    global _child_transcriber
    if _child_transcriber is None:
        if hasattr(os, "nice"):
            os.nice(ASR_NICENESS)
        _child_transcriber = PocketsphinxTranscriber()
    return _child_transcriber.transcribe(wav)


class PocketsphinxProcesses:
    """:class:`PocketsphinxTranscriber` in worker processes of their own, at the lowest CPU priority.

    pocketsphinx holds the GIL while it decodes (a thread decoding leaves an event loop in the
    same process about a tenth of its speed), and it competes with a local TTS for the cores. In
    processes of its own (anyio's process pool, kept between calls), niced to
    :data:`ASR_NICENESS`, the check runs on the CPU that generation leaves: it never slows the
    run, and catches up when generation is over. Each process loads the decoder once (about 1 s
    with the interpreter's start). Transcripts are the same as :class:`PocketsphinxTranscriber`'s.

    Args:
        concurrency: processes at most (each decodes one take at a time).
    """

    def __init__(self, concurrency: int = 2):
        self._limiter: anyio.CapacityLimiter | None = None
        self.concurrency = concurrency

    async def transcribe(self, wav: bytes) -> str:
        """The words pocketsphinx hears in ``wav``; a cancelled call kills its process.

        Raises:
            ValueError: the bytes are not a 16-bit PCM WAV.
        """
        if self._limiter is None:  # made in the event loop that uses it
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        text = await anyio.to_process.run_sync(
            _transcribe_in_child, wav, cancellable=True, limiter=self._limiter
        )
        return str(text)

    async def aclose(self) -> None:
        """Nothing to release: idle processes exit with the event loop (anyio's pool)."""


# --------------------------------------------------------------------------- HTTP


class HttpTranscriber:
    """ASR through an OpenAI-compatible ``/audio/transcriptions`` endpoint (see the module docstring).

    Requests go through the providers' :class:`~tui_app.providers.http.HttpClient` (connection
    pool, timeouts, the server's own error message, secrets redacted). Retryable failures
    (timeouts, connection errors, 408, 409, 429, 5xx) are retried up to ``max_attempts`` tries
    with the engine's backoff (0.5 s doubling to 8 s, less up to 25 % jitter; a Retry-After of at
    most 120 s is honoured as given: :mod:`tui_app.engine.retry`).

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        model: the ``model`` form field (``whisper-1``; a faster-whisper-server model name, ...).
        api_key_env: environment variable holding a key sent as ``Authorization: Bearer``
            (None or ``""``: no key).
        language: optional ISO-639-1 hint (``en``).
        timeout_s: read timeout of one request, seconds; connect timeout 10 s.
        concurrency: requests in flight at once.
        max_attempts: tries per take, the first included.
        name: shown in messages.

    Raises:
        ProviderError: (on construction) ``api_key_env`` names an unset variable.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "whisper-1",
        api_key_env: str | None = None,
        language: str | None = None,
        timeout_s: float = 120.0,
        concurrency: int = 2,
        max_attempts: int = 3,
        name: str = "asr",
    ):
        from .providers.http import HttpClient, read_secret  # httpx: loaded only for an HTTP ASR

        key = read_secret(api_key_env, name)
        self.model = model
        self.language = language
        self.max_attempts = max(1, max_attempts)
        self.client = HttpClient(
            name,
            base_url,
            concurrency,
            10.0,
            timeout_s,
            headers={"Authorization": f"Bearer {key}"} if key else {},
            secrets=[key or ""],
        )

    async def transcribe(self, wav: bytes) -> str:
        """The text the server hears in ``wav`` (as the server writes it; compare with :func:`asr_metrics`).

        Raises:
            ProviderError: the last try's failure (HTTP status and the server's message, or a
                transport fault), or a malformed answer (not JSON, no string ``text``).
        """
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        attempt = 1
        while True:
            try:
                response = await self.client.request(
                    "POST", "audio/transcriptions", data=data, files={"file": ("take.wav", wav, "audio/wav")}
                )
                break
            except ProviderError as exc:
                if not exc.retryable or attempt >= self.max_attempts:
                    raise
                await anyio.sleep(_backoff(attempt, exc.retry_after_s))
                attempt += 1
        from .providers.http import json_body

        answer = json_body(response, "the transcription")
        text = answer.get("text") if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise ProviderError('malformed answer: the transcription has no string "text"')
        return text.strip()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def _backoff(attempts: int, retry_after_s: float | None) -> float:
    """Seconds before try ``attempts + 1``: the formula of :class:`tui_app.engine.retry.RetryPolicy`."""
    if retry_after_s is not None and 0 <= retry_after_s <= 120.0:
        return float(retry_after_s)
    return min(0.5 * 2.0 ** (attempts - 1), 8.0) * (1.0 - 0.25 * random.random())


def make_transcriber(settings: ASRSettings) -> PocketsphinxProcesses | HttpTranscriber | None:
    """The transcriber ``settings`` ask for: :class:`PocketsphinxProcesses` (``concurrency``
    processes), :class:`HttpTranscriber` (both are awaited) or None (``engine = "none"``).

    Raises:
        ProviderError: ``api_key_env`` names an unset variable.
    """
    if settings.engine == "none":
        return None
    if settings.engine == "pocketsphinx":
        return PocketsphinxProcesses(settings.concurrency)
    return HttpTranscriber(
        settings.base_url,
        model=settings.model,
        api_key_env=settings.api_key_env or None,
        language=settings.language or None,
        timeout_s=settings.timeout_s,
        concurrency=settings.concurrency,
        max_attempts=settings.max_attempts,
    )
