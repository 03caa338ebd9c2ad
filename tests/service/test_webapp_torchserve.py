"""The web app against a real TorchServe on free loopback ports (small untrained archives), then
with that TorchServe stopped while the app keeps running (the 503 path)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from support.servers import (
    LABELS,
    blank_png,
    build_test_store,
    drawing_png,
    needs_java,
    start_torchserve,
    stop_torchserve,
    truncated_png,
)

from emnist.preprocessing import emnist_to_upright, preprocess
from serving import processes
from webapp import create_app

pytestmark = [
    pytest.mark.torchserve,
    pytest.mark.slow,
    needs_java,
]
PNG = drawing_png("L")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """emnist-cnn 1.0 and 2.0, emnist-rcnn 1.0 behind `make serve`'s code; stopped by PID."""
    tmp = tmp_path_factory.mktemp("webapp-ts")
    store = build_test_store(tmp)
    workdir = tmp / "logs"
    try:
        yield start_torchserve(workdir, store)
    finally:
        stop_torchserve(workdir)  # a no-op if a test has stopped it


@pytest.fixture(scope="module")
def client(served):
    endpoints = served.endpoints
    app = create_app({"INFERENCE_URL": endpoints.inference, "MANAGEMENT_URL": endpoints.management})
    return app.test_client()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {"image": (io.BytesIO(PNG), "a.png"), "topk": "3"}},
        {"data": PNG, "content_type": "image/png", "query_string": {"topk": 3}},
        {"json": {"image": base64.b64encode(PNG).decode(), "topk": 3}},
        {"json": {"image": "data:image/png;base64," + base64.b64encode(PNG).decode(), "topk": 3}},
    ],
    ids=["multipart", "raw", "json-base64", "json-data-url"],
)
def test_predict_every_shape(client, kwargs):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["model"], body["version"], body["empty"]) == ("emnist-cnn", "1.0", False)
    assert len(body["predictions"]) == 3
    assert {p["label"] for p in body["predictions"]} <= set(LABELS)
    assert body["preview"].startswith("data:image/png;base64,") and body["latency_ms"] > 0


def test_a_chosen_version_answers(client):
    response = client.post(
        "/api/predict", json={"image": base64.b64encode(PNG).decode(), "version": "2.0"}
    )
    assert response.status_code == 200 and response.json["version"] == "2.0"


def test_blank_drawing_is_empty(client):
    response = client.post("/api/predict", data=blank_png(), content_type="image/png")
    assert response.status_code == 200
    assert response.json["empty"] is True and response.json["predictions"] == []


@pytest.mark.parametrize("query", ["model=emnist-nope", "model=emnist-cnn&version=7.0"])
def test_unknown_model_or_version_is_404(client, query):
    response = client.post(f"/api/predict?{query}", data=PNG, content_type="image/png")
    assert response.status_code == 404, response.json
    assert "/api/models" in response.json["message"]


def test_compare_and_models(client):
    response = client.post("/api/compare", data=PNG, content_type="image/png")
    assert response.status_code == 200
    assert [(r["model"], r["version"]) for r in response.json["results"]] == [
        ("emnist-cnn", "1.0"),
        ("emnist-rcnn", "1.0"),
    ]
    assert all(r["latency_ms"] > 0 for r in response.json["results"])
    models = client.get("/api/models").json["models"]
    assert models == [
        {"name": "emnist-cnn", "default": "1.0", "versions": ["1.0", "2.0"]},
        {"name": "emnist-rcnn", "default": "1.0", "versions": ["1.0"]},
    ]
    assert client.get("/healthz").json["torchserve"]["reachable"] is True


def test_the_preview_is_what_the_handler_read_and_the_app_decodes_nothing(client, monkeypatch):
    import webapp.api

    def must_not_run(*args, **kwargs):
        raise AssertionError("the app preprocessed a drawing the handler had already read")

    monkeypatch.setattr(webapp.api, "preprocess", must_not_run)
    monkeypatch.setattr(webapp.api, "decode_image", must_not_run)
    for path in ("/api/predict", "/api/compare"):
        response = client.post(path, data=PNG, content_type="image/png")
        assert response.status_code == 200, response.json
        preview = base64.b64decode(response.json["preview"].split(",", 1)[1])
        shown = np.asarray(Image.open(io.BytesIO(preview)))
        assert np.array_equal(shown, emnist_to_upright(preprocess(PNG).pixels))


def test_corrupt_pixel_data_gets_the_handlers_400(client):
    response = client.post("/api/predict", data=truncated_png(), content_type="image/png")
    assert response.status_code == 400 and "truncated" in response.json["message"]


def test_torchserve_stopped_while_the_app_runs_is_503(served, client):
    """Last in the module: it stops the shared server."""
    processes.stop_torchserve(served)
    response = client.post("/api/predict", data=PNG, content_type="image/png")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "make serve" in response.json["message"]
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json["torchserve"]["reachable"] is False
