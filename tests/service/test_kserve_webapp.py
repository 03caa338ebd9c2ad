"""The web app in front of a KServe v1 endpoint (`--inference-protocol kserve-v1`).

The real app (waitress, its own process) runs twice: in kserve-v1 mode against TorchServe under
the pod's config with TS_SERVICE_ENVELOPE=kserve, and in its default mode against `make serve`'s
config over the same archives. Every answer must match, and the kserve-v1 app must reach the
server only through /v1/models paths. KServe's own model server is not run (see test_kserve.py);
what TorchServe cannot show (it answers 404 to GET /v1/models, it ignores Host) is checked
against a small stand-in that answers like KServe's model server.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from support.kserve import assemble, end_to_end, pinned_versions, running, same_answer
from support.servers import blank_png, drawing_png, free_ports, truncated_png, webapp_running

from webapp import create_app
from webapp.kserve_client import KServeV1Client
from webapp.torchserve_client import TorchServeError

IMAGES = {"T": drawing_png("T"), "L": drawing_png("L"), "blank": blank_png()}


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kserve") / "layout"
    assemble(out)
    return out


@pytest.fixture(scope="module")
def pinned(layout) -> dict[str, str]:
    return pinned_versions(layout)


@pytest.fixture(scope="module")
def servers(layout, tmp_path_factory):
    with running(("plain", "v1"), layout, tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def access_log_start(servers) -> tuple[Path, int]:
    """The v1 server's access log, and its size before any web app ran."""
    access_log = Path(servers["v1"].workdir) / "access_log.log"
    return access_log, access_log.stat().st_size if access_log.exists() else 0


@pytest.fixture(scope="module")
def apps(servers, pinned, access_log_start, tmp_path_factory):
    """{"torchserve": url, "kserve": url}: the app in each mode, in front of its server."""
    logs = tmp_path_factory.mktemp("webapps")
    kserve = ["--inference-protocol", "kserve-v1", "--models", ",".join(pinned)]
    with (
        webapp_running(servers["plain"], logs) as (plain_url, _),
        webapp_running(servers["v1"], logs, *kserve) as (kserve_url, _),
    ):
        yield {"torchserve": plain_url, "kserve": kserve_url}


def call(url: str, path: str, png: bytes | None = None, **params) -> requests.Response:
    if png is None:
        return requests.get(url + path, timeout=60)
    return requests.post(url + path, params=params, files={"image": ("a.png", png)}, timeout=60)


