"""Request and response shapes of the HTTP providers against the loopback server."""

from __future__ import annotations

import base64
import io
import json
import wave
from pathlib import Path

import pytest
from PIL import Image

from httpapi.loopback import API_KEY, BASIC, XI_KEY, Fault, LoopbackServer
from tui_app.config import ProviderConfig
from tui_app.providers import ProviderError, Request
from tui_app.providers.a1111 import A1111Provider
from tui_app.providers.elevenlabs import ElevenLabsProvider
from tui_app.providers.openai_api import OpenAIProvider

pytestmark = pytest.mark.anyio
PHOTO = sorted((Path(__file__).resolve().parents[2] / "data" / "photos").glob("*.jpg"))[0]


def _openai(server: LoopbackServer, **options) -> OpenAIProvider:
    return OpenAIProvider(
        ProviderConfig(
            "oa",
            "openai",
            concurrency=2,
            timeout_s=10,
            options={"base_url": f"{server.url}/v1", "api_key_env": "LOOPBACK_OPENAI_KEY", **options},
        )
    )


def _entry(text="Author of the danger trail.", emotion=None, **options) -> Request:
    params = {"emotion": emotion} if emotion else {}
    return Request("dataset", "speech", "arctic_a0001", text, params, {"speed": 1.0, **options})


def _wav(data: bytes) -> tuple[int, int, int, int]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


async def test_openai_speech_sends_the_documented_fields_and_returns_a_wav(server, keys):
    provider = _openai(server)
    out = await provider.generate(_entry(emotion="cheerful"))
    await provider.aclose()
    (req,) = server.of("speech")
    assert req.path == "/v1/audio/speech"
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["content-type"] == "application/json"
    assert req.json == {
        "model": "gpt-4o-mini-tts",
        "input": "Author of the danger trail.",
        "voice": "alloy",
        "response_format": "wav",
        "speed": 1.0,
        "instructions": "Speak in a cheerful tone.",
    }
    rate, channels, width, frames = _wav(out.data)
    assert (rate, channels, width) == (24_000, 1, 2) and frames > 0
    assert out.sample_rate == 24_000 and out.duration_s == pytest.approx(frames / rate)
    assert "input" not in out.params and out.params["voice"] == "alloy"


async def test_openai_speech_pcm_is_wrapped_and_instructions_only_where_the_model_takes_them(server, keys):
    provider = _openai(server, response_format="pcm", speech_model="tts-1", voice="nova")
    out = await provider.generate(_entry(emotion="sad", voice="onyx"))
    await provider.aclose()
    (req,) = server.of("speech")
    assert req.json["response_format"] == "pcm" and req.json["model"] == "tts-1"
    assert req.json["voice"] == "onyx"  # the collection's voice wins over the provider's
    assert "instructions" not in req.json  # tts-1 takes no instructions
    assert _wav(out.data)[:3] == (24_000, 1, 2)


async def test_openai_images_b64_and_url_answers(server, keys):
    provider = _openai(server, image_model="dall-e-3")
    page = Request(
        "pages",
        "picture",
        "page_001",
        "Once upon a time",
        {"prompt": "watercolour. rabbits", "seed": 7},
        {"width": 96, "height": 64},
    )
    out = await provider.generate(page)
    req = server.of("generations")[-1]
    assert req.json == {
        "model": "dall-e-3",
        "prompt": "watercolour. rabbits",
        "size": "96x64",
        "n": 1,
        "response_format": "b64_json",
    }
    assert (out.width, out.height, out.suffix) == (96, 64, ".png")
    assert Image.open(io.BytesIO(out.data)).size == (96, 64)

    url_provider = _openai(server, image_model="dall-e-2", image_response_format="url")
    out = await url_provider.generate(page)
    assert server.of("generations")[-1].json["response_format"] == "url"
    assert Image.open(io.BytesIO(out.data)).size == (96, 64)
    (asset,) = server.of("asset")
    assert asset.method == "GET"
    for p in (provider, url_provider):
        await p.aclose()


async def test_gpt_image_gets_no_response_format(server, keys):
    provider = _openai(server)
    await provider.generate(
        Request("pages", "picture", "page_000", "T", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64})
    )
    await provider.aclose()
    assert server.of("generations")[0].json == {
        "model": "gpt-image-1",
        "prompt": "p",
        "size": "64x64",
        "n": 1,
    }


