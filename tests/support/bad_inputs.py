"""A seeded generator of bad (and odd but valid) requests for the web app and for TorchServe.

`generate(routes, count, seed)` returns `count` `Case`s spread over CATEGORIES by their shares,
each tagged with its category and the outcome the service owes it: REJECT (a 4xx among
`statuses` with a JSON message), PREDICT (a well-formed prediction, identical to the one for the
plain PNG `same_as` when given) or EITHER (corrupted files: some still decode). The same seed
gives the same requests on every run, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import base64
import json
import random
import string
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from support import bad_images as img

WEBAPP, TORCHSERVE = "webapp", "torchserve"
REJECT, PREDICT, EITHER = "reject", "predict", "reject or predict"


@dataclass(eq=False)
class Case:
    category: str
    name: str
    path: str  # relative to the target's base URL, query string included
    method: str = "POST"
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None  # multipart fields, as `requests` takes them
    expect: str = REJECT
    statuses: tuple[int, ...] = (400,)
    same_as: bytes | None = None
    topk: int | None = None  # asked for; None: the service's default
    json_error: bool = True  # False only for TorchServe's own empty 413 (body too large)
    # (status, error type) TorchServe's Java frontend may answer with before any handler runs.
    frontend_refusal: tuple[int, str] | None = None


@dataclass(frozen=True)
class Routes:
    target: str  # WEBAPP or TORCHSERVE
    paths: tuple[str, ...]  # "/predictions/emnist-cnn", "/api/predict?model=...", ...


def _envelope(rng, routes, image: bytes, category, name, *, topk=None, **kw) -> Case:
    """`image` sent one of the ways a client may send it (raw bytes, JSON with base64 or a data
    URL, multipart) to a random route, with `topk` (when given) where that way carries it."""
    path = rng.choice(routes.paths)
    way = rng.choice(("raw", "raw", "json", "data-url", "multipart"))
    if way == "raw" and routes.target == TORCHSERVE and not str(topk).strip().isascii():
        way = "json"  # an X-TopK header carries latin-1 only
    b64 = base64.b64encode(image).decode()
    headers, data, files = {}, None, None
    if way == "raw":
        data = image
        if rng.random() < 0.5:
            headers["Content-Type"] = "application/octet-stream"
        if topk is not None and routes.target == WEBAPP:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode({"topk": topk})
        elif topk is not None:
            headers["X-TopK"] = str(topk).strip()  # TorchServe drops query strings
    elif way == "multipart":
        files = {("image" if routes.target == WEBAPP else "data"): ("a.png", image)}
        if topk is not None:
            files["topk"] = (None, str(topk))
    else:
        body = {"image": b64 if way == "json" else f"data:image/png;base64,{b64}"}
        if topk is not None:
            body["topk"] = topk
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    return Case(category, f"{name} as {way}", path, data=data, headers=headers, files=files, **kw)


def _empty(rng, routes, drawing, turn):
    body = rng.choice((b"", b" ", b"\n\t ", b"\r\n"))
    if rng.random() < 0.3:
        return _envelope(rng, routes, body, "empty", f"{body!r}")
    content_type = rng.choice((None, "image/png", "application/json", "text/plain"))
    headers = {"Content-Type": content_type} if content_type else {}
    return Case("empty", f"raw {body!r} {content_type}", rng.choice(routes.paths), data=body,
                headers=headers)  # fmt: skip


def _random_bytes(rng, routes, drawing, turn):
    size = rng.choice((rng.randint(1, 16), rng.randint(17, 4096), rng.randint(4097, 300_000)))
    return _envelope(rng, routes, rng.randbytes(size), "random bytes", f"{size} bytes")


def _truncated(rng, routes, drawing, turn):
    fmt = rng.choice(("PNG", "JPEG"))
    data = img.encode(drawing, fmt)
    # A PNG cut after its last pixel row still decodes: cut inside the image data.
    cut = rng.randint(1, int(0.9 * len(data)))
    return _envelope(rng, routes, data[:cut], "truncated", f"{fmt} cut at {cut}/{len(data)}")


def _corrupted(rng, routes, drawing, turn):
    fmt = rng.choice(("PNG", "JPEG"))
    data = img.corrupt(img.encode(drawing, fmt), rng)
    return _envelope(rng, routes, data, "corrupted", fmt, expect=EITHER)


def _wrong_content_type(rng, routes, drawing, turn):
    png = img.encode(drawing)
    types = ("image/jpeg", "image/gif", "text/plain", "text/html; charset=utf-8",
             "application/json", "application/xml", "application/pdf", "video/mp4",
             "multipart/form-data", "application/x-www-form-urlencoded")  # fmt: skip
    content_type = types[turn % len(types)]
    case = Case("wrong content type", f"PNG as {content_type}", rng.choice(routes.paths),
                data=png, headers={"Content-Type": content_type})  # fmt: skip
    if content_type == "application/x-www-form-urlencoded":
        case.statuses = (415,)  # curl --data: the bytes were form-decoded on the way
        # ... when they can be: Netty's form decoder fails on most binary bodies with a 500
        # of its own, before the handler is called (the worker never sees the request).
        case.frontend_refusal = (500, "ErrorDataDecoderException")
    elif content_type == "multipart/form-data" and routes.target == WEBAPP:
        case.statuses = (400,)  # no boundary: no fields (TorchServe passes the raw body on)
    else:
        case.expect, case.same_as = PREDICT, png  # the bytes say what they are
    return case


def _huge_dimensions(rng, routes, drawing, turn):
    name, data = img.lying_header(rng)
    return _envelope(rng, routes, data, "huge dimensions", name)


def _decompression_bomb(rng, routes, drawing, turn):
    pick = (turn % 7) / 7  # 3 pixel bombs, 3 text-chunk bombs, 1 within the limit
    if pick < 0.4:
        side = rng.choice((5000, 12000))
        return _envelope(rng, routes, img.png_bomb(side), "decompression bomb", f"png {side}²")
    if pick < 0.85:
        kind = rng.choice((b"zTXt", b"iCCP"))
        data = img.text_chunk_bomb(kind)
        return _envelope(rng, routes, data, "decompression bomb", f"{kind.decode()} 50 MB")
    # Within the 4096 px limit: decoded (shrunk before any float work) and answered.
    data = img.png_bomb(4096)
    return _envelope(rng, routes, data, "decompression bomb", "blank 4096²", expect=PREDICT)


def _odd_shape(rng, routes, drawing, turn):
    return _envelope(rng, routes, img.odd_shape(rng), "1x1 and extreme aspect", "odd shape",
                     expect=PREDICT)  # fmt: skip


def _multi_frame(rng, routes, drawing, turn):
    fmt = rng.choice(("GIF", "PNG", "WEBP", "TIFF"))
    data = img.multi_frame(drawing, rng, fmt)
    if fmt == "TIFF":  # not an accepted format, one frame or many
        return _envelope(rng, routes, data, "multi-frame", "TIFF")
    # The first frame is read: the answer is the one for that frame alone.
    return _envelope(rng, routes, data, "multi-frame", f"animated {fmt}", expect=PREDICT,
                     same_as=img.encode(drawing))  # fmt: skip


def _bit_depth_palette(rng, routes, drawing, turn):
    kind = rng.choice(img.SAME_PIXEL_KINDS)
    data = img.same_pixels_variant(drawing, kind)
    return _envelope(rng, routes, data, "16-bit and palette", kind, expect=PREDICT,
                     same_as=img.encode(drawing))  # fmt: skip


def _bad_base64(rng, routes, drawing, turn):
    png = img.encode(drawing)
    b64 = base64.b64encode(png).decode()
    junk = "".join(rng.choice(string.punctuation + "é€ ") for _ in range(rng.randint(1, 64)))
    cut = rng.randint(4, len(b64) - 4)
    # An image value that is not base64 of an image, inside JSON or as a text body...
    values: list[tuple[str, Any]] = [
        ("junk text", junk),
        ("padding inside", b64[:cut] + "=" + b64[cut:]),
        ("base64 of random bytes", base64.b64encode(rng.randbytes(rng.randint(1, 999))).decode()),
        ("base64 of a truncated PNG", base64.b64encode(png[: len(png) // 2]).decode()),
        ("data URL of junk", f"data:image/png;base64,{junk}"),
        ("data URL not base64", "data:image/png,%89PNG%0D%0A%1A%0A" + junk),
        ("data URL of HTML", "data:text/html,<script>alert(1)</script>"),
        ("number", rng.randint(-9, 9**9)),
        ("null", None),
        ("list", [b64]),
        ("nested junk", {"b64": junk}),
    ]
    # ... or a body that is wrong itself (deep nesting exhausts a recursive parser's stack).
    bodies = [
        ("no instances", '{"instances": []}'),
        ("two instances", json.dumps({"instances": [b64, b64]})),
        ("KServe FP32", '{"inputs": [{"name": "x", "datatype": "FP32", "data": [1.0]}]}'),
        ("unclosed JSON", '{"image": "' + b64[:cut]),
        ("NaN", '{"image": NaN}'),
        ("JSON list", "[1, 2, 3]"),
        ("deep JSON", "[" * rng.randint(2000, 50_000)),
        ("deep JSON object", '{"image": ' * rng.randint(2000, 20_000)),
        ("not UTF-8", '{"image": "\udcff"}'),
    ]
    category, path = "invalid base64 and data URLs", rng.choice(routes.paths)
    turn %= len(values) + len(bodies)  # every kind in turn, whatever the seed
    if turn >= len(values):
        name, text = bodies[turn - len(values)]
        data = text.encode("utf-8", errors="surrogateescape")
        content_type = rng.choice(("application/json", "text/plain"))
        return Case(category, name, path, data=data, headers={"Content-Type": content_type})
    name, value = values[turn]
    if isinstance(value, str) and rng.random() < 0.4:  # as a text body, not in JSON
        data, headers = value.encode(), {"Content-Type": "text/plain"}
    else:
        data = json.dumps({"image": value}).encode()
        headers = {"Content-Type": "application/json"}
    return Case(category, name, path, data=data, headers=headers)


_ODD_NAMES = ("../../etc/passwd", "emnist cnn", "émnist", "x" * 150, "emnist-cnn;x", "%00", "..")


def _unknown_model(rng, routes, drawing, turn):
    name = rng.choice((f"emnist-{rng.randrange(10**6)}", *_ODD_NAMES))
    version = rng.choice((f"{rng.randint(3, 99)}.{rng.randint(0, 9)}", "1.0.0.0", "latest"))
    png = img.encode(drawing)
    if routes.target == TORCHSERVE:
        quoted = urllib.parse.quote(name, safe="")
        path = rng.choice((f"/predictions/{quoted}", f"/predictions/emnist-cnn/{version}"))
        # TorchServe's router normalises /predictions/.. to /predictions/, a 405 of its own.
        statuses = (404, 405) if name == ".." else (404,)
        return Case("unknown model or version", path, path, data=png, statuses=statuses)
    query = rng.choice(({"model": name}, {"model": "emnist-cnn", "version": version}))
    path = f"/api/predict?{urllib.parse.urlencode(query)}"
    return Case("unknown model or version", path, path, data=png,
                headers={"Content-Type": "image/png"}, statuses=(404,))  # fmt: skip


# topk: what a client may send, and whether it is a positive integer (an int or a digit string).
_VALID_TOPK = (1, 2, 3, 4, 5, 46, 47, 48, 1000, 10**9, 10**30, "0003", " 7 ")
_INVALID_TOPK = (0, -1, -(10**9), "abc", "1e3", "3.0", 1.5, "-0", "0x10", "NaN", "∞", "-2")
_INVALID_JSON_TOPK = (True, False, [], {}, [3], {"k": 3})


def _absurd_topk(rng, routes, drawing, turn):
    png = img.encode(drawing)
    pick = rng.random()
    if pick < 0.4:
        value = rng.choice(_VALID_TOPK)
        case = _envelope(rng, routes, png, "absurd topk", f"topk={value!r}", topk=value,
                         expect=PREDICT, same_as=png)  # fmt: skip
        case.topk = int(value)  # answered with min(topk, number of classes) predictions
        return case
    value = rng.choice(_INVALID_TOPK + (_INVALID_JSON_TOPK if pick > 0.8 else ()))
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        data = json.dumps({"image": base64.b64encode(png).decode(), "topk": value}).encode()
        return Case("absurd topk", f"JSON topk={value!r}", rng.choice(routes.paths), data=data,
                    headers={"Content-Type": "application/json"})  # fmt: skip
    return _envelope(rng, routes, png, "absurd topk", f"topk={value!r}", topk=value)


def _oversized(rng, routes, drawing, turn):
    if routes.target == WEBAPP:  # over the app's 2 MB limit: refused before reading
        size = rng.randint(2 * 1024 * 1024 + 1, 3 * 1024 * 1024)
        return _envelope(rng, routes, rng.randbytes(size), "oversized", f"{size} bytes")
    if rng.random() < 0.5:  # TorchServe's frontend refuses it with an empty 413 (not ours)
        size = rng.randint(6_600_000, 7_000_000)
        return Case("oversized", f"{size} bytes", rng.choice(routes.paths),
                    data=rng.randbytes(size), statuses=(413,), json_error=False)  # fmt: skip
    size = rng.randint(2_000_000, 6_000_000)  # reaches the handler: not an image
    return Case("oversized", f"{size} bytes", rng.choice(routes.paths), data=rng.randbytes(size))


def _wrong_method(rng, routes, drawing, turn):
    path = rng.choice(("/api/predict", "/api/compare"))
    method = rng.choice(("GET", "PUT", "DELETE", "PATCH"))
    return Case("wrong method", f"{method} {path}", path, method=method, statuses=(405,))


# category: (builder, share). Only the web app refuses methods (TorchServe takes any).
CATEGORIES = {
    "empty": (_empty, 2),
    "random bytes": (_random_bytes, 3),
    "truncated": (_truncated, 3),
    "corrupted": (_corrupted, 3),
    "wrong content type": (_wrong_content_type, 2),
    "huge dimensions": (_huge_dimensions, 3),
    "decompression bomb": (_decompression_bomb, 2),
    "1x1 and extreme aspect": (_odd_shape, 2),
    "multi-frame": (_multi_frame, 2),
    "16-bit and palette": (_bit_depth_palette, 2),
    "invalid base64 and data URLs": (_bad_base64, 4),
    "unknown model or version": (_unknown_model, 2),
    "absurd topk": (_absurd_topk, 3),
    "oversized": (_oversized, 1),
    "wrong method": (_wrong_method, 1),
}


def generate(routes: Routes, count: int, seed: int) -> list[Case]:
    """`count` cases for routes.target, categories in proportion to their shares, shuffled."""
    rng = random.Random(f"{seed}-{routes.target}")
    drawings = [img.drawing(rng) for _ in range(6)]
    names = [n for n in CATEGORIES if routes.target == WEBAPP or n != "wrong method"]
    plan = [n for n in names for _ in range(CATEGORIES[n][1])]
    cases, turns = [], dict.fromkeys(names, 0)
    for i in range(count):
        name = plan[i % len(plan)]
        cases.append(CATEGORIES[name][0](rng, routes, rng.choice(drawings), turns[name]))
        turns[name] += 1  # builders with sub-kinds take them in turn: all of them get sent
    rng.shuffle(cases)
    return cases
