"""The web app: a drawing page and a JSON API in front of TorchServe.

`create_app(test_config=None)` builds it; `python -m webapp` serves it with waitress and
`python -m serving.demo` (`make demo`) starts TorchServe and the app together. Settings come from
the defaults below, then environment variables (`EMNIST_INFERENCE_URL`, ...), then `test_config`.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from emnist import responses
from feedback import store
from webapp.kserve_client import PROTOCOLS, KServeV1Client
from webapp.torchserve_client import TorchServeClient

MAX_BODY_BYTES = 2 * 1024 * 1024

# Config key -> environment variable that overrides it.
ENVIRONMENT = {
    "INFERENCE_URL": "EMNIST_INFERENCE_URL",
    "MANAGEMENT_URL": "EMNIST_MANAGEMENT_URL",
    "TOKEN": "EMNIST_TORCHSERVE_TOKEN",
    "TOKEN_FILE": "EMNIST_TOKEN_FILE",
    "DEFAULT_MODEL": "EMNIST_DEFAULT_MODEL",
    "CONNECT_TIMEOUT": "EMNIST_CONNECT_TIMEOUT",
    "READ_TIMEOUT": "EMNIST_READ_TIMEOUT",
    "INFERENCE_PROTOCOL": "EMNIST_INFERENCE_PROTOCOL",
    "MODELS": "EMNIST_MODELS",
    "INFERENCE_HOST_HEADER": "EMNIST_INFERENCE_HOST_HEADER",
    "FEEDBACK": "EMNIST_FEEDBACK",
    "FEEDBACK_DB": "EMNIST_FEEDBACK_DB",
    "FEEDBACK_MAX_PER_WRITER": "EMNIST_FEEDBACK_MAX_PER_WRITER",
    "FEEDBACK_MAX_ROWS": "EMNIST_FEEDBACK_MAX_ROWS",
}

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        INFERENCE_URL="http://127.0.0.1:8080",
        MANAGEMENT_URL="http://127.0.0.1:8081",
        # "torchserve" (its own APIs) or "kserve-v1" (a KServe endpoint: deploy/kserve/README.md)
        INFERENCE_PROTOCOL="torchserve",
        MODELS="",  # kserve-v1: model names, when the endpoint does not list them itself
        INFERENCE_HOST_HEADER=None,  # kserve-v1 through an ingress IP: the service's host
        TOKEN=None,  # one bearer key for both APIs
        TOKEN_FILE=None,  # or TorchServe's key_file.json (inference and management keys)
        DEFAULT_MODEL="emnist-cnn",
        DEFAULT_TOPK=5,
        MAX_TOPK=47,
        CONNECT_TIMEOUT=2.0,
        READ_TIMEOUT=30.0,
        MAX_IMAGE_SIDE=4096,
        # Werkzeug refuses larger bodies before reading them (413, answered as a JSON 400).
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        JSON_SORT_KEYS=False,
        # Corrections (webapp/feedback.py): on unless EMNIST_FEEDBACK=off; never in git.
        FEEDBACK=True,
        FEEDBACK_DB=str(store.DEFAULT_PATH),
        FEEDBACK_MAX_PER_WRITER=2_000,
        FEEDBACK_MAX_ROWS=200_000,
    )
    for key, variable in ENVIRONMENT.items():
        if os.environ.get(variable):
            app.config[key] = _setting(key, os.environ[variable])
    if test_config:
        app.config.from_mapping(test_config)
    app.json.sort_keys = False

    app.extensions["torchserve"] = _inference_client(app.config)

    from webapp import api, feedback, pages

    app.register_blueprint(api.bp)
    app.register_blueprint(feedback.bp)
    app.register_blueprint(pages.bp)
    _register_error_handlers(app)
    app.after_request(_security_headers)
    return app


def _setting(key: str, value: str) -> Any:
    """An environment variable's text as the config value's type."""
    if key.endswith("TIMEOUT"):
        return float(value)
    if key.startswith("FEEDBACK_MAX"):
        return int(value)
    if key == "FEEDBACK":
        if value.lower() not in ("on", "off", "1", "0", "true", "false"):
            raise ValueError(f"EMNIST_FEEDBACK must be on or off, got {value!r}")
        return value.lower() in ("on", "1", "true")
    return value


def _inference_client(config) -> TorchServeClient:
    protocol = config["INFERENCE_PROTOCOL"]
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown inference protocol {protocol!r}: use one of {PROTOCOLS}")
    common = {
        "connect_timeout": float(config["CONNECT_TIMEOUT"]),
        "read_timeout": float(config["READ_TIMEOUT"]),
        "token": config["TOKEN"],
        "token_file": config["TOKEN_FILE"],
    }
    if protocol == "kserve-v1":
        models = config["MODELS"]
        return KServeV1Client(
            config["INFERENCE_URL"],
            models=models.split(",") if isinstance(models, str) else models,
            host_header=config["INFERENCE_HOST_HEADER"],
            **common,
        )
    return TorchServeClient(config["INFERENCE_URL"], config["MANAGEMENT_URL"], **common)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_err):
        limit = app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024)
        return error_response(400, f"the request is larger than {limit} MB: send a smaller image")

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if err.code == 405:
            allowed = ", ".join(err.valid_methods or [])
            response = error_response(405, f"{request.method} is not allowed here: use {allowed}")
            response.headers["Allow"] = allowed
            return response
        if err.code == 404:
            return error_response(404, f"no such page: {request.path} (the API is under /api/)")
        return error_response(err.code or 500, err.description or err.name)

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        # Logged with its traceback for the operator; the user never sees one.
        app.logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error: the app failed on this request")


def error_response(status: int, message: str, retry_after: int | None = None):
    # The same shape as TorchServe's own errors: {"code", "type", "message"}.
    response = jsonify(responses.error(status, message))
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if response.mimetype == "application/json":
        response.headers["Cache-Control"] = "no-store"
    return response
