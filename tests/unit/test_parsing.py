"""Request parsing and response bodies (torch-free): every accepted envelope, every refusal."""

import base64
import json

import numpy as np
import pytest
from support.servers import drawing_png

from emnist import responses
from emnist.labels import load_labels
from emnist.requests import RequestError, decode_image_string, parse_request
from emnist.responses import empty_drawing, error, prediction

PNG = drawing_png()
B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{B64}"


@pytest.mark.parametrize(
    ("row", "topk"),
    [
        ({"body": bytearray(PNG)}, None),  # curl -T a.png
        ({"body": B64.encode()}, None),  # base64 text sent as bytes
        ({"body": B64 + "\n"}, None),  # text/plain
        ({"body": DATA_URL.encode()}, None),
        ({"body": {"image": B64, "topk": 3}}, 3),  # application/json, decoded by TorchServe
        ({"body": {"image": DATA_URL}}, None),
        ({"body": {"data": B64}}, None),
        ({"body": json.dumps({"image": DATA_URL, "topk": 2}).encode()}, 2),  # undecoded JSON
        ({"file": bytearray(PNG), "topk": bytearray(b"4")}, 4),  # multipart + a form field
        ({"data": bytearray(PNG)}, None),
        ({"body": {"instances": [{"data": B64}]}}, None),  # KServe v1
        ({"body": {"instances": [{"b64": B64}]}}, None),
        ({"body": {"instances": [{"image": {"b64": B64}}], "topk": 1}}, 1),
        ({"body": {"instances": [B64]}}, None),
        (
            {
                "body": {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [B64]}],
                    "parameters": {"topk": 2},
                }
            },
            2,
        ),
        ({"body": {"inputs": [{"name": "x", "datatype": "BYTES", "data": DATA_URL}]}}, None),
    ],
)
def test_every_envelope_yields_the_image_bytes(row, topk):
    parsed = parse_request(row)
    assert parsed.image == PNG
    assert parsed.topk == topk


def test_topk_from_a_query_parameter_or_header():
    assert parse_request({"body": PNG, "topk": bytearray(b"2")}).topk == 2
    assert parse_request({"body": PNG}, {"X-TopK": "3"}).topk == 3
    # The JSON body wins over the header.
    assert parse_request({"body": {"image": B64, "topk": 1}}, {"x-topk": "3"}).topk == 1


