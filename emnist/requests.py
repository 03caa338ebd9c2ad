"""Every request shape the service accepts -> (image bytes, top-k, charset), or a 4xx error.

TorchServe hands a handler one dict per request: `{parameter name: value}`, where a raw body is
`body` (bytes), a JSON body arrives already decoded (dict or list), a `text/*` body as str,
multipart fields under their own names and query parameters as extra entries. TorchServe 0.12
drops the query string of `/predictions/...` URLs (only `/models/<name>/invoke?topk=3` and the
legacy `/<name>/predict` keep it), so there `topk` also comes as an `X-TopK` header and `charset`
(emnist/charsets.py: any, digits, letters, upper, lower) as an `X-Charset` header. `input`
(true or false, an `X-Input` header) asks for the 28x28 the model read in the answer
(emnist/responses.py): the web app shows it instead of preprocessing the drawing again.
Accepted image payloads:

- raw image bytes (PNG, JPEG, WebP, BMP, ...): `curl -T a.png .../predictions/emnist-cnn`
- a base64 string or a `data:image/...;base64,` URL, as the body or in JSON
- JSON `{"image": <base64 or data URL>, "topk": 3, "charset": "letters"}` (`data` works too)
- KServe v1 `{"instances": [<base64> | {"data"|"image"|"b64": ...}]}`
- KServe v2 `{"inputs": [{"datatype": "BYTES", "data": [<base64>]}], "parameters": {"topk": 3}}`

One request is one character: envelopes holding several images are refused, so a batch of N
requests is always N images with N answers. Torch-free, so the web app can reuse it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emnist.charsets import CharsetError, parse_charset

DEFAULT_TOPK = 5
# Per-request options besides the image, and where they may come from (see parse_request).
OPTIONS = ("topk", "charset", "input")
# Keys that may hold the image, in the order they are looked for (TorchServe calls a raw body
# `body`; its examples and KServe use `data`; multipart uploads often use `file`).
IMAGE_KEYS = ("body", "data", "image", "file", "instances", "inputs")
_DATA_URL = re.compile(r"^data:(?P<type>[^,;]*)(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)
_BASE64_TEXT = re.compile(rb"^[A-Za-z0-9+/=_\-\s]+$")


class RequestError(ValueError):
    """A request the service cannot answer; `status` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ParsedRequest:
    image: bytes
    topk: int | None  # None: the caller's default
    charset: str = "any"
    want_input: bool = False  # answer with the model's input too


def parse_request(
    row: Mapping[str, Any], headers: Mapping[str, Any] | None = None
) -> ParsedRequest:
    """One TorchServe request row (and its HTTP headers) -> image bytes, top-k and charset.

    `topk` and `charset` come from the JSON body, else a parameter of that name (query string or
    form field), else an `X-TopK` / `X-Charset` header. Raises RequestError (4xx) for anything
    the service cannot answer.
    """
    if not isinstance(row, Mapping):
        raise RequestError("unexpected request format")
    headers = {str(k).lower(): v for k, v in (headers or {}).items()}
    content_type = str(headers.get("content-type", "")).split(";")[0].strip().lower()
    if content_type == "application/x-www-form-urlencoded":
        # curl's default for --data: the server has already form-decoded (and mangled) the bytes.
        raise RequestError(
            "form-encoded bodies are not supported: send the file with curl -T a.png URL, "
            "or set Content-Type: image/png (or application/json for JSON)",
            status=415,
        )
    params = dict(row)
    outer = {name: params.pop(name, None) for name in OPTIONS}
    for name in OPTIONS:
        if outer[name] is None:
            outer[name] = headers.get(f"x-{name}")
    key = next((k for k in IMAGE_KEYS if params.get(k) is not None), None)
    if key is None and len(params) == 1:
        key = next(iter(params))  # a multipart upload under any field name
    if key is None:
        raise RequestError("no image in the request: send the image file as the request body")
    payload = params[key]
    if key in ("instances", "inputs"):
        payload = {key: payload}  # a form field named like an envelope key
    image, inner = _from_payload(payload)
    topk = parse_topk(inner.get("topk"))
    if topk is None:
        topk = parse_topk(outer["topk"])
    charset = inner.get("charset")
    want_input = inner.get("input")
    return ParsedRequest(
        image,
        topk,
        parse_request_charset(charset or outer["charset"]),
        parse_flag(want_input if want_input is not None else outer["input"], "input"),
    )