async def test_openai_edits_is_multipart_with_the_photo_and_its_mime_type(server, keys):
    provider = _openai(server)
    variant = Request(
        "variants",
        "variant",
        "x.s0-forensic",
        PHOTO.name,
        {"temperature": 0.1, "seed": 42},
        {"prompt": "Restore this photo."},
        source=PHOTO,
    )
    out = await provider.generate(variant)
    await provider.aclose()
    (req,) = server.of("edits")
    assert req.headers["content-type"].startswith("multipart/form-data; boundary=")
    filename, mime, data = req.form["image"]
    assert (filename, mime, data) == (PHOTO.name, "image/jpeg", PHOTO.read_bytes())
    assert req.form["model"] == "gpt-image-1" and req.form["n"] == "1"
    assert req.form["prompt"].startswith("Restore this photo. Change as little as possible")
    assert out.suffix == ".png" and Image.open(io.BytesIO(out.data)).size == (out.width, out.height)


async def test_a1111_txt2img_records_the_seed_the_server_used(server):
    provider = A1111Provider(
        ProviderConfig(
            "sd", "a1111", options={"base_url": server.url, "steps": 12, "sampler_name": "Euler a"}
        )
    )
    page = Request(
        "pages",
        "picture",
        "page_002",
        "text",
        {"prompt": "a rabbit", "seed": None},
        {"width": 128, "height": 96},
    )
    out = await provider.generate(page)
    (req,) = server.of("txt2img")
    assert req.json["seed"] == -1 and req.json["width"] == 128 and req.json["height"] == 96
    assert req.json["steps"] == 12 and req.json["sampler_name"] == "Euler a"
    assert req.json["batch_size"] == 1 and req.json["n_iter"] == 1
    assert out.seed is not None and out.seed >= 0  # from the info JSON string, not the -1 sent
    assert out.model == "v1-5-pruned-emaonly" and (out.width, out.height) == (128, 96)

    seeded = await provider.generate(
        Request(
            "pages", "picture", "page_003", "t", {"prompt": "b", "seed": 1237}, {"width": 64, "height": 64}
        )
    )
    assert seeded.seed == 1237
    await provider.aclose()


async def test_a1111_img2img_sends_the_photo_and_denoising_strength_from_the_temperature(server, monkeypatch):
    monkeypatch.setenv("LOOPBACK_A1111_PASSWORD", BASIC[1])
    server.basic_auth = True
    provider = A1111Provider(
        ProviderConfig(
            "sd",
            "a1111",
            options={
                "base_url": server.url,
                "username": BASIC[0],
                "password_env": "LOOPBACK_A1111_PASSWORD",
                "max_side": 512,
            },
        )
    )
    variant = Request(
        "variants",
        "variant",
        "p.s2-creative",
        PHOTO.name,
        {"temperature": 0.8, "seed": 99},
        {},
        source=PHOTO,
    )
    out = await provider.generate(variant)
    (req,) = server.of("img2img")
    assert (
        req.headers["authorization"]
        == "Basic " + base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
    )
    assert base64.b64decode(req.json["init_images"][0]) == PHOTO.read_bytes()
    assert req.json["denoising_strength"] == 0.8 and req.json["seed"] == 99
    assert (
        req.json["width"] % 8 == 0
        and req.json["height"] % 8 == 0
        and max(req.json["width"], req.json["height"]) <= 512
    )
    assert out.seed == 99 and out.params["denoising_strength"] == 0.8
    big = await provider.upscale(out.data, 2)
    assert Image.open(io.BytesIO(big)).size == (2 * out.width, 2 * out.height)
    assert server.of("upscale")[0].json["upscaler_1"] == "R-ESRGAN 4x+"
    await provider.aclose()


async def test_a1111_wrong_password_fails_without_retry(server, monkeypatch):
    monkeypatch.setenv("LOOPBACK_A1111_PASSWORD", "wrong-password-value")
    server.basic_auth = True
    provider = A1111Provider(
        ProviderConfig(
            "sd",
            "a1111",
            options={"base_url": server.url, "username": BASIC[0], "password_env": "LOOPBACK_A1111_PASSWORD"},
        )
    )
    with pytest.raises(ProviderError) as info:
        await provider.generate(
            Request(
                "pages", "picture", "page_000", "t", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64}
            )
        )
    await provider.aclose()
    assert info.value.status == 401 and not info.value.retryable
    assert "Incorrect username or password" in info.value.message
    assert "wrong-password-value" not in str(info.value)