@pytest.mark.parametrize(
    ("row", "headers", "status", "fragment"),
    [
        ({}, None, 400, "no image"),
        ({"body": b""}, None, 400, "empty"),
        ({"body": "not base64 at all!"}, None, 400, "base64"),
        ({"body": b"{not json"}, None, 400, "JSON"),
        ({"body": {"picture": B64}}, None, 400, '"image"'),
        ({"body": {"instances": [B64, B64]}}, None, 400, "exactly one"),
        ({"body": {"instances": []}}, None, 400, "exactly one"),
        ({"body": {"inputs": [{"datatype": "FP32", "data": [0.0] * 784}]}}, None, 400, "BYTES"),
        ({"body": {"image": 42}}, None, 400, "base64"),
        ({"body": {"image": B64, "topk": 0}}, None, 400, "topk"),
        ({"body": {"image": B64, "topk": "many"}}, None, 400, "topk"),
        ({"body": {"image": B64, "topk": True}}, None, 400, "topk"),
        ({"body": PNG}, {"X-TopK": "-1"}, 400, "topk"),
        ({"x": b""}, {"Content-Type": "application/x-www-form-urlencoded"}, 415, "curl -T"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(row, headers, status, fragment):
    with pytest.raises(RequestError) as caught:
        parse_request(row, headers)
    assert caught.value.status == status
    assert fragment in caught.value.message


def test_base64_variants():
    assert decode_image_string(B64.rstrip("=")) == PNG  # padding dropped
    urlsafe = base64.urlsafe_b64encode(PNG).decode()
    assert decode_image_string(urlsafe) == PNG
    assert decode_image_string("data:text/plain,hello%20world") == b"hello world"


def test_prediction_is_sorted_capped_and_labelled_from_the_label_map():
    body = prediction(
        [0.1, 0.6, 0.3], ["x", "y", "z"], model="m", version="1", topk=10, batch_size=2
    )
    assert [p["label"] for p in body["predictions"]] == ["y", "z", "x"]
    assert sum(p["probability"] for p in body["predictions"]) == pytest.approx(1.0)
    assert body | {"predictions": None} == {
        "model": "m",
        "version": "1",
        "empty": False,
        "charset": "any",  # what the person said they are writing (emnist/charsets.py)
        "predictions": None,
        "confidence": {"sure": True, "reason": None, "alternatives": []},
        "hint": None,
        "batch_size": 2,
    }
    top1 = prediction(
        [0.1, 0.6, 0.3], ["x", "y", "z"], model="m", version="1", topk=1, batch_size=1
    )
    assert top1["predictions"] == [{"label": "y", "probability": 0.6}]


def test_empty_and_error_bodies():
    assert empty_drawing(model="m", version="1", batch_size=1)["predictions"] == []
    assert error(400, "bad")["type"] == "InvalidInput"
    assert error(500, "oops")["type"] == "InternalServerError"


def test_label_map_must_cover_every_index(tmp_path):
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({"1": "b", "0": "a"}))
    assert load_labels(path) == ["a", "b"]
    path.write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(ValueError, match="without gaps"):
        load_labels(path)


@pytest.mark.parametrize(
    ("row", "headers", "charset"),
    [
        ({"body": json.dumps({"image": B64, "charset": "digits"}).encode()}, {}, "digits"),
        ({"body": PNG, "charset": b"Upper"}, {}, "upper"),
        ({"body": PNG}, {"X-Charset": "lower"}, "lower"),
        ({"body": PNG}, {}, "any"),
        (
            {
                "body": {
                    "inputs": [{"datatype": "BYTES", "data": [B64]}],
                    "parameters": {"charset": "letters"},
                }
            },
            {},
            "letters",
        ),
    ],
    ids=["json", "query-or-form", "header", "default", "kserve-v2-parameters"],
)
def test_charset_comes_from_the_body_a_parameter_or_a_header(row, headers, charset):
    assert parse_request(row, headers).charset == charset


def test_an_unknown_charset_is_a_400():
    with pytest.raises(RequestError, match="unknown charset") as caught:
        parse_request({"body": PNG, "charset": b"cyrillic"})
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("row", "headers", "wanted"),
    [
        ({"body": json.dumps({"image": B64, "input": True}).encode()}, {}, True),
        ({"body": PNG, "input": b"1"}, {}, True),
        ({"body": PNG}, {"X-Input": "true"}, True),
        ({"body": PNG}, {"X-Input": "false"}, False),
        ({"body": PNG}, {}, False),
        ({"body": {"instances": [{"data": B64}]}, "input": True}, {}, True),
    ],
    ids=["json", "query-or-form", "header", "header-false", "default", "kserve-v1-instance"],
)
def test_input_is_asked_for_in_the_body_a_parameter_or_a_header(row, headers, wanted):
    assert parse_request(row, headers).want_input is wanted


def test_a_bad_input_flag_is_a_400():
    with pytest.raises(RequestError, match="input must be true or false"):
        parse_request({"body": PNG}, {"X-Input": "please"})


def test_model_input_round_trips_upright_pixels():
    pixels = np.arange(28 * 28, dtype=np.uint16).reshape(28, 28).astype(np.uint8)
    sent = responses.model_input(pixels, extent=0.51234, dot=False)
    assert sent["size"] == [28, 28] and sent["extent"] == 0.5123 and sent["dot"] is False
    upright = np.frombuffer(base64.b64decode(sent["pixels"]), dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(upright, pixels.T)  # EMNIST stores glyphs transposed
    assert np.array_equal(responses.input_pixels(json.loads(json.dumps(sent))), pixels)
    with pytest.raises(ValueError, match="28x28"):
        responses.input_pixels({**sent, "pixels": base64.b64encode(b"\0" * 27).decode()})
