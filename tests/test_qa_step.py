"""The ASR check as a step of the engine: real Piper takes, transcribed by a real loopback
``/v1/audio/transcriptions`` server after they are recorded, their error rates and flags stored
with the take, and ``tui-app status --qa --json`` reporting the flagged takes in its contract's shape."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("piper", reason="the local extra (piper-tts) is not installed")

PROMPTS = {
    "arctic_a0001": "Author of the danger trail, Philip Steels, etc.",
    "arctic_a0002": "Not at this particular case, Tom, apologized Whittemore.",
    "arctic_a0003": "For the twentieth time that evening the two men shook hands.",
    "arctic_a0004": "Lord, but I'm glad to see you again, Phil.",
}


class Transcripts(BaseHTTPRequestHandler):
    """``POST /v1/audio/transcriptions`` (multipart, OpenAI's shape): the text registered for the
    uploaded file's sha256 in ``server.heard``, as ``{"text": ...}``."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
        wav = b""
        for part in body.split(b"--" + boundary):
            head, _, data = part.partition(b"\r\n\r\n")
            if b'name="file"' in head:
                wav = data[: -len(b"\r\n")]
        self.server.uploads += 1  # type: ignore[attr-defined]
        text = self.server.heard.get(hashlib.sha256(wav).hexdigest(), "")  # type: ignore[attr-defined]
        answer = json.dumps({"text": text}).encode()
        self.send_response(200 if self.path == "/v1/audio/transcriptions" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Transcripts)
    httpd.heard = {}  # type: ignore[attr-defined]
    httpd.uploads = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _project(root: Path, asr: str) -> None:
    (root / "prompts.data").write_text("".join(f'( {k} "{t}" )\n' for k, t in PROMPTS.items()))
    (root / "config.toml").write_text(
        '[collections.dataset]\nsource = "prompts.data"\nprovider = "local"\n\n'
        '[providers.local]\nkind = "piper"\n\n' + asr
    )


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_app", *args], cwd=root, capture_output=True, text=True, timeout=120
    )


def test_takes_are_transcribed_after_they_are_recorded_and_a_wrong_clip_is_flagged(tmp_path, server):
    _project(tmp_path, '[qa.asr]\nengine = "none"\n')
    done = _cli(tmp_path, "--batch")
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    takes = dict(
        db.execute("SELECT i.key, t.sha256 FROM takes t JOIN items i ON i.id = t.item_id").fetchall()
    )
    assert db.execute("SELECT COUNT(*) FROM takes WHERE asr_at IS NULL").fetchone()[0] == 4
    db.close()
    # the server hears each clip's own sentence, but arctic_a0003's clip says another one
    for key, sha in takes.items():
        server.heard[sha] = PROMPTS["arctic_a0001" if key == "arctic_a0003" else key]
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    _project(tmp_path, f'[qa.asr]\nengine = "http"\nbase_url = "{url}"\nconcurrency = 2\n')
    done = _cli(tmp_path, "--batch")  # nothing to generate: the checks left are done
    assert done.returncode == 0, done.stderr
    assert server.uploads == 4
    report = _cli(tmp_path, "status", "--qa", "--json")
    assert report.returncode == 0, report.stderr
    flagged = json.loads(report.stdout)
    assert list(flagged) == ["dataset"] and list(flagged["dataset"]) == ["arctic_a0003"]
    wrong = flagged["dataset"]["arctic_a0003"]
    assert "asr_mismatch" in wrong["flags"] and wrong["qa"]["cer"] > 0.5
    assert {"wer", "cer", "duration_s", "loudness_lufs"} <= set(wrong["qa"])
    db = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    checked = db.execute("SELECT COUNT(*) FROM takes WHERE asr_at > 0").fetchone()[0]
    good = db.execute(
        "SELECT json_extract(t.qa, '$.wer') FROM takes t JOIN items i ON i.id = t.item_id WHERE i.key != ?",
        ("arctic_a0003",),
    ).fetchall()
    db.close()
    assert checked == 4 and all(w == 0 for (w,) in good)
    # checked takes are not checked again
    assert _cli(tmp_path, "--batch").returncode == 0 and server.uploads == 4
    text = _cli(tmp_path, "status", "--qa")
    assert text.stdout.startswith("dataset/arctic_a0003: asr_mismatch") and "1 take flagged" in text.stderr


def test_a_bad_qa_table_is_one_line_naming_the_key(tmp_path):
    _project(tmp_path, "[qa]\nmax_cer = -1\n")
    done = _cli(tmp_path, "status")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "qa.max_cer" in done.stderr
    _project(tmp_path, '[qa.asr]\nengine = "whisperer"\n')
    done = _cli(tmp_path, "status")
    assert done.returncode == 2 and "qa.asr.engine" in done.stderr


def test_the_default_offline_check_runs_in_its_own_processes_through_the_command_line(tmp_path):
    """``tui-app --batch`` with the default [qa.asr] (pocketsphinx in niced worker processes):
    every take checked, its error rates stored, and the run exits 0 with no process left over."""
    pytest.importorskip("pocketsphinx")
    _project(tmp_path, "")
    done = _cli(tmp_path, "--batch")
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(tmp_path / "data" / "state.sqlite")
    rows = db.execute(
        "SELECT t.asr_at, json_extract(t.qa, '$.cer'), json_extract(t.qa, '$.asr_text') FROM takes t"
    ).fetchall()
    db.close()
    assert len(rows) == 4 and all(at and cer is not None for at, cer, _ in rows)
    assert sum(cer <= 0.6 for _, cer, _ in rows) >= 3  # pocketsphinx hears Piper's good clips
    assert all(text for _, _, text in rows)
