"""The JSON API: /api/predict, /api/compare, /api/models and /healthz.

Images are checked here (size, format and dimensions, from the header: no pixel is decoded), so
most bad uploads get a clear 400 without reaching TorchServe; corrupt pixel data gets the
handler's 400. The preview is the 28x28 the handler read, sent back in its answer (`X-Input`):
the drawing is preprocessed once, by the model's own code. Archives older than that do not send
it, and for them the app runs the same `preprocess` itself. Nothing is written to disk here
(corrections go to the feedback store: webapp/feedback.py).

TorchServe is asked for every class's probability; the answer is then shaped by the core's
rules (emnist/responses.py, emnist/charsets.py): the `charset` the person chose, the top k,
`confidence` and the small-drawing `hint`. So archives built before those rules existed answer
the same way as new ones.
"""

from __future__ import annotations

import base64
import contextlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from emnist import responses
from emnist.charsets import CharsetError
from emnist.preprocessing import (
    InvalidImageError,
    decode_image,
    open_image,
    preprocess,
    preview_png,
)
from emnist.requests import (
    RequestError,
    decode_image_string,
    parse_request,
    parse_request_charset,
    parse_topk,
)
from webapp import error_response
from webapp.torchserve_client import TorchServeClient, TorchServeError

bp = Blueprint("api", __name__)

# Model names and versions go into TorchServe URLs: letters, digits and . _ - only.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Drawing:
    image: bytes
    content_type: str
    params: dict[str, Any]
    charset: str = "any"


@dataclass(frozen=True)
class Seen:
    """What the model read: from the handler's answer, or preprocessed here for old archives."""

    preview: str  # data URL of the 28x28 PNG, upright (the page enlarges it)
    empty: bool
    dot: bool = False  # a tap, not a character: answered as empty
    extent: float = 0.0  # the ink's share of the canvas side


@bp.errorhandler(RequestError)
def bad_request(err: RequestError):
    return error_response(err.status, err.message)


@bp.errorhandler(TorchServeError)
def upstream_error(err: TorchServeError):
    return error_response(err.status, err.message, err.retry_after)


@bp.post("/api/predict")
def predict():
    drawing = read_drawing()
    params = drawing.params
    model = _name(params.get("model") or current_app.config["DEFAULT_MODEL"], "model")
    version = params.get("version") or None
    if version is not None:
        version = _name(version, "version")
    # Every class: the charset and top k are applied here, the same for every archive.
    all_classes = current_app.config["MAX_TOPK"]
    result = client().predict(
        model, version, drawing.image, drawing.content_type, all_classes, want_input=True
    )
    seen = seen_by_model([result.body], drawing)
    try:
        body = _result(result.body, result.latency_ms, seen, drawing.charset, _topk(params))
    except CharsetError as err:
        raise RequestError(str(err)) from err
    return jsonify({**body, "preview": seen.preview})


@bp.post("/api/compare")
def compare():
    """The drawing through every registered model's default version, concurrently."""
    drawing = read_drawing()
    upstream = client()
    names = upstream.model_names()
    all_classes = current_app.config["MAX_TOPK"]
    topk = _topk(drawing.params)  # read here: the threads below have no app context

    def ask(name: str) -> Any:
        try:
            return upstream.predict(
                name, None, drawing.image, drawing.content_type, all_classes, want_input=True
            )
        except TorchServeError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, min(len(names), 8))) as pool:
        answers = list(pool.map(ask, names))
    seen = seen_by_model([a.body for a in answers if not isinstance(a, TorchServeError)], drawing)

    def shape(name: str, result: Any) -> dict[str, Any]:
        if isinstance(result, TorchServeError):
            return {"model": name, "error": result.message, "code": result.status}
        # A model that has only digits (emnist-digits) answers every drawing with one: the page
        # shows it apart from the letter models.
        served = result.body.get("predictions") or [] if isinstance(result.body, dict) else []
        digits_only = bool(served) and all(p["label"].isdigit() for p in served)
        try:
            body = _result(result.body, result.latency_ms, seen, drawing.charset, topk)
        except CharsetError as err:  # the digits model, asked for letters: not its question
            version = result.body.get("version")
            return {
                "model": name,
                "version": version,
                "digits_only": digits_only,
                "skipped": str(err),
            }
        body["digits_only"] = digits_only
        return body

    results = [shape(name, answer) for name, answer in zip(names, answers, strict=True)]
    if results and all("error" in r or "skipped" in r for r in results):
        if all("skipped" in r for r in results):
            raise RequestError(results[0]["skipped"])
        results = [r for r in results if "error" in r]
        first = results[0]
        raise TorchServeError(first["code"], first["error"], 5 if first["code"] == 503 else None)
    body = {"empty": seen.empty or seen.dot, "charset": drawing.charset}
    return jsonify({**body, "preview": seen.preview, "results": results})


@bp.get("/api/models")
def models():
    listed = client().models()
    default = current_app.config["DEFAULT_MODEL"]
    names = [m["name"] for m in listed]
    return jsonify(
        {
            "models": listed,
            "default_model": default if default in names else next(iter(names), None),
        }
    )


