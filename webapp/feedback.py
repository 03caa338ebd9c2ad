"""POST /api/feedback: a person says what a drawing really is; the store keeps it.

    curl -F image=@seven.png -F label=7 -F writer=a1b2c3d4e5f6 -F model=emnist-cnn \\
         -F version=1.2 -F predicted=1 -F charset=any http://127.0.0.1:5000/api/feedback

Multipart fields: `image` (the picture as the page sent it) and `label` (the character it
is: one of the 62 characters of the 47 classes), plus `model`, `version`, `predicted`,
`charset` and `writer` (the page's random id, kept in localStorage). The app stores the picture,
the 28x28 the model reads, and the model's probabilities for it (asked again of TorchServe;
null when TorchServe cannot answer: a correction is never refused for that). 201 with the id
once the row is on disk; 200 with the first id for a duplicate; 4xx with a message for a bad
request, 429 when one writer sent too many, 507 when the store is full, 403 when the server
has feedback turned off (EMNIST_FEEDBACK=off).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from emnist.charsets import CharsetError
from emnist.labels import CHARACTERS, label_of
from emnist.preprocessing import PREPROCESSING_VERSION, InvalidImageError, decode_image, preprocess
from emnist.requests import RequestError, parse_request_charset
from feedback import store
from webapp import error_response
from webapp.api import NAME_PATTERN
from webapp.torchserve_client import TorchServeError

bp = Blueprint("feedback", __name__)
_connections = threading.local()  # one SQLite connection per server thread


@bp.errorhandler(RequestError)
def bad_request(err: RequestError):
    return error_response(err.status, err.message)


@bp.post("/api/feedback")
def feedback():
    if not current_app.config["FEEDBACK"]:
        return error_response(403, "feedback is turned off on this server")
    if not _same_origin():
        return error_response(403, "corrections come from this app's own page only")
    if request.mimetype != "multipart/form-data":
        raise RequestError("send a multipart form: image, label, writer (and model, version...)")
    form = request.form
    upload = request.files.get("image")
    if upload is None:
        raise RequestError("no image: send the drawing as the form field `image`")
    png = upload.read()
    label = _label(form.get("label"))
    writer = form.get("writer", "")
    if not store.WRITER_PATTERN.match(writer):
        raise RequestError("writer must be the page's random id: 8-64 letters, digits, - or _")
    try:
        charset = parse_request_charset(form.get("charset"))
        image = decode_image(png, max_bytes=current_app.config["MAX_CONTENT_LENGTH"])
        prepared = preprocess(image)
    except (InvalidImageError, CharsetError) as err:
        raise RequestError(str(err)) from err
    if prepared.empty:
        raise RequestError("the image is blank: there is nothing to learn from")
    model, version = _name(form.get("model")), _name(form.get("version"))
    correction = store.Correction(
        writer=writer,
        label=label,
        image_png=png,
        pixels=prepared.pixels.tobytes(),
        preprocessing_version=PREPROCESSING_VERSION,
        charset=charset,
        predicted=_short(form.get("predicted")),
        model=model,
        version=version,
        probabilities=_probabilities(model, version, png, image.format),
    )
    try:
        added = store.add(
            _connection(),
            correction,
            max_per_writer=current_app.config["FEEDBACK_MAX_PER_WRITER"],
            max_rows=current_app.config["FEEDBACK_MAX_ROWS"],
        )
    except store.StoreFull as err:
        return error_response(err.status, err.message)
    body = {"id": added.id, "label": label, "duplicate": added.duplicate}
    return jsonify(body), 200 if added.duplicate else 201


def _label(value: Any) -> str:
    """The class of a typed character: c, o, s... are their capital's class in bymerge."""
    if not isinstance(value, str) or len(value.strip()) != 1 or value.strip() not in CHARACTERS:
        raise RequestError(
            f"label must be one character of the 47 classes (0-9, A-Z, a-z), got {value!r}"
        )
    return label_of(value.strip())


def _same_origin() -> bool:
    """A browser names the page a request comes from: another site's page may not write here
    (a cross-site form post needs no preflight). Tools such as curl send neither header."""
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == request.host_url.rstrip("/")


def _name(value: Any) -> str | None:
    """A model name or version as TorchServe URLs allow them, or a 400."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise RequestError(f"model and version are names like emnist-cnn and 1.2, got {value!r}")
    return value


def _short(value: Any) -> str | None:
    """An optional free-text field, bounded (model names and versions are short)."""
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) > 100:
        raise RequestError("model, version and predicted must be at most 100 characters")
    return text


def _probabilities(model: str | None, version: str | None, png: bytes, fmt: str | None):
    """{label: probability} of every class from the model that answered; None if unknown."""
    if model is None:
        return None
    client = current_app.extensions["torchserve"]
    content_type = f"image/{(fmt or 'png').lower()}"
    try:
        answer = client.predict(model, version, png, content_type, current_app.config["MAX_TOPK"])
    except TorchServeError:
        return None  # the correction matters more than the model's figures
    return {p["label"]: p["probability"] for p in answer.body.get("predictions") or []}


def _connection():
    path = Path(current_app.config["FEEDBACK_DB"])
    cached = getattr(_connections, "by_path", {})
    if path not in cached:
        cached[path] = store.connect(path)
        _connections.by_path = cached
    return cached[path]
