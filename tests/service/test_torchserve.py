"""Against a real TorchServe on loopback: request shapes, batching, errors, versions, tokens.

One TorchServe serves most tests (started by `serving.ctl start`, the code behind `make serve`,
on free ports in a temporary folder); the token test starts a second one. Teardown stops each
by PID, even after a failure, and checks that its ports are closed and its processes gone.
"""

from __future__ import annotations

import base64
import concurrent.futures
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
import torch
from support.servers import (
    LABELS,
    blank_png,
    build_test_store,
    drawing_png,
    needs_java,
    torchserve_running,
    truncated_png,
)

from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.inference import images_to_tensor, predict_logits
from emnist.preprocessing import preprocess
from evaluation.canvas_like import render, to_png
from serving import archive, ctl
from serving.management import Management, ManagementError
from training import train

pytestmark = [
    pytest.mark.torchserve,
    pytest.mark.slow,
    needs_java,
]
PNG = drawing_png()
B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """emnist-cnn 1.0 and 2.0 (different weights) and emnist-rcnn 1.0, batching on."""
    # A 50 ms batch window makes batches form reliably even on a busy 2-core machine.
    return build_test_store(tmp_path_factory.mktemp("archives"), "--max-batch-delay", "50")


@pytest.fixture(scope="module")
def served(store, tmp_path_factory):
    with torchserve_running(tmp_path_factory.mktemp("torchserve"), store) as server:
        yield server


def predict(server, path: str, **kwargs) -> requests.Response:
    method = kwargs.pop("method", "POST")
    url = f"{server.endpoints.inference}/{path}"
    return requests.request(method, url, timeout=60, **kwargs)