@bp.get("/healthz")
def healthz():
    upstream = client()
    try:
        status = upstream.ping().get("status", "unknown")
    except TorchServeError as err:
        body = {
            "status": "degraded",
            "app": "ok",
            "torchserve": _ts_info(upstream, False, err.message),
        }
        return jsonify(body), 503, {"Retry-After": "5"}
    reachable = status == "Healthy"
    body = {
        "status": "ok" if reachable else "degraded",
        "app": "ok",
        "torchserve": _ts_info(upstream, reachable, f"TorchServe says {status}"),
    }
    return jsonify(body), 200 if reachable else 503


def read_drawing() -> Drawing:
    """The image and parameters of a multipart, raw-bytes or JSON request, checked (size, format
    and dimensions; the pixels are decoded once, by the handler)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(
            f"the request is larger than {limit // (1024 * 1024)} MB: send a smaller image"
        )
    params: dict[str, Any] = dict(request.args.items())
    if request.mimetype == "multipart/form-data":
        params.update(request.form.items())
        upload = request.files.get("image") or next(iter(request.files.values()), None)
        if upload is None:
            if request.form.get("image"):  # a data URL or base64 in a text field
                data = decode_image_string(request.form["image"])
            else:
                raise RequestError("no image in the request: send it as the form field `image`")
        else:
            data = upload.read()
    else:
        body = request.get_data(cache=True)
        # Parsed first: it refuses JSON nested too deeply for the parser with a 400 (Flask's
        # get_json would raise RecursionError, a 500; suppressed for the few frames between).
        parsed = parse_request({"body": body}, {"content-type": request.content_type or ""})
        json_body = None
        with contextlib.suppress(RecursionError):
            json_body = request.get_json(silent=True) if request.is_json else None
        if isinstance(json_body, dict):
            params.update({k: v for k, v in json_body.items() if k in ("model", "version")})
        data = parsed.image
        if parsed.topk is not None:
            params["topk"] = parsed.topk
        if parsed.charset != "any":
            params["charset"] = parsed.charset
    charset = parse_request_charset(params.get("charset") or request.headers.get("X-Charset"))
    try:
        image = open_image(data, max_bytes=limit, max_side=current_app.config["MAX_IMAGE_SIDE"])
    except InvalidImageError as err:
        raise RequestError(str(err)) from err
    content_type = _CONTENT_TYPES.get(image.format or "", "application/octet-stream")
    return Drawing(data, content_type, params, charset=charset)


def seen_by_model(answers: list[Any], drawing: Drawing) -> Seen:
    """The 28x28 the model read and its `extent` and `dot`, from the first answer that has it
    (`input`); else made here by the same preprocessing (archives before emnist-cnn 2.1)."""
    given = next((a["input"] for a in answers if isinstance(a, dict) and a.get("input")), None)
    if given is not None:
        try:
            pixels = responses.input_pixels(given)
            extent, dot = float(given["extent"]), bool(given["dot"])
        except (KeyError, TypeError, ValueError) as err:
            raise TorchServeError(
                502, f"TorchServe answered with a malformed input: {err}"
            ) from err
        empty = not pixels.any()
    else:
        limit, side = current_app.config["MAX_CONTENT_LENGTH"], current_app.config["MAX_IMAGE_SIDE"]
        try:
            prepared = preprocess(decode_image(drawing.image, max_bytes=limit, max_side=side))
        except InvalidImageError as err:
            raise RequestError(str(err)) from err
        pixels, extent, dot, empty = prepared.pixels, prepared.extent, prepared.dot, prepared.empty
    # 28x28 as is: the page enlarges it with `image-rendering: pixelated`, and encoding the
    # small PNG costs a quarter of an 8x one.
    png = preview_png(pixels, scale=1)
    preview = "data:image/png;base64," + base64.b64encode(png).decode()
    return Seen(preview, empty, dot=dot, extent=extent)


_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "WEBP": "image/webp",
}


def client() -> TorchServeClient:
    return current_app.extensions["torchserve"]


def _result(body: Any, latency_ms: float, seen: Seen, charset: str, topk: int) -> dict[str, Any]:
    """TorchServe's every-class answer, shaped: charset, top k, confidence, hint (or empty)."""
    if not isinstance(body, dict):
        raise TorchServeError(502, "TorchServe answered with something other than a prediction")
    identity = {"model": body.get("model"), "version": body.get("version")}
    served = body.get("predictions") or []
    if seen.empty or seen.dot or body.get("empty") or not served:
        reason = "dot" if seen.dot and not seen.empty else "blank"
        answer = responses.empty_drawing(**identity, batch_size=1, reason=reason)
    else:
        answer = responses.prediction(
            [p["probability"] for p in served],
            [p["label"] for p in served],
            **identity,
            topk=topk,
            batch_size=1,
            charset=charset,
            extent=seen.extent,
        )
    answer.pop("batch_size")
    return {**answer, "latency_ms": latency_ms}


def _topk(params: dict[str, Any]) -> int:
    topk = parse_topk(params.get("topk"))
    if topk is None:
        return current_app.config["DEFAULT_TOPK"]
    return min(topk, current_app.config["MAX_TOPK"])


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise TorchServeError(
            404, f"unknown {what} {value!r}: GET /api/models lists what is served"
        )
    return value


def _ts_info(upstream: TorchServeClient, reachable: bool, message: str) -> dict[str, Any]:
    return {"reachable": reachable, "url": upstream.inference_url, "message": message}
