"""Security of the deployment as configured (see docs/security.md), against the real parts: default
addresses; then TorchServe in token mode behind the real web app (waitress, --token-file):
loopback listeners, keys read and rotated, registration from URLs or outside the store refused,
no route to the management API, headers and body limits. test_torchserve.py covers the rest."""

from __future__ import annotations

import json
import re
import socket
import stat
import time
from pathlib import Path

import psutil
import pytest
import requests
from support.servers import (
    drawing_png,
    needs_java,
    torchserve_running,
    webapp_running,
    write_checkpoint,
)

import webapp.__main__ as webapp_main
from serving import archive, torchserve
from serving.management import Management, ManagementError
from webapp import create_app

ROOT = Path(__file__).resolve().parents[2]
PNG = drawing_png("L")
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def served(test):
    """Marks a test that needs the real deployment (TorchServe, hence Java 17)."""
    return pytest.mark.torchserve(pytest.mark.slow(needs_java(test)))


# --- Defaults, without starting anything ---------------------------------------------------


def test_config_properties_binds_every_listener_to_loopback():
    props = torchserve.read_properties(ROOT / "config.properties")
    for key in ("inference_address", "management_address", "metrics_address"):
        assert re.fullmatch(r"https?://127\.0\.0\.1:\d+", props[key]), (key, props[key])
    assert props["grpc_inference_address"] == props["grpc_management_address"] == "127.0.0.1"
    assert props["allowed_urls"] == "(?!)"  # a pattern no URL matches


def test_rendered_config_is_loopback_even_from_a_template_that_says_otherwise(tmp_path):
    template = tmp_path / "config.properties"
    template.write_text(
        "inference_address=http://0.0.0.0:8080\nmanagement_address=http://0.0.0.0:8081\n"
        "grpc_inference_address=0.0.0.0\nmodel_store=model_store\n"
    )  # metrics and gRPC management left out: TorchServe's own defaults would apply
    rendered = template.with_name("rendered.properties")
    rendered.write_text(
        torchserve.render_config(template, tmp_path, torchserve.Ports(), token_auth=False)
    )
    props = torchserve.read_properties(rendered)
    addresses = {k: v for k, v in props.items() if k.endswith("_address")}
    assert len(addresses) == 5
    assert all(re.fullmatch(r"(http://)?127\.0\.0\.1(:\d+)?", v) for v in addresses.values())
    assert "0.0.0.0" not in rendered.read_text()


def test_the_web_app_listens_on_loopback_by_default(monkeypatch):
    monkeypatch.delenv("EMNIST_WEB_HOST", raising=False)
    assert webapp_main.parse_args([]).host == "127.0.0.1"