@end_to_end
def test_the_app_answers_through_kserve_v1_what_it_answers_through_torchserve(apps, pinned):
    plain, kserve = apps["torchserve"], apps["kserve"]
    for name, version in pinned.items():
        for png in IMAGES.values():
            expected = call(plain, "/api/predict", png, model=name, topk=3)
            assert expected.status_code == 200, expected.text
            for asked in (None, version):  # the model's default, then its version by name
                got = call(kserve, "/api/predict", png, model=name, topk=3, version=asked)
                assert got.status_code == 200, got.text
                same_answer(got.json(), expected.json())
                assert got.json()["preview"] == expected.json()["preview"]
                assert got.json()["latency_ms"] > 0
    # The comparison means something: different drawings, different answers; blank is empty.
    answers = {i: call(plain, "/api/predict", png).json() for i, png in IMAGES.items()}
    assert answers["T"]["predictions"][0]["label"] != answers["L"]["predictions"][0]["label"]
    assert answers["blank"]["empty"] is True and answers["blank"]["predictions"] == []

    compared = {app: call(url, "/api/compare", IMAGES["L"], topk=2) for app, url in apps.items()}
    results = {app: r.json()["results"] for app, r in compared.items()}
    assert [r["model"] for r in results["kserve"]] == sorted(pinned)
    for got, expected in zip(results["kserve"], results["torchserve"], strict=True):
        same_answer(got, expected)

    models = call(kserve, "/api/models")
    assert models.status_code == 200 and models.json() == call(plain, "/api/models").json()
    assert models.json()["models"] == [
        {"name": n, "default": v, "versions": [v]} for n, v in sorted(pinned.items())
    ]
    health = call(kserve, "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text


@end_to_end
def test_errors_through_kserve_v1_are_json_with_the_right_status(apps, pinned):
    kserve, name = apps["kserve"], sorted(pinned)[0]
    bad = call(kserve, "/api/predict", truncated_png(), model=name)
    assert bad.status_code == 400 and "truncated" in bad.json()["message"], bad.text
    unknown = call(kserve, "/api/predict", IMAGES["T"], model="emnist-nope")
    assert unknown.status_code == 404 and "emnist-nope" in unknown.json()["message"]
    # KServe serves one version per revision: another version is not there.
    other = call(kserve, "/api/predict", IMAGES["T"], model=name, version="9.9")
    assert other.status_code == 404, other.text
    assert f"serves {name} {pinned[name]}" in other.json()["message"]


@end_to_end
def test_the_kserve_app_calls_only_kserve_paths(apps, pinned, access_log_start):
    """The v1 server's access log since the app started: KServe v1 paths only, never the
    management API (/models) or the plain one (/predictions)."""
    call(apps["kserve"], "/api/models")
    call(apps["kserve"], "/healthz")
    access_log, before = access_log_start
    deadline = time.monotonic() + 10
    while True:  # TorchServe writes its access log through log4j: give it a moment
        with open(access_log, "rb") as log:
            log.seek(before)
            paths = re.findall(r'"(?:GET|POST) (\S+) HTTP', log.read().decode())
        if any("/v1/models/" in p for p in paths) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {f"/v1/models/{n}:predict" for n in pinned} <= set(paths)
    assert {f"/v1/models/{n}" for n in pinned} <= set(paths)  # readiness, for /healthz
    assert {p for p in paths if not p.startswith("/v1/models")} == set(), paths


@end_to_end
def test_the_kserve_client_maps_the_envelopes_errors(servers, pinned):
    url, name = servers["v1"].endpoints.inference, sorted(pinned)[0]
    client = KServeV1Client(url)
    for data, reason in ((truncated_png(), "truncated"), (b"not an image", "not a readable")):
        with pytest.raises(TorchServeError) as raised:
            client.predict(name, None, data, "image/png", 3)
        assert raised.value.status == 400 and reason in raised.value.message
    with pytest.raises(TorchServeError) as raised:
        client.predict("emnist-nope", None, IMAGES["T"], "image/png", 3)
    assert raised.value.status == 404
    # TorchServe under the envelope does not list its models: without EMNIST_MODELS, say so.
    assert requests.get(f"{url}/v1/models", timeout=30).status_code == 404
    with pytest.raises(TorchServeError) as raised:
        client.model_names()
    assert raised.value.status == 502 and "EMNIST_MODELS" in raised.value.message


class FakeKServe(BaseHTTPRequestHandler):
    """KServe's model server as far as the app asks it: GET /v1/models lists "emnist-cnn"
    (ready) and "emnist-rcnn" (not ready yet); it records each request's Host header."""

    hosts: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.hosts.append(self.headers["Host"])
        if self.path == "/v1/models":
            return self.reply(200, {"models": ["emnist-rcnn", "emnist-cnn"]})
        name = self.path.removeprefix("/v1/models/")
        self.reply(200, {"name": name, "ready": name == "emnist-cnn"})


@pytest.fixture
def fake_kserve():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKServe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeKServe.hosts.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_model_list_and_readiness_come_from_kserve_with_the_host_header(fake_kserve):
    config = {"INFERENCE_URL": fake_kserve, "INFERENCE_PROTOCOL": "kserve-v1"}
    config |= {"MODELS": "configured-only", "INFERENCE_HOST_HEADER": "emnist.ns.example.com"}
    client = create_app(config).test_client()
    assert client.application.extensions["torchserve"].model_names() == [
        "emnist-cnn",
        "emnist-rcnn",
    ]  # the endpoint's own list wins over the configured one
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json["torchserve"]["message"].endswith("not ready: emnist-rcnn")
    assert FakeKServe.hosts and set(FakeKServe.hosts) == {"emnist.ns.example.com"}


def test_an_unreachable_kserve_endpoint_is_503_with_retry_after():
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    config = {"INFERENCE_URL": url, "INFERENCE_PROTOCOL": "kserve-v1", "MODELS": "emnist-cnn"}
    client = create_app(config).test_client()
    predicted = client.post("/api/predict", data=IMAGES["T"], content_type="image/png")
    assert predicted.status_code == 503 and predicted.headers["Retry-After"] == "5"
    assert "KServe endpoint is not reachable" in predicted.json["message"]
    assert client.get("/healthz").status_code == 503


def test_an_unknown_protocol_is_refused_at_start():
    with pytest.raises(ValueError, match="unknown inference protocol 'kserve-v3'"):
        create_app({"INFERENCE_PROTOCOL": "kserve-v3"})