def test_every_listener_is_on_loopback(served):
    listening = [
        c.laddr
        for c in psutil.Process(served.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert {addr.ip for addr in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert {addr.port for addr in listening} == set(served.ports.values())


def test_start_waits_for_ready_and_sets_the_intended_defaults(served, capsys):
    management = Management(served.endpoints)
    for name, version in (("emnist-cnn", "1.0"), ("emnist-cnn", "2.0"), ("emnist-rcnn", "1.0")):
        assert [w["status"] for w in management.describe(name, version)["workers"]] == ["READY"]
    # config.properties names 1.0 although 2.0 is higher: make serve applied it.
    assert management.default_version("emnist-cnn") == "1.0"
    ctl.main(["--logs", served.workdir, "models"])
    table = capsys.readouterr().out
    assert "emnist-cnn   1.0      *" in table and "emnist-rcnn  1.0      *" in table


@pytest.mark.parametrize(
    ("kwargs", "topk"),
    [
        ({"method": "PUT", "data": PNG}, 4),  # curl -T a.png; topk 5 capped at 4 classes
        ({"data": PNG, "headers": {"Content-Type": "image/png"}}, 4),
        ({"json": {"image": f"data:image/png;base64,{B64}"}}, 4),
        ({"json": {"image": B64, "topk": 2}}, 2),
        ({"data": B64, "headers": {"Content-Type": "text/plain"}}, 4),
        ({"files": {"data": ("a.png", PNG, "image/png")}}, 4),
        ({"json": {"instances": [{"data": B64}]}}, 4),  # KServe v1
        ({"json": {"inputs": [{"name": "i", "datatype": "BYTES", "data": [B64]}]}}, 4),  # v2
        ({"data": PNG, "headers": {"Content-Type": "image/png", "X-TopK": "1"}}, 1),
    ],
)
def test_request_shapes(served, kwargs, topk):
    response = predict(served, "predictions/emnist-cnn", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert (body["model"], body["version"], body["empty"]) == ("emnist-cnn", "1.0", False)
    assert len(body["predictions"]) == topk
    assert {p["label"] for p in body["predictions"]} <= set(LABELS)


def test_topk_query_parameter_where_torchserve_passes_it(served):
    # TorchServe 0.12 drops the query string of /predictions URLs, not of /models/<m>/invoke.
    response = predict(served, "models/emnist-rcnn/invoke?topk=2", method="PUT", data=PNG)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "emnist-rcnn"
    assert len(response.json()["predictions"]) == 2


def test_a_blank_canvas_gets_no_guess(served):
    body = predict(served, "predictions/emnist-cnn/1.0", data=blank_png()).json()
    assert body["empty"] is True and body["predictions"] == []


def test_bad_images_get_4xx_and_the_worker_survives(served):
    management = Management(served.endpoints)
    before = management.describe("emnist-cnn", "1.0")["workers"]
    octets = {"Content-Type": "application/octet-stream"}
    for data, status in ((b"%PDF-1.4 not an image", 400), (truncated_png(), 400)):
        response = predict(served, "predictions/emnist-cnn/1.0", data=data, headers=octets)
        assert response.status_code == status, response.text
        assert response.json()["type"] == "InvalidInput"
    form = predict(served, "predictions/emnist-cnn/1.0", data={"x": "y"})  # curl --data
    assert form.status_code == 415
    after = management.describe("emnist-cnn", "1.0")["workers"]
    assert [(w["pid"], w["status"]) for w in after] == [(w["pid"], "READY") for w in before]
    assert predict(served, "predictions/emnist-cnn/1.0", data=PNG).status_code == 200


def test_concurrent_requests_are_batched_and_errors_stay_their_own(served):
    bodies = [truncated_png() if i % 4 == 3 else PNG for i in range(64)]

    def send(body):
        response = predict(served, "predictions/emnist-cnn/2.0", method="PUT", data=body)
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, bodies))
    expected = [400 if body is not PNG else 200 for body in bodies]
    assert [status for status, _ in results] == expected
    good = [body for status, body in results if status == 200]
    assert all(b["version"] == "2.0" and len(b["predictions"]) == 4 for b in good)
    assert len({b["predictions"][0]["label"] for b in good}) == 1  # same image, same answer
    assert max(b["batch_size"] for b in good) > 1, "TorchServe never batched"


def test_versions_default_switch_rollback_and_unregister(served):
    run = ["--logs", served.workdir]

    def served_version(path="predictions/emnist-cnn"):
        response = predict(served, path, data=PNG)
        return response.json()["version"] if response.ok else response.status_code

    assert served_version("predictions/emnist-cnn/1.0") == "1.0"
    assert served_version("predictions/emnist-cnn/2.0") == "2.0"
    assert served_version() == "1.0"
    ctl.main([*run, "set-default", "emnist-cnn", "2.0"])
    assert served_version() == "2.0"
    ctl.main([*run, "set-default", "emnist-cnn", "1.0"])  # rollback
    assert served_version() == "1.0"
    with pytest.raises(SystemExit, match="Cannot remove default version"):
        ctl.main([*run, "unregister", "emnist-cnn", "1.0"])
    ctl.main([*run, "unregister", "emnist-cnn", "2.0"])
    assert served_version("predictions/emnist-cnn/2.0") == 404
    assert served_version() == "1.0"
    ctl.main([*run, "register", "emnist-cnn", "2.0"])  # a release: register, smoke test
    assert served_version("predictions/emnist-cnn/2.0") == "2.0"
    assert served_version() == "1.0"  # registering never changes the default


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.mar", "https://example.com/m.mar"])
def test_registering_from_a_url_is_refused(served, url):
    with pytest.raises(ManagementError, match="does not match any allowed URL"):
        Management(served.endpoints).register(url)


def test_metrics_in_prometheus_format(served):
    response = requests.get(f"{served.endpoints.metrics}/metrics", timeout=30)
    assert response.status_code == 200
    assert "ts_inference_requests_total" in response.text


def test_token_mode_needs_the_keys(store, tmp_path, capsys):
    single = tmp_path / "model_store"
    single.mkdir()
    shutil.copy(store / "emnist-cnn-1.0.mar", single)
    with torchserve_running(tmp_path / "logs", single, token_auth=True) as server:
        url = f"{server.endpoints.inference}/predictions/emnist-cnn"
        inference, management = (
            server.endpoints.key("inference"),
            server.endpoints.key("management"),
        )
        assert requests.put(url, data=PNG, timeout=30).status_code in (400, 401, 403)
        wrong = {"Authorization": f"Bearer {management}"}  # the wrong kind of key
        assert requests.put(url, data=PNG, headers=wrong, timeout=30).status_code >= 400
        ok = requests.put(
            url, data=PNG, headers={"Authorization": f"Bearer {inference}"}, timeout=30
        )
        assert ok.status_code == 200 and ok.json()["model"] == "emnist-cnn"
        models = f"{server.endpoints.management}/models"
        assert requests.get(models, timeout=30).status_code >= 400
        ctl.main(["--logs", str(tmp_path / "logs"), "models"])  # reads the key file
        assert "emnist-cnn" in capsys.readouterr().out


@pytest.mark.shared_data
def test_served_top1_agrees_with_in_process_evaluation(served, store, emnist47_bundle, tmp_path):
    argv = ["--arch", "cnn", "--model-arg", "width=16", "--limit-train", "6000"]
    argv += ["--limit-val", "500", "--epochs", "1", "--batch-size", "64", "--seed", "0"]
    train.main([*argv, "--out", str(tmp_path), "--no-progress"])
    ckpt = load_checkpoint(tmp_path / "best.pt")
    args = ["--name", "emnist-check", "--version", "1.0", "--store", str(store)]
    archive.main([str(tmp_path / "best.pt"), *args, "--precision", "fp32"])  # as in-process
    management = Management(served.endpoints)
    management.register("emnist-check-1.0.mar")
    management.wait_ready([("emnist-check", "1.0")], timeout=120)

    rng = np.random.default_rng(0)
    pick = rng.choice(len(emnist47_bundle.test_labels), size=200, replace=False)
    images, labels = emnist47_bundle.test_images[pick], emnist47_bundle.test_labels[pick]
    pngs = [to_png(render(image, rng)) for image in images]

    def served_label(png):
        response = predict(served, "predictions/emnist-check/1.0", method="PUT", data=png)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["label"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        served_labels = list(pool.map(served_label, pngs))
    model = model_from_checkpoint(ckpt)
    names = np.array(ckpt["class_names"])
    cpu = torch.device("cpu")
    pixels = np.stack([preprocess(png).pixels for png in pngs])
    in_process = names[predict_logits(model, images_to_tensor(pixels, cpu)).argmax(1).numpy()]
    on_originals = names[predict_logits(model, images_to_tensor(images, cpu)).argmax(1).numpy()]
    truth = names[labels]
    agreement = np.mean(np.array(served_labels) == in_process)
    served_acc, original_acc = np.mean(served_labels == truth), np.mean(on_originals == truth)
    print(f"served top-1 {served_acc:.1%}, in-process on the original images {original_acc:.1%}")
    management.unregister("emnist-check", "1.0")
    assert agreement >= 0.99, f"served and in-process top-1 agree on {agreement:.1%}"
    assert original_acc > 0.2, "the briefly trained model should be a real classifier"
    assert served_acc >= original_acc - 0.06