# --- One TorchServe in token mode and the web app in front of it -------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """TorchServe (token mode, emnist-cnn 1.0) and the web app with --token-file; plus a valid
    archive outside the model store, which registration must never reach."""
    tmp = tmp_path_factory.mktemp("security")
    ckpt = write_checkpoint(tmp / "cnn.pt")
    for name, folder in (("emnist-cnn", "model_store"), ("emnist-outside", "outside")):
        argv = [str(ckpt), "--name", name, "--version", "1.0", "--store", str(tmp / folder)]
        archive.main([*argv, "--no-check"])
    logs = tmp / "logs"
    with torchserve_running(logs, tmp / "model_store", token_auth=True) as server:
        key_file = server.endpoints.key_file
        with webapp_running(server, tmp, "--token-file", str(key_file)) as (url, process):
            yield {"server": server, "url": url, "web_pid": process.pid, "tmp": tmp, "logs": logs}


def listeners(pid: int) -> set[tuple[str, int]]:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        (c.laddr.ip, c.laddr.port)
        for p in processes
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }


@served
def test_every_listener_of_the_deployment_is_on_loopback(deployment):
    server = deployment["server"]
    torchserve = listeners(server.pid)
    web = listeners(deployment["web_pid"])
    assert {ip for ip, _ in torchserve | web} <= LOOPBACK, torchserve | web
    assert {port for _, port in torchserve} == set(server.ports.values())  # gRPC included
    assert {port for _, port in web} == {int(deployment["url"].rsplit(":", 1)[1])}


@served
def test_token_mode_end_to_end_through_the_web_app(deployment):
    server, url = deployment["server"], deployment["url"]
    direct = f"{server.endpoints.inference}/predictions/emnist-cnn"
    assert requests.post(direct, data=PNG, timeout=30).status_code in (400, 401, 403)
    assert requests.get(f"{server.endpoints.management}/models", timeout=30).status_code >= 400
    # The app reads the inference key for predictions and the management key for the list.
    predicted = requests.post(f"{url}/api/predict", data=PNG, timeout=60)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["model"] == "emnist-cnn" and predicted.json()["predictions"]
    models = requests.get(f"{url}/api/models", timeout=30)
    assert models.status_code == 200, models.text
    assert [m["name"] for m in models.json()["models"]] == ["emnist-cnn"]
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    # An app started without the key file is refused, and says what to fix.
    endpoints = server.endpoints
    keyless = create_app(
        {"INFERENCE_URL": endpoints.inference, "MANAGEMENT_URL": endpoints.management}
    ).test_client()
    refused = keyless.post("/api/predict", data=PNG, content_type="image/png")
    assert refused.status_code == 502 and "--token-file" in refused.json["message"]


@served
def test_rotated_keys_are_picked_up_without_restarting_the_app(deployment):
    server, url = deployment["server"], deployment["url"]
    key_file = server.endpoints.key_file
    keys = json.loads(key_file.read_text())
    # TorchServe's token API (0.12): the API key renews the inference key in key_file.json.
    renewed = requests.get(
        f"{server.endpoints.management}/token",
        params={"type": "inference"},
        headers={"Authorization": f"Bearer {keys['API']['key']}"},
        timeout=30,
    )
    assert renewed.status_code == 200, renewed.text
    new_key = json.loads(key_file.read_text())["inference"]["key"]
    assert new_key != keys["inference"]["key"]
    old = {"Authorization": f"Bearer {keys['inference']['key']}"}
    direct = f"{server.endpoints.inference}/predictions/emnist-cnn"
    assert requests.post(direct, data=PNG, headers=old, timeout=30).status_code >= 400
    predicted = requests.post(f"{url}/api/predict", data=PNG, timeout=60)
    assert predicted.status_code == 200, predicted.text


NO_URL = "does not match any allowed URL"
TRAVERSAL = "Relative path is not allowed"


@served
@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://example.com/x.mar", NO_URL),
        ("http://127.0.0.1:9/x.mar", NO_URL),  # SSRF towards loopback
        ("https://example.com/../../x.mar", TRAVERSAL),  # CVE-2024-35198's bypass
        ("file:///etc/passwd", NO_URL),
        ("file://{tmp}/outside/emnist-outside-1.0.mar", NO_URL),  # a valid archive elsewhere
        ("../outside/emnist-outside-1.0.mar", TRAVERSAL),  # the same, relative to the store
        ("{tmp}/outside/emnist-outside-1.0.mar", "Model not found"),  # looked up in the store
    ],
)
def test_registering_anything_but_a_store_archive_is_refused(deployment, url, refusal):
    management = Management(deployment["server"].endpoints)
    with pytest.raises(ManagementError, match=refusal):
        management.register(url.format(tmp=deployment["tmp"]))
    assert management.model_names() == ["emnist-cnn"]


# Paths a user might try to reach TorchServe's management API through the app.
PROBES = [
    ("GET", "/models"), ("GET", "/models/emnist-cnn"), ("GET", "/api/../models"),
    ("GET", "/api/%2e%2e/models"), ("GET", "/api/models/emnist-cnn"),
    ("GET", "/api/models/emnist-cnn/all"), ("POST", "/api/models?url=https://example.com/x.mar"),
    ("POST", "/models?url=emnist-cnn-1.0.mar"), ("PUT", "/api/models/emnist-cnn/1.0/set-default"),
    ("PUT", "/models/emnist-cnn/1.0/set-default"), ("DELETE", "/api/models/emnist-cnn/1.0"),
    ("DELETE", "/models/emnist-cnn/1.0"), ("GET", "/token?type=management"),
    ("GET", "/api/token?type=management"), ("GET", "/metrics"), ("GET", "/predictions/emnist-cnn"),
    ("POST", "/api/predict?model=..%2Fmodels"),
    ("POST", "/api/predict?model=emnist-cnn&version=1.0%2Fset-default"),
]  # fmt: skip
# Everything the app may ask TorchServe: health, predictions, and read-only model listings.
ALLOWED_UPSTREAM = re.compile(
    r'"(GET /ping|POST /predictions/emnist-cnn(/[\w.-]+)?'
    r"|GET /models\?limit=100(&next_page_token=\S+)?|GET /models/emnist-cnn(/all)?) HTTP/1.1\""
)


@served
def test_no_route_of_the_app_reaches_the_management_api(deployment):
    url, logs = deployment["url"], deployment["logs"]
    access_log = logs / "access_log.log"
    start = access_log.stat().st_size
    for method, path in PROBES:
        response = requests.request(method, url + path, data=PNG, timeout=30)
        assert response.status_code in (400, 404, 405), (method, path, response.status_code)
        assert response.headers["Content-Type"] == "application/json", (method, path)
        assert "modelName" not in response.text and "key" not in response.json()
    # Every route of the app, so that the log below shows all it sends upstream.
    assert requests.post(f"{url}/api/predict?version=1.0", data=PNG, timeout=60).ok
    assert requests.post(f"{url}/api/compare", data=PNG, timeout=60).ok
    assert requests.get(f"{url}/healthz", timeout=30).ok
    assert requests.get(f"{url}/api/models", timeout=30).ok
    deadline = time.monotonic() + 10  # TorchServe writes its access log asynchronously
    while "/models/emnist-cnn/all" not in access_log.read_text()[start:]:
        assert time.monotonic() < deadline, "the access log never showed GET /api/models"
        time.sleep(0.2)
    sent = [line for line in access_log.read_text()[start:].splitlines() if '"' in line]
    assert sent and all(ALLOWED_UPSTREAM.search(line) for line in sent), sent
    management = Management(deployment["server"].endpoints)
    assert management.model_names() == ["emnist-cnn"]
    assert management.default_version("emnist-cnn") == "1.0"


@served
def test_the_keys_stay_in_the_owner_only_key_file(deployment):
    """Runs after the app has predicted, listed models and seen a key rotation: no key may
    appear in TorchServe's logs or the app's output (both readable by other local users)."""
    key_file = deployment["server"].endpoints.key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    keys = [entry["key"] for entry in json.loads(key_file.read_text()).values()]
    assert len(keys) == 3 and all(len(key) >= 8 for key in keys)
    outputs = [*deployment["logs"].iterdir(), *deployment["tmp"].glob("webapp-*.out")]
    for path in outputs:
        if path.is_file() and path != key_file:
            text = path.read_text(errors="replace")
            assert not [key for key in keys if key in text], f"a key leaked into {path}"


def csp_directives(header: str) -> dict[str, list[str]]:
    parts = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: d[1:] for d in parts}


@served
def test_the_real_server_sends_a_strict_csp_and_nosniff_on_every_response(deployment):
    url = deployment["url"]
    responses = {
        "page": requests.get(f"{url}/", timeout=30),
        "script": requests.get(f"{url}/static/app.js", timeout=30),
        "api": requests.get(f"{url}/api/models", timeout=30),
        "404": requests.get(f"{url}/nope", timeout=30),
        "400": requests.post(f"{url}/api/predict", data=b"not an image", timeout=30),
    }
    for what, response in responses.items():
        csp = csp_directives(response.headers["Content-Security-Policy"])
        scripts = csp.get("script-src", csp["default-src"])
        assert scripts == ["'self'"], (what, scripts)  # no 'unsafe-inline', no 'unsafe-eval'
        assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
        assert csp["base-uri"] == ["'none'"], what
        assert response.headers["X-Content-Type-Options"] == "nosniff", what
    html = responses["page"].text
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script\s*>", html, re.DOTALL | re.IGNORECASE)
    assert scripts, "the page loads its script"
    for attributes, inline in scripts:
        assert re.search(r'\bsrc="/static/', attributes) and not inline.strip(), attributes
    assert not re.search(r"<[^>]*\son\w+\s*=", html), "inline event handlers are inline script"
    assert "javascript:" not in html.lower()


@served
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_real_server_refuses_bodies_over_the_limit_with_json(deployment, chunked):
    url = deployment["url"]
    body = b"\x89PNG" + b"\0" * (3 * 1024 * 1024)
    data = (body[i : i + 65536] for i in range(0, len(body), 65536)) if chunked else body
    response = requests.post(
        f"{url}/api/predict", data=data, headers={"Content-Type": "image/png"}, timeout=60
    )
    assert response.status_code in (400, 413), response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "2 MB" in response.json()["message"]


@served
def test_the_real_server_refuses_a_huge_body_before_reading_it(deployment):
    """A declared 1 GB upload is answered at once: waitress would otherwise buffer all of it
    (its default limit is 1 GB) before the app's check runs."""
    host, port = deployment["url"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
            b"Content-Length: 1000000000\r\n\r\n" + b"\0" * 4096
        )
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]  # socket.timeout fails the test
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