def parse_request_charset(value: Any) -> str:
    """`charset` from JSON, a query string or a header; a 400 when it is not one we know."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    try:
        return parse_charset(value)
    except CharsetError as err:
        raise RequestError(str(err)) from err


def parse_flag(value: Any, name: str) -> bool:
    """A yes/no option from JSON (bool) or a parameter or header (true/false, 1/0)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    text = str(value).strip().lower()
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no", ""):
        return False
    raise RequestError(f"{name} must be true or false, got {value!r}")


def parse_topk(value: Any) -> int | None:
    """`topk` from JSON (int) or a query string (bytes/str); None when absent."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", errors="replace")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"topk must be a positive integer, got {value!r}")
    return value


def _from_payload(payload: Any) -> tuple[bytes, dict[str, Any]]:
    if isinstance(payload, bytes | bytearray | str) and not payload.strip():
        raise RequestError("the request is empty: send the image file (curl -T a.png URL)")
    if isinstance(payload, bytes | bytearray):
        text = _as_text(bytes(payload))
        if text is None:
            return bytes(payload), {}  # binary: an image file (or garbage decode will name)
        payload = text
    if isinstance(payload, str):
        stripped = payload.strip()
        if stripped.startswith(("{", "[")):
            try:
                payload = json.loads(stripped)
            except ValueError as err:
                raise RequestError(f"the body looks like JSON but is not valid: {err}") from err
            except RecursionError as err:
                # `[[[[...` a few thousand deep exhausts the parser's stack: a 400, not a 500.
                raise RequestError("the JSON body is nested too deeply") from err
        else:
            return decode_image_string(stripped), {}
    if isinstance(payload, Mapping):
        return _from_json(payload)
    raise RequestError("unsupported request body: send an image file, base64 text or JSON")


def _as_text(data: bytes) -> str | None:
    """The body as text when it is JSON, a data URL or base64; None for binary (image) data."""
    head = data.lstrip()[:5]
    if head[:1] in (b"{", b"[") or head.lower() == b"data:" or _BASE64_TEXT.match(data):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def _from_json(body: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
    options = {name: body.get(name) for name in OPTIONS}
    if "instances" in body:  # KServe v1
        image = _single(body["instances"], "instances")
    elif "inputs" in body:  # KServe v2
        tensor = _single(body["inputs"], "inputs")
        if not isinstance(tensor, Mapping) or "data" not in tensor:
            raise RequestError('each KServe v2 input needs "data"')
        datatype = str(tensor.get("datatype", "BYTES")).upper()
        if datatype != "BYTES":
            raise RequestError(
                f"KServe v2 datatype {datatype} is not supported: send the image file base64 "
                'encoded with "datatype": "BYTES"'
            )
        data = tensor["data"]
        image = _single(data, "data") if isinstance(data, list) else data
        parameters = body.get("parameters")
        if isinstance(parameters, Mapping):
            for name in OPTIONS:
                if options[name] is None:
                    options[name] = parameters.get(name)
    else:
        image = next((body[k] for k in ("image", "data", "b64") if body.get(k) is not None), None)
        if image is None:
            raise RequestError('the JSON body needs an "image" field (base64 or a data: URL)')
    return _image_value(image), options


def _single(items: Any, name: str) -> Any:
    if not isinstance(items, list) or len(items) != 1:
        count = len(items) if isinstance(items, list) else "no"
        raise RequestError(
            f'"{name}" must hold exactly one image (one character per request), got {count}'
        )
    return items[0]


def _image_value(value: Any) -> bytes:
    """An image inside JSON: a base64/data-URL string or {"b64"|"data"|"image": ...}."""
    if isinstance(value, str):
        return decode_image_string(value)
    if isinstance(value, Mapping):
        inner = next((value[k] for k in ("b64", "data", "image") if value.get(k) is not None), None)
        if inner is not None:
            return _image_value(inner)
    raise RequestError("the image must be a base64 string or a data: URL")


def decode_image_string(text: str) -> bytes:
    """A `data:` URL or bare base64 (standard or URL-safe, padding optional) -> bytes."""
    text = text.strip()
    match = _DATA_URL.match(text)
    if match:
        rest = text[match.end() :]
        if not match["b64"]:
            return urllib.parse.unquote_to_bytes(rest)
        text = rest
    compact = re.sub(r"\s+", "", text)
    if not compact:
        raise RequestError("the image is empty: send a PNG or JPEG file")
    altchars = b"-_" if re.search(r"[-_]", compact) else None
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), altchars, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(
            "the image text is not valid base64 (or a data:image/...;base64, URL)"
        ) from err
