"""ASR round trip (tui_app.asr): text normalization, WER/CER, pocketsphinx on real Piper clips, and the
OpenAI-compatible HTTP transcriber against a real loopback server started here (no internet)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import numpy as np
import pytest
from conftest import MINIMAL_CONFIG

from tui_app.asr import (
    ASR_RATE,
    ASRSettings,
    HttpTranscriber,
    PocketsphinxProcesses,
    PocketsphinxTranscriber,
    Transcriber,
    asr_metrics,
    make_transcriber,
    normalize_text,
    pcm16k,
)
from tui_app.config import ConfigError, load_config
from tui_app.media import wav_bytes
from tui_app.providers import ProviderError
from tui_app.qa import QAThresholds

ROOT = Path(__file__).resolve().parents[1]
TEXTS = {
    "arctic_a0003": "For the twentieth time that evening the two men shook hands.",
    "arctic_a0007": "And you always want to see it in the superlative degree.",
    "arctic_a0438": "At sea, Monday, March 16, 1908.",
}


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """Real Piper takes (bundled joe voice) of a few ARCTIC prompts, spoken once per module."""
    pytest.importorskip("piper", reason="the local extra (piper-tts) is not installed")
    from tui_app.providers.piper import PiperProvider, bundled_voice
    from tui_app.settings import ProviderConfig

    provider = PiperProvider(ProviderConfig("piper", "piper", options={"workers": 1}), ROOT)
    return {key: provider.synthesize(text, bundled_voice()).data for key, text in TEXTS.items()}


@pytest.fixture(scope="module")
def sphinx() -> PocketsphinxTranscriber:
    pytest.importorskip("pocketsphinx")
    return PocketsphinxTranscriber()


# --------------------------------------------------------------------------- comparison


def test_normalize_text_spells_numbers_and_drops_punctuation():
    assert (
        normalize_text("At sea, Monday, March 16, 1908.") == "at sea monday march sixteen nineteen oh eight"
    )
    assert normalize_text("The 29th very foggy.") == "the twenty ninth very foggy"
    assert normalize_text("Mr. Smith's 3.5% & 1,000 dogs; don't-stop 'quoted'") == (
        "mister smith's three point five percent and one thousand dogs don't stop quoted"
    )
    assert normalize_text("In 2005, 1000 and 1905") == (
        "in two thousand and five one thousand and nineteen oh five"
    )
    assert normalize_text("  HELLO—World!  ") == "hello world"
    assert normalize_text("Author of the danger trail, Philip Steels, etc.").endswith("et cetera")


def test_asr_metrics_compare_after_the_same_normalization():
    same = asr_metrics("At sea, Monday, March 16, 1908.", "at sea monday march sixteen nineteen oh eight")
    assert (same["wer"], same["cer"], same["asr_tail_missing"], same["asr_len_ratio"]) == (0.0, 0.0, 0.0, 1.0)
    digits = asr_metrics("March sixteen", "March 16.")
    assert digits["wer"] == 0.0 and digits["asr_text"] == "march sixteen"
    one_wrong = asr_metrics("the cat sat down", "the bat sat down")
    assert one_wrong["wer"] == 0.25 and one_wrong["cer"] == 1 / 16
    half = asr_metrics("one two three four five six seven eight", "one two three four")
    assert half["asr_tail_missing"] == 0.5 and half["asr_prefix_cer"] == 0.0
    assert half["asr_len_ratio"] == pytest.approx(15 / 32, abs=1e-4) and half["wer"] == 0.5
    nothing = asr_metrics("some words", "")
    assert (nothing["wer"], nothing["cer"], nothing["asr_tail_missing"], nothing["asr_len_ratio"]) == (
        1.0,
        1.0,
        1.0,
        0.0,
    )
    assert asr_metrics("...", "")["wer"] == 0.0 and asr_metrics("...", "hello")["wer"] == 1.0


# --------------------------------------------------------------------------- pocketsphinx


def test_pocketsphinx_hears_the_right_sentence_and_not_another(clips, sphinx):
    assert isinstance(sphinx, Transcriber)
    heard = {key: sphinx.transcribe(wav) for key, wav in clips.items()}
    for key, text in TEXTS.items():
        assert asr_metrics(text, heard[key])["cer"] <= QAThresholds().max_cer, (key, heard[key])
    assert asr_metrics(TEXTS["arctic_a0003"], heard["arctic_a0007"])["cer"] > 0.6
    assert asr_metrics(TEXTS["arctic_a0007"], heard["arctic_a0003"])["cer"] > 0.6
    # numbers: the text's digits and the recognizer's words meet in the middle
    assert "sixteen" in heard["arctic_a0438"]


def test_whole_utterance_decoding_agrees_closely(clips, sphinx):
    whole = PocketsphinxTranscriber(whole_utterance=True)
    for key, wav in clips.items():
        assert asr_metrics(TEXTS[key], whole.transcribe(wav))["cer"] <= QAThresholds().max_cer
    assert whole.transcribe(clips["arctic_a0003"]) == whole.transcribe(clips["arctic_a0003"])


def test_pocketsphinx_takes_any_rate_and_channels(clips, sphinx):
    import soxr

    wav = clips["arctic_a0003"]
    x = np.frombuffer(wav[44:], dtype="<i2").astype(np.float64)
    hi = soxr.resample(x, 22_050, 44_100)
    stereo = np.stack([hi, hi * 0.5], axis=1)  # also quieter: the transcriber normalizes the peak
    data = wav_bytes(np.clip(stereo * 0.3, -32768, 32767).astype("<i2").tobytes(), 44_100, channels=2)
    assert asr_metrics(TEXTS["arctic_a0003"], sphinx.transcribe(data))["cer"] <= QAThresholds().max_cer
    pcm = pcm16k(data)
    assert len(pcm) // 2 == pytest.approx(x.size * ASR_RATE / 22_050, abs=2)
    assert np.abs(np.frombuffer(pcm, dtype="<i2")).max() == pytest.approx(0.891 * 32767, rel=0.01)
    assert sphinx.transcribe(wav_bytes(bytes(2 * 16_000), 16_000)) == ""
    with pytest.raises(ValueError, match="16-bit"):
        sphinx.transcribe(wav_bytes(bytes(3 * 1000), 16_000, sample_width=3))


def test_pocketsphinx_transcripts_do_not_depend_on_order_or_threads(clips, sphinx):
    wavs = list(clips.values())
    alone = [sphinx.transcribe(w) for w in wavs]
    assert [sphinx.transcribe(w) for w in reversed(wavs)] == alone[::-1]
    assert PocketsphinxTranscriber().transcribe(wavs[-1]) == alone[-1]  # a fresh decoder agrees
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = sphinx.transcribe(wavs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(wavs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(wavs))] == alone


# --------------------------------------------------------------------------- HTTP


class _Server:
    """A loopback ``/v1/audio/transcriptions`` server answering from a script, recording the requests."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.requests: list[dict] = []
        self.answer_with = None  # a callable(wav) -> text for 200 answers past the script
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                message = BytesParser(policy=email_policy).parsebytes(head + body)
                fields, files = {}, {}
                for part in message.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if part.get_filename():
                        files[name] = (
                            part.get_filename(),
                            part.get_content_type(),
                            part.get_payload(decode=True),
                        )
                    else:
                        fields[name] = part.get_content()
                server.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "fields": fields,
                        "files": files,
                    }
                )
                if server.script:
                    status, headers, answer = server.script.pop(0)
                else:
                    status, headers = 200, {}
                    answer = json.dumps({"text": server.answer_with(files["file"][2])}).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.close()


