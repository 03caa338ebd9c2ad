"""The TorchServe handler without a TorchServe: a real `Context` pointing at tmp_path."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from support.servers import LABELS, blank_png, drawing_png, truncated_png, write_checkpoint

from emnist import responses
from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.preprocessing import preprocess, to_model_input
from handlers import emnist_handler
from handlers.emnist_handler import CPU_THREADS_ENV, EmnistHandler
from mar.worker import minimal_context, response_status, start_batch

MANIFEST = {
    "model": {
        "modelName": "emnist-test",
        "modelVersion": "3.2",
        "serializedFile": "checkpoint.pt",
        "handler": "emnist_handler.py",
        "configFile": "model-config.yaml",
    }
}


@pytest.fixture
def model_dir(tmp_path):
    write_checkpoint(tmp_path / "checkpoint.pt")
    # Keys out of order: labels come from the keys, not the file's order.
    labels = {str(i): label for i, label in reversed(list(enumerate(LABELS)))}
    (tmp_path / "index_to_name.json").write_text(json.dumps(labels))
    (tmp_path / "model-config.yaml").write_text("batchSize: 8\nhandler:\n  cpu_threads: 1\n")
    return tmp_path


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def served(model_dir, monkeypatch, restore_threads):
    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)
    context = minimal_context(model_dir, MANIFEST)
    handler = EmnistHandler()
    handler.initialize(context)
    return handler, context


def run(served, rows, headers=None):
    handler, context = served
    start_batch(context, len(rows), headers)
    answers = handler.handle(rows, context)
    return answers, [response_status(context, i) for i in range(len(rows))]


def test_a_bad_image_fails_only_its_own_request(served):
    data_url = "data:image/png;base64," + base64.b64encode(drawing_png("L")).decode()
    rows = [
        {"body": bytearray(drawing_png())},
        {"body": bytearray(b"this is not an image")},
        {"body": bytearray(blank_png())},
        {"body": bytearray(truncated_png())},
        {"body": {"image": data_url, "topk": 2}},
    ]
    answers, statuses = run(served, rows)
    assert len(answers) == len(rows)
    assert statuses == [200, 400, 200, 400, 200]
    drawing, garbage, blank, truncated, json_request = answers
    assert drawing["model"] == "emnist-test" and drawing["version"] == "3.2"
    assert drawing["empty"] is False and drawing["batch_size"] == len(rows)
    # topk defaults to 5, capped at the 4 classes: every class, so the probabilities sum to 1.
    assert sorted(p["label"] for p in drawing["predictions"]) == sorted(LABELS)
    probabilities = [p["probability"] for p in drawing["predictions"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert garbage == {"code": 400, "type": "InvalidInput", "message": garbage["message"]}
    assert "not a readable image" in garbage["message"]
    assert "truncated" in truncated["message"]
    assert blank["empty"] is True and blank["predictions"] == []
    assert len(json_request["predictions"]) == 2
    context = served[1]
    assert all(context.get_response_content_type(i) == "application/json" for i in range(5))


def test_probabilities_are_one_softmax_of_the_logits(served, model_dir):
    png = drawing_png()
    answers, _ = run(served, [{"body": png}, {"body": png}])
    assert answers[0]["predictions"] == answers[1]["predictions"]
    model = model_from_checkpoint(load_checkpoint(model_dir / "checkpoint.pt"))
    x = torch.from_numpy(to_model_input(preprocess(png).pixels[np.newaxis]))
    with torch.inference_mode():
        expected = torch.softmax(model(x), dim=1)[0]
    served_p = {p["label"]: p["probability"] for p in answers[0]["predictions"]}
    for index, label in enumerate(LABELS):
        assert served_p[label] == pytest.approx(expected[index].item(), abs=2e-6)


def test_topk_from_body_query_parameter_and_header(served):
    png = bytearray(drawing_png())
    rows = [{"body": png, "topk": bytearray(b"1")}, {"body": png}, {"body": png, "topk": b"0"}]
    headers = [{}, {"X-TopK": "3"}, {}]
    answers, statuses = run(served, rows, headers)
    assert statuses == [200, 200, 400]
    assert [len(a.get("predictions", [])) for a in answers] == [1, 3, 0]


def test_the_label_map_must_agree_with_the_checkpoint(model_dir, restore_threads):
    (model_dir / "index_to_name.json").write_text(json.dumps(dict(enumerate("ABCD"))))
    with pytest.raises(RuntimeError, match="class names"):
        EmnistHandler().initialize(minimal_context(model_dir, MANIFEST))


def test_a_checkpoint_from_other_preprocessing_is_refused(model_dir, restore_threads):
    write_checkpoint(model_dir / "checkpoint.pt", preprocessing_version="0")
    with pytest.raises(RuntimeError, match="preprocessing version"):
        EmnistHandler().initialize(minimal_context(model_dir, MANIFEST))


def test_cpu_threads_from_model_config_or_environment(model_dir, monkeypatch, restore_threads):
    (model_dir / "model-config.yaml").write_text("handler:\n  cpu_threads: 2\n")
    monkeypatch.delenv(CPU_THREADS_ENV, raising=False)
    EmnistHandler().initialize(minimal_context(model_dir, MANIFEST))
    assert torch.get_num_threads() == 2
    monkeypatch.setenv(CPU_THREADS_ENV, "1")
    handler = EmnistHandler()
    handler.initialize(minimal_context(model_dir, MANIFEST))
    assert torch.get_num_threads() == 1
    assert handler.device == torch.device("cpu")


@pytest.mark.parametrize("gpu_id", [0, 1])
def test_the_gpu_torchserve_assigns_is_used(model_dir, monkeypatch, gpu_id):
    devices = []

    def fake_model_from_checkpoint(ckpt, device):
        devices.append(device)
        return model_from_checkpoint(ckpt, "cpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(emnist_handler, "model_from_checkpoint", fake_model_from_checkpoint)
    handler = EmnistHandler()
    handler.initialize(minimal_context(model_dir, MANIFEST, gpu_id=gpu_id))
    assert devices == [torch.device(f"cuda:{gpu_id}")]


def test_describe_reports_the_checkpoint(served):
    info = json.loads(served[0].describe_handle())
    assert info["arch"] == "cnn" and info["classes"] == len(LABELS)


def test_charset_from_body_query_parameter_and_header(served):
    """LABELS are A, b, 7, Z: `digits` leaves 7 alone, `letters` everything else."""
    rows = [
        {"body": {"image": base64.b64encode(drawing_png()).decode(), "charset": "digits"}},
        {"body": drawing_png(), "charset": b"letters"},
        {"body": drawing_png()},
        {"body": drawing_png(), "charset": b"greek"},
    ]
    headers = [{}, {}, {"X-Charset": "upper"}, {}]
    answers, statuses = run(served, rows, headers)
    assert statuses == [200, 200, 200, 400]
    assert [p["label"] for p in answers[0]["predictions"]] == ["7"]
    assert answers[0]["predictions"][0]["probability"] == 1.0 and answers[0]["charset"] == "digits"
    assert {p["label"] for p in answers[1]["predictions"]} == {"A", "b", "Z"}
    assert sum(p["probability"] for p in answers[1]["predictions"]) == pytest.approx(1.0)
    assert {p["label"] for p in answers[2]["predictions"]} == {"A", "Z"}
    assert "unknown charset" in answers[3]["message"]


def test_a_dot_is_answered_as_empty_and_keeps_out_of_the_batch(served):
    image = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(image).ellipse((132, 132, 148, 148), fill="black")  # a tap of the pen
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    answers, statuses = run(served, [{"body": buffer.getvalue()}, {"body": drawing_png()}])
    assert statuses == [200, 200]
    assert answers[0]["empty"] and answers[0]["empty_reason"] == "dot"
    assert answers[0]["predictions"] == []
    assert answers[1]["predictions"] and "confidence" in answers[1]


def test_precision_from_model_config_or_environment_and_bf16_answers_like_fp32(
    model_dir, monkeypatch, restore_threads
):
    monkeypatch.delenv(emnist_handler.PRECISION_ENV, raising=False)
    answers = {}
    for setting in ("fp32", "bf16"):
        (model_dir / "model-config.yaml").write_text(f"handler:\n  precision: {setting}\n")
        handler = EmnistHandler()
        context = minimal_context(model_dir, MANIFEST)
        handler.initialize(context)
        assert handler.precision == setting
        start_batch(context, 1)
        answers[setting] = handler.handle([{"body": drawing_png()}], context)[0]
    fp32 = {p["label"]: p["probability"] for p in answers["fp32"]["predictions"]}
    bf16 = {p["label"]: p["probability"] for p in answers["bf16"]["predictions"]}
    assert answers["fp32"]["predictions"][0]["label"] == answers["bf16"]["predictions"][0]["label"]
    assert all(abs(fp32[k] - bf16[k]) < 0.02 for k in fp32)  # bf16 rounding only
    monkeypatch.setenv(emnist_handler.PRECISION_ENV, "fp32")  # serving-time override
    handler = EmnistHandler()
    handler.initialize(minimal_context(model_dir, MANIFEST))
    assert handler.precision == "fp32"
    monkeypatch.setenv(emnist_handler.PRECISION_ENV, "auto")
    monkeypatch.setattr(emnist_handler.hardware, "cpu_bf16_native", lambda: False)
    handler.initialize(minimal_context(model_dir, MANIFEST))
    assert handler.precision == "fp32"  # no native bf16: float32
    monkeypatch.setenv(emnist_handler.PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="precision"):
        handler.initialize(minimal_context(model_dir, MANIFEST))


def test_the_input_the_model_read_comes_back_when_asked(served):
    png = drawing_png()
    rows = [{"body": png}, {"body": png, "input": b"true"}, {"body": blank_png()}]
    answers, statuses = run(served, rows, [{}, {}, {"X-Input": "1"}])
    assert statuses == [200, 200, 200]
    assert "input" not in answers[0]
    prepared = preprocess(png)
    sent = answers[1]["input"]
    assert np.array_equal(responses.input_pixels(sent), prepared.pixels)
    assert sent["extent"] == round(prepared.extent, 4) and sent["dot"] is False
    assert answers[2]["empty"] and not responses.input_pixels(answers[2]["input"]).any()
