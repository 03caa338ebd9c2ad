"""The web app through Flask's test client, without Java: TorchServe down (503), silent (504),
or a small fake on loopback that answers like TorchServe 0.12 (success, 404, 400 paths)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import socket

import pytest
from PIL import Image, ImageDraw
from support.fake_torchserve import FakeTorchServe
from support.servers import blank_png, drawing_png, free_ports, truncated_png

from webapp import create_app

PNG = drawing_png("L")
B64 = base64.b64encode(PNG).decode()


def png_of_size(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def client(fake_torchserve):
    app = create_app({"INFERENCE_URL": fake_torchserve, "MANAGEMENT_URL": fake_torchserve})
    FakeTorchServe.seen.clear()
    return app.test_client()


@pytest.fixture
def down_client():
    """TorchServe not listening: a loopback port nothing is bound to."""
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    return create_app({"INFERENCE_URL": url, "MANAGEMENT_URL": url}).test_client()


def test_predict_multipart_returns_predictions_preview_and_latency(client):
    response = client.post("/api/predict", data={"image": (io.BytesIO(PNG), "a.png"), "topk": "3"})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["model"] == "emnist-cnn" and body["version"] == "1.0" and body["empty"] is False
    assert [p["label"] for p in body["predictions"]] == ["L", "I", "1"]
    assert body["preview"].startswith("data:image/png;base64,")
    preview = Image.open(io.BytesIO(base64.b64decode(body["preview"].split(",", 1)[1])))
    assert preview.size == (28, 28)
    assert body["latency_ms"] >= 0
    sent = FakeTorchServe.seen[-1]
    # The original bytes go through; every class is asked for (the app applies the charset and
    # the top k itself), as a header (TorchServe drops query strings).
    assert sent["body"] == PNG and sent["headers"]["Content-Type"] == "image/png"
    assert sent["headers"]["X-TopK"] == "47" and sent["path"] == "/predictions/emnist-cnn"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"data": PNG, "content_type": "image/png"}, "/predictions/emnist-cnn"),
        ({"json": {"image": B64, "model": "emnist-rcnn"}}, "/predictions/emnist-rcnn"),
        ({"json": {"image": f"data:image/png;base64,{B64}", "version": "2.0"}}, None),
        ({"data": f"data:image/png;base64,{B64}", "content_type": "text/plain"}, None),
    ],
    ids=["raw-bytes", "json-base64-model", "json-data-url-version", "data-url-text"],
)
def test_predict_accepts_every_request_shape(client, kwargs, path):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == 200, response.json
    assert FakeTorchServe.seen[-1]["body"] == PNG
    if path:
        assert FakeTorchServe.seen[-1]["path"] == path
    if "version" in kwargs.get("json", {}):
        assert FakeTorchServe.seen[-1]["path"] == "/predictions/emnist-cnn/2.0"


def test_model_and_version_from_the_query_string(client):
    response = client.post(
        "/api/predict?model=emnist-cnn&version=2.0&topk=2", data=PNG, content_type="image/png"
    )
    assert response.status_code == 200
    assert response.json["version"] == "2.0" and len(response.json["predictions"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "empty"),
        ({"data": b"", "content_type": "image/png"}, "empty"),
        ({"data": b"\x00\x01not an image\xff" * 20, "content_type": "image/png"}, "not a readable"),
        ({"data": png_of_size(4097, 8), "content_type": "image/png"}, "4096"),
        ({"data": b"\x89PNG" + b"\0" * (2 * 1024 * 1024), "content_type": "image/png"}, "2 MB"),
        ({"json": {"image": "%%% not base64 %%%"}}, "base64"),
        ({"json": {"picture": B64}}, '"image"'),
        ({"data": "{not json", "content_type": "application/json"}, "JSON"),
        ({"data": {"other": (io.BytesIO(b""), "")}}, "empty"),
        ({"data": {"text": "hi"}, "content_type": "multipart/form-data"}, "no image"),
        ({"json": {"image": B64, "topk": 0}}, "topk"),
        ({"json": {"image": B64, "topk": "three"}}, "topk"),
    ],
    ids=[
        "no-body", "empty-body", "garbage", "too-wide", "over-2mb", "bad-base64",
        "json-without-image", "broken-json", "empty-file", "form-without-image", "topk-0",
        "topk-text",
    ],
)  # fmt: skip
def test_bad_inputs_get_a_400_with_a_message(client, kwargs, fragment):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == 400, response.json
    assert response.is_json and response.json["code"] == 400
    assert fragment.lower() in response.json["message"].lower()
    assert "Traceback" not in response.get_data(as_text=True)
    assert not FakeTorchServe.seen  # refused before reaching TorchServe


def test_corrupt_pixel_data_is_a_400_even_from_an_archive_without_input(client):
    # The header is fine, so it goes to TorchServe (whose handler decodes it); this fake, like
    # archives before 2.1, sends no `input`, and the app's own preprocessing finds the damage.
    response = client.post("/api/predict", data=truncated_png(), content_type="image/png")
    assert response.status_code == 400 and "truncated" in response.json["message"]
    assert FakeTorchServe.seen[-1]["headers"]["X-Input"] == "true"


def test_form_encoded_bodies_are_refused_with_a_hint(client):
    response = client.post(
        "/api/predict", data=B64, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415 and "curl -T" in response.json["message"]


def test_torchserve_refusing_the_image_is_a_400_with_its_message(client, monkeypatch):
    import webapp.api

    real = webapp.api.read_drawing

    def with_bad_bytes():
        # TorchServe is sent bytes that the app's own check would have refused.
        return dataclasses.replace(real(), image=b"BAD")

    monkeypatch.setattr(webapp.api, "read_drawing", with_bad_bytes)
    response = client.post("/api/predict", data=PNG, content_type="image/png")
    assert response.status_code == 400 and "corrupt" in response.json["message"]


@pytest.mark.parametrize(
    "query", ["model=nope", "model=emnist-cnn&version=9.9", "model=../models", "version=1.0%2F.."]
)
def test_unknown_models_and_versions_are_404(client, query):
    response = client.post(f"/api/predict?{query}", data=PNG, content_type="image/png")
    assert response.status_code == 404 and "/api/models" in response.json["message"]


def test_blank_drawing_preview_is_empty(client):
    response = client.post("/api/predict", data=blank_png(), content_type="image/png")
    assert response.status_code == 200


def test_compare_runs_every_default_model(client):
    response = client.post("/api/compare", data={"image": (io.BytesIO(PNG), "a.png")})
    assert response.status_code == 200
    results = response.json["results"]
    assert [(r["model"], r["version"]) for r in results] == [
        ("emnist-cnn", "1.0"),
        ("emnist-rcnn", "1.0"),
    ]
    assert all(r["latency_ms"] >= 0 and r["predictions"] for r in results)
    assert response.json["preview"].startswith("data:image/png;base64,")


def test_models_lists_versions_and_defaults(client):
    response = client.get("/api/models")
    assert response.json == {
        "models": [
            {"name": "emnist-cnn", "default": "1.0", "versions": ["1.0", "2.0"]},
            {"name": "emnist-rcnn", "default": "1.0", "versions": ["1.0"]},
        ],
        "default_model": "emnist-cnn",
    }


def test_healthz_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["torchserve"]["reachable"] is True


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/api/predict", {"data": PNG, "content_type": "image/png"}),
        ("post", "/api/compare", {"data": PNG, "content_type": "image/png"}),
        ("get", "/api/models", {}),
        ("get", "/healthz", {}),
    ],
)
def test_torchserve_down_is_503_with_retry_after(down_client, method, path, kwargs):
    response = getattr(down_client, method)(path, **kwargs)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "not reachable" in json.dumps(response.json)


def test_torchserve_silent_is_504():
    """A listener that accepts connections and never answers: the read timeout fires."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        app = create_app({"INFERENCE_URL": url, "MANAGEMENT_URL": url, "READ_TIMEOUT": 0.3})
        response = app.test_client().post("/api/predict", data=PNG, content_type="image/png")
    assert response.status_code == 504 and "did not answer" in response.json["message"]