def _transcribe(transcriber: HttpTranscriber, wav: bytes) -> str:
    async def go() -> str:
        try:
            return await transcriber.transcribe(wav)
        finally:
            await transcriber.aclose()

    return anyio.run(go)


def test_http_transcriber_round_trip_through_a_real_server(server, clips, sphinx, monkeypatch):
    # the server transcribes the upload with pocketsphinx, as faster-whisper-server would with Whisper
    server.answer_with = sphinx.transcribe
    monkeypatch.setenv("TEST_ASR_KEY", "sk-test-123")
    wav = clips["arctic_a0007"]
    transcriber = HttpTranscriber(
        server.url, model="Systran/faster-whisper-small", api_key_env="TEST_ASR_KEY", language="en"
    )
    text = _transcribe(transcriber, wav)
    assert asr_metrics(TEXTS["arctic_a0007"], text)["cer"] <= QAThresholds().max_cer
    (request,) = server.requests
    assert request["path"] == "/v1/audio/transcriptions"
    assert request["auth"] == "Bearer sk-test-123"
    assert request["fields"] == {
        "model": "Systran/faster-whisper-small",
        "response_format": "json",
        "language": "en",
    }
    assert request["files"]["file"] == ("take.wav", "audio/wav", wav)


def test_http_transcriber_retries_what_is_retryable(server):
    server.script = [
        (503, {"Retry-After": "0"}, b'{"error": {"message": "model loading"}}'),
        (429, {"retry-after-ms": "10"}, b'{"error": {"message": "slow down"}}'),
        (200, {}, b'{"text": "  Hello there.  "}'),
    ]
    assert _transcribe(HttpTranscriber(server.url, max_attempts=3), b"RIFF") == "Hello there."
    assert len(server.requests) == 3 and server.requests[0]["auth"] is None


