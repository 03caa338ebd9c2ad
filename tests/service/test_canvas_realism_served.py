"""A few canvas-realism drawings through the real web app and a TorchServe serving model_store/
itself: the answers equal the benchmark's offline reading of the same drawings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from support.servers import latest_released, needs_java, torchserve_running

from evaluation.drawings import load_released, preprocess_drawings, top3_names
from evaluation.stroke_drawings import drawing_set
from webapp import create_app

pytest.importorskip("HersheyFonts", reason="Hershey-Fonts (requirements.txt) draws the strokes")

ROOT = Path(__file__).resolve().parents[2]
MODEL_STORE = ROOT / "model_store"
PER_CHARACTER, SEED = 5, 7


@pytest.fixture(scope="module")
def drawings():
    return drawing_set(PER_CHARACTER, seed=SEED)


@pytest.mark.slow
@pytest.mark.torchserve
@needs_java
def test_web_app_and_torchserve_answer_as_the_benchmark_does(tmp_path, drawings):
    """A few drawings through the real web app and a TorchServe serving model_store/ itself."""
    archive = latest_released("emnist-cnn")
    version = archive.stem.removeprefix("emnist-cnn-")
    sample = drawings[::31]  # 10 drawings, spread over the characters
    expected = top3_names(released := load_released(archive), preprocess_drawings(released, sample))
    config = ROOT / "config.properties"  # model_store/ itself, with its release defaults
    with torchserve_running(tmp_path / "logs", MODEL_STORE, config=config) as server:
        endpoints = server.endpoints
        app = create_app(
            {"INFERENCE_URL": endpoints.inference, "MANAGEMENT_URL": endpoints.management}
        )
        client = app.test_client()
        for drawing, labels in zip(sample, expected, strict=True):
            response = client.post(
                "/api/predict",
                data={"image": (io.BytesIO(drawing.png), "drawing.png"), "topk": "3"},
                query_string={"model": "emnist-cnn", "version": version},
            )
            assert response.status_code == 200, response.json
            assert [p["label"] for p in response.json["predictions"]] == labels, drawing.char
    # The served answers equal these, so most of them must also name the drawn class.
    assert sum(top[0] == d.label for d, top in zip(sample, expected, strict=True)) >= 6