def test_predictions_are_post_only(client):
    response = client.get("/api/predict")
    assert response.status_code == 405 and response.is_json and "POST" in response.headers["Allow"]


def test_unknown_routes_are_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.json["code"] == 404


def test_page_has_the_stable_ids_and_no_inline_script(client):
    response = client.get("/")
    html = response.get_data(as_text=True)
    for element_id in ("canvas", "predict", "clear", "undo", "prediction", "model-select"):
        assert f'id="{element_id}"' in html
    assert "<script>" not in html and "http" not in html.split("<body")[0].replace("http-", "")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200


def test_environment_configures_the_app(monkeypatch):
    monkeypatch.setenv("EMNIST_INFERENCE_URL", "http://127.0.0.1:1234")
    monkeypatch.setenv("EMNIST_READ_TIMEOUT", "7")
    app = create_app()
    assert app.extensions["torchserve"].inference_url == "http://127.0.0.1:1234"
    assert app.extensions["torchserve"].timeout == (2.0, 7.0)


def test_token_file_keys_are_sent(tmp_path, fake_torchserve):
    keys = {"inference": {"key": "inf-key"}, "management": {"key": "man-key"}}
    (tmp_path / "key_file.json").write_text(json.dumps(keys))
    app = create_app(
        {
            "INFERENCE_URL": fake_torchserve,
            "MANAGEMENT_URL": fake_torchserve,
            "TOKEN_FILE": str(tmp_path / "key_file.json"),
        }
    )
    FakeTorchServe.seen.clear()
    app.test_client().post("/api/predict", data=PNG, content_type="image/png")
    assert FakeTorchServe.seen[-1]["headers"]["Authorization"] == "Bearer inf-key"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"image": (io.BytesIO(PNG), "a.png"), "charset": "letters"}},
        {"data": PNG, "content_type": "image/png", "query_string": {"charset": "letters"}},
        {"json": {"image": B64, "charset": "letters"}},
        {"data": PNG, "content_type": "image/png", "headers": {"X-Charset": "letters"}},
    ],
    ids=["form-field", "query", "json-key", "header"],
)
def test_charset_in_every_form_renormalises_over_its_classes(client, kwargs):
    """The fake answers L, I, 1, C, 7 at 0.5 each: letters keeps L, I, C at a third each."""
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["charset"] == "letters"
    assert [p["label"] for p in body["predictions"]] == ["L", "I", "C"]
    assert [p["probability"] for p in body["predictions"]] == pytest.approx([1 / 3] * 3, abs=1e-5)
    assert body["confidence"] == {"sure": False, "reason": "lookalike", "alternatives": ["I"]}