def test_http_transcriber_fails_at_once_on_a_client_error_with_the_servers_message(server):
    server.script = [(400, {}, b'{"error": {"message": "Invalid file format.", "code": "invalid_value"}}')]
    with pytest.raises(ProviderError, match="HTTP 400: Invalid file format") as caught:
        _transcribe(HttpTranscriber(server.url), b"not audio")
    assert caught.value.status == 400 and not caught.value.retryable and len(server.requests) == 1


def test_http_transcriber_gives_up_after_max_attempts(server):
    server.script = [(500, {"Retry-After": "0"}, b'{"detail": "boom"}')] * 2
    with pytest.raises(ProviderError, match="HTTP 500: boom") as caught:
        _transcribe(HttpTranscriber(server.url, max_attempts=2), b"RIFF")
    assert caught.value.retryable and len(server.requests) == 2


def test_http_transcriber_refuses_malformed_answers(server):
    server.script = [(200, {"Content-Type": "text/html"}, b"<html>hi</html>"), (200, {}, b'{"txt": "hi"}')]
    with pytest.raises(ProviderError, match="malformed answer: the transcription is not JSON"):
        _transcribe(HttpTranscriber(server.url), b"RIFF")
    with pytest.raises(ProviderError, match='no string "text"'):
        _transcribe(HttpTranscriber(server.url), b"RIFF")


def test_http_transcriber_keeps_the_key_out_of_messages(server, monkeypatch):
    monkeypatch.setenv("TEST_ASR_KEY", "sk-secret-value-42")
    server.script = [(401, {}, b'{"error": {"message": "Incorrect API key provided: sk-secret-value-42"}}')]
    with pytest.raises(ProviderError) as caught:
        _transcribe(HttpTranscriber(server.url, api_key_env="TEST_ASR_KEY"), b"RIFF")
    assert "sk-secret-value-42" not in str(caught.value) and "HTTP 401" in str(caught.value)
    monkeypatch.delenv("TEST_ASR_KEY")
    with pytest.raises(ProviderError, match="TEST_ASR_KEY is not set"):
        HttpTranscriber(server.url, api_key_env="TEST_ASR_KEY")


# --------------------------------------------------------------------------- settings


def _decoding_niceness_and_count() -> tuple[int, int]:
    import os

    return os.nice(0), 1


def test_pocketsphinx_processes_agree_with_the_thread_decoder_and_run_niced(clips, sphinx):
    """The default offline check decodes in niced processes of its own, with the same transcripts,
    and leaves the event loop free meanwhile (pocketsphinx holds the GIL while it decodes)."""
    import os
    import time

    wavs = list(clips.values())
    processes = PocketsphinxProcesses(concurrency=2)
    ticks: list[float] = []

    async def main() -> list[str]:
        results: dict[int, str] = {}

        async def one(i: int) -> None:
            results[i] = await processes.transcribe(wavs[i])

        async def tick() -> None:
            while len(results) < len(wavs):
                ticks.append(time.perf_counter())
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            for i in range(len(wavs)):
                tg.start_soon(one, i)
        niceness = await anyio.to_process.run_sync(_decoding_niceness_and_count)
        assert niceness[0] >= min(19, os.nice(0) + 1)  # the ASR process lowered its priority
        return [results[i] for i in range(len(wavs))]

    assert anyio.run(main) == [sphinx.transcribe(w) for w in wavs]
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert gaps and max(gaps) < 0.5, f"the event loop stalled {max(gaps):.2f} s"


def _asr_settings(tmp_path: Path, keys: str) -> ASRSettings:
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL_CONFIG + "\n[qa.asr]\n" + keys)
    return load_config(path).asr


def test_asr_settings_from_config_and_make_transcriber(tmp_path):
    assert _asr_settings(tmp_path, "") == ASRSettings()
    http = _asr_settings(
        tmp_path, 'engine = "http"\nbase_url = "http://localhost:8000/v1"\nmax_attempts = 5\n'
    )
    assert (http.engine, http.base_url, http.max_attempts) == ("http", "http://localhost:8000/v1", 5)
    transcriber = make_transcriber(http)
    assert isinstance(transcriber, HttpTranscriber) and transcriber.max_attempts == 5
    anyio.run(transcriber.aclose)
    offline = make_transcriber(_asr_settings(tmp_path, "concurrency = 3\n"))
    assert isinstance(offline, PocketsphinxProcesses) and offline.concurrency == 3
    assert make_transcriber(_asr_settings(tmp_path, 'engine = "none"\n')) is None
    # every rule, with file and line: tests/test_config.py; here one to show the key is named
    with pytest.raises(ConfigError, match=r"config\.toml:10: qa\.asr\.engine: must be one of pocketsphinx"):
        _asr_settings(tmp_path, 'engine = "whisper"\n')