async def test_elevenlabs_request_and_pcm_22050_written_as_wav(server, keys):
    provider = ElevenLabsProvider(
        ProviderConfig(
            "el",
            "elevenlabs",
            options={
                "base_url": server.url,
                "api_key_env": "LOOPBACK_XI_KEY",
                "voice_id": "21m00Tcm4TlvDq8ikWAM",
            },
        )
    )
    out = await provider.generate(_entry(emotion="happy"))
    await provider.aclose()
    (req,) = server.of("elevenlabs")
    assert req.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM"
    assert req.query == {"output_format": ["pcm_22050"]}
    assert req.headers["xi-api-key"] == XI_KEY and "authorization" not in req.headers
    assert req.json["text"] == "Author of the danger trail."
    assert req.json["model_id"] == "eleven_multilingual_v2"
    assert req.json["voice_settings"] == {
        "stability": 0.35,
        "similarity_boost": 0.75,
        "style": 0.6,
        "use_speaker_boost": True,
    }
    assert _wav(out.data)[:3] == (22_050, 1, 2) and out.sample_rate == 22_050


@pytest.mark.parametrize(
    "route,fault,expected",
    [
        (
            "speech",
            Fault(
                status=401,
                body={
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
            ),
            ("HTTP 401: Incorrect API key provided. [invalid_api_key]", False),
        ),
        (
            "speech",
            Fault(
                status=429,
                body={
                    "error": {
                        "message": "You exceeded your current quota.",
                        "type": "insufficient_quota",
                        "param": None,
                        "code": "insufficient_quota",
                    }
                },
            ),
            ("HTTP 429: You exceeded your current quota. [insufficient_quota]", False),
        ),
        (
            "speech",
            Fault(status=404, body={"detail": "Voice 'zz' not found"}),
            ("HTTP 404: Voice 'zz' not found", False),
        ),
        (
            "speech",
            Fault(
                status=422,
                body={
                    "detail": [
                        {
                            "loc": ["body", "speed"],
                            "msg": "ensure this value is less than or equal to 4",
                            "type": "value_error",
                        }
                    ]
                },
            ),
            ("HTTP 422: speed: ensure this value is less than or equal to 4", False),
        ),
        (
            "speech",
            Fault(status=403, body=b"<html>Forbidden</html>"),
            ("HTTP 403: <html>Forbidden</html>", False),
        ),
        (
            "speech",
            Fault(
                status=500,
                body={
                    "error": {
                        "message": "The server had an error.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
            ),
            ("HTTP 500: The server had an error. [server_error]", True),
        ),
        ("speech", Fault(status=503, body=b""), ("HTTP 503: empty body", True)),
        ("speech", Fault(status=408, body={"detail": "timeout"}), ("HTTP 408: timeout", True)),
        ("speech", Fault(status=409, body={"detail": "conflict"}), ("HTTP 409: conflict", True)),
    ],
)
async def test_error_shapes_and_retry_verdicts_openai(server, keys, route, fault, expected):
    server.inject(route, fault)
    provider = _openai(server)
    with pytest.raises(ProviderError) as info:
        await provider.generate(_entry())
    await provider.aclose()
    assert (info.value.message, info.value.retryable) == expected
    assert info.value.status == fault.status


async def test_error_shapes_a1111_and_elevenlabs(server, keys):
    server.inject(
        "txt2img",
        Fault(
            status=500,
            body={
                "error": "OutOfMemoryError",
                "detail": "",
                "body": "",
                "errors": "CUDA out of memory. Tried to allocate 2.00 GiB",
            },
        ),
    )
    sd = A1111Provider(ProviderConfig("sd", "a1111", options={"base_url": server.url}))
    with pytest.raises(ProviderError) as info:
        await sd.generate(
            Request(
                "pages", "picture", "page_000", "t", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64}
            )
        )
    assert info.value.message == "HTTP 500: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert info.value.retryable
    await sd.aclose()

    server.inject(
        "elevenlabs",
        Fault(
            status=401,
            body={"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota."}},
        ),
    )
    server.inject(
        "elevenlabs",
        Fault(
            status=429,
            body={
                "detail": {
                    "status": "too_many_concurrent_requests",
                    "message": "Too many concurrent requests.",
                }
            },
        ),
    )
    el = ElevenLabsProvider(
        ProviderConfig(
            "el",
            "elevenlabs",
            options={"base_url": server.url, "api_key_env": "LOOPBACK_XI_KEY", "voice_id": "v"},
        )
    )
    with pytest.raises(ProviderError) as info:
        await el.generate(_entry())
    assert info.value.message == "HTTP 401: This request exceeds your quota. [quota_exceeded]"
    assert not info.value.retryable
    with pytest.raises(ProviderError) as info:
        await el.generate(_entry())
    assert info.value.retryable and info.value.lower_concurrency
    await el.aclose()


@pytest.mark.parametrize(
    "route,corrupt,needle",
    [
        ("speech", "wrong_content", "not a valid WAV file"),
        ("speech", "wrong_rate", "wrong sample rate: the WAV is 16000 Hz, expected 24000 Hz"),
        ("generations", "bad_base64", "data[0].b64_json is not valid base64"),
        ("generations", "wrong_content", "not a decodable image"),
        ("generations", "not_json", "the images answer is not JSON"),
        ("txt2img", "bad_base64", "images[0] is not valid base64"),
        ("txt2img", "wrong_content", "images[0] is not a decodable image"),
        ("elevenlabs", "wrong_content", "expected raw 16-bit PCM, got application/json"),
        ("elevenlabs", "truncated_sample", "truncated PCM"),
    ],
)
async def test_malformed_answers_fail_clearly_without_retry(server, keys, route, corrupt, needle):
    server.inject(route, Fault(corrupt=corrupt))
    if route == "speech":
        provider, request = _openai(server, sample_rate=24_000), _entry()
    elif route == "generations":
        provider = _openai(server)
        request = Request(
            "pages", "picture", "page_000", "t", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64}
        )
    elif route == "txt2img":
        provider = A1111Provider(ProviderConfig("sd", "a1111", options={"base_url": server.url}))
        request = Request(
            "pages", "picture", "page_000", "t", {"prompt": "p", "seed": 1}, {"width": 64, "height": 64}
        )
    else:
        provider = ElevenLabsProvider(
            ProviderConfig(
                "el",
                "elevenlabs",
                options={"base_url": server.url, "api_key_env": "LOOPBACK_XI_KEY", "voice_id": "v"},
            )
        )
        request = _entry()
    with pytest.raises(ProviderError) as info:
        await provider.generate(request)
    await provider.aclose()
    assert needle in info.value.message and not info.value.retryable