@pytest.mark.parametrize("value", ["greek", "LETTERSX", "1"])
def test_an_unknown_charset_is_a_400_that_names_the_choices(client, value):
    response = client.post(
        "/api/predict", data={"image": (io.BytesIO(PNG), "a.png"), "charset": value}
    )
    assert response.status_code == 400
    assert "any, digits, letters, upper, lower" in response.json["message"]
    assert FakeTorchServe.seen == []  # refused before TorchServe is asked


def test_digits_only_for_the_digits_and_compare_marks_no_model_digits_only(client):
    response = client.post(
        "/api/predict", data={"image": (io.BytesIO(PNG), "a.png"), "charset": "digits"}
    )
    assert [p["label"] for p in response.json["predictions"]] == ["1", "7"]
    compare = client.post("/api/compare", data={"image": (io.BytesIO(PNG), "a.png")}).json
    assert compare["charset"] == "any"
    assert [r["digits_only"] for r in compare["results"]] == [False, False]


def test_a_dot_and_a_small_drawing(client):
    dot = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(dot).ellipse((132, 132, 148, 148), fill="black")
    small = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(small).line([(20, 20), (20, 60)], fill="black", width=15)
    answers = []
    for image in (dot, small):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        answers.append(
            client.post("/api/predict", data=buffer.getvalue(), content_type="image/png").json
        )
    assert (
        answers[0]["empty"]
        and answers[0]["empty_reason"] == "dot"
        and answers[0]["predictions"] == []
    )
    assert not answers[1]["empty"] and answers[1]["hint"] == "small"