@pytest.mark.parametrize(
    "fault,needle",
    [
        (Fault(drop=True), "connection error"),
        (Fault(truncate=True), "truncated body"),
        (Fault(delay_s=1.0), "read timeout"),
    ],
)
async def test_transport_faults_are_retryable(server, keys, fault, needle):
    server.inject("speech", fault)
    provider = _openai(server, read_timeout_s=0.3)
    with pytest.raises(ProviderError) as info:
        await provider.generate(_entry())
    assert needle in info.value.message and info.value.retryable
    out = await provider.generate(_entry())  # the pool recovers: the next request works
    assert _wav(out.data)[0] == 24_000
    await provider.aclose()


async def test_connection_refused_is_retryable(keys):
    server = LoopbackServer().start()
    url = server.url
    server.stop()
    provider = OpenAIProvider(
        ProviderConfig(
            "oa", "openai", options={"base_url": f"{url}/v1", "api_key_env": "LOOPBACK_OPENAI_KEY"}
        )
    )
    with pytest.raises(ProviderError) as info:
        await provider.generate(_entry())
    await provider.aclose()
    assert info.value.retryable and info.value.message.startswith("connection error")


async def test_missing_key_variable_is_a_clear_error(monkeypatch, server):
    monkeypatch.delenv("LOOPBACK_OPENAI_KEY", raising=False)
    provider = _openai(server)
    with pytest.raises(ProviderError, match="environment variable LOOPBACK_OPENAI_KEY is not set"):
        await provider.prepare()
    assert server.requests == []


def test_pool_is_sized_to_the_concurrency(server, keys):
    provider = _openai(server)
    pool = provider.client().client._transport._pool
    assert pool._max_connections == 2 and pool._max_keepalive_connections == 2
    big = OpenAIProvider(ProviderConfig("oa", "openai", concurrency=32, options={"api_key_env": ""}))
    pools = [shard._transport._pool for shard in big.client().shards]
    assert sum(p._max_connections for p in pools) == 32 and max(p._max_connections for p in pools) <= 8
    timeout = provider.client().client.timeout
    assert timeout.connect == 10.0 and timeout.read == 10.0
    json.dumps(provider.options)  # options hold no secret objects
