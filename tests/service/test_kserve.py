"""deploy/kserve: the layout assembler, then TorchServe run with that layout's exact config.

The KServe tests start three TorchServes on free loopback ports over the same assembled layout
(the shipped archives of model_store/): the pod's config.properties with the envelope KServe's
runtime selects for protocolVersion v1 (TS_SERVICE_ENVELOPE=kserve) and for v2 (kservev2), and
`make serve`'s config as the plain /predictions reference. Only the listen addresses and the
model store path of the pod config are rewritten. KServe's own model server (kserve_wrapper,
the hop in front of TorchServe in the pod) is not run: the kserve package cannot be installed
beside our pins (deploy/kserve/README.md); these requests are the ones it forwards.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import zipfile
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from support.kserve import (
    ROOT,
    assemble,
    end_to_end,
    pinned_versions,
    post,
    running,
    same_answer,
    snapshot_of,
    v1_body,
)
from support.servers import blank_png, drawing_png, truncated_png

from serving import torchserve
from serving.management import Management

TEMPLATE = ROOT / "deploy" / "kserve" / "config.properties"
IMAGES = {"T": drawing_png("T"), "L": drawing_png("L"), "blank": blank_png()}
# Keys the tests may change in the pod config: where TorchServe listens, where the store is.
ADDRESSES = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
REWRITTEN = {f"{name}_address" for name in ADDRESSES} | {"grpc_inference_port", "model_store"}
REWRITTEN |= {"grpc_management_port", "workflow_store"}


def fake_archive(store: Path, name: str, version: str) -> Path:
    """A .mar as far as the assembler reads one: its manifest (it copies, never loads it)."""
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{name}-{version}.mar"
    manifest = {"model": {"modelName": name, "modelVersion": version}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        z.writestr("weights", f"{name} {version}")
    return path


@pytest.fixture
def store(tmp_path) -> tuple[Path, Path]:
    """emnist-cnn 1.0 (the configured default) and 2.0, emnist-rcnn 1.0 and 1.1 (no default)."""
    for name, version in (("cnn", "1.0"), ("cnn", "2.0"), ("rcnn", "1.0"), ("rcnn", "1.1")):
        fake_archive(tmp_path / "store", f"emnist-{name}", version)
    config = tmp_path / "config.properties"
    config.write_text('models={"emnist-cnn": {"1.0": {"defaultVersion": true}}}\n')
    return tmp_path / "store", config


def test_layout_pins_the_configured_defaults_else_the_highest(store, tmp_path):
    source, config = store
    out = tmp_path / "layout"
    assemble(out, "--model-store", source, "--config", config)
    copied = sorted(p.name for p in (out / "model-store").iterdir())
    assert copied == ["emnist-cnn-1.0.mar", "emnist-rcnn-1.1.mar"]
    for name in copied:
        assert (out / "model-store" / name).read_bytes() == (source / name).read_bytes()
    snap = snapshot_of(out)
    assert snap["modelCount"] == 2
    assert {name: list(v) for name, v in snap["models"].items()} == {
        "emnist-cnn": ["1.0"],
        "emnist-rcnn": ["1.1"],
    }
    entry = snap["models"]["emnist-rcnn"]["1.1"]
    assert entry["marName"] == "emnist-rcnn-1.1.mar" and entry["defaultVersion"] is True
    assert entry["batchSize"] == 1  # the KServe envelopes answer one request per batch
    # What KServe's wrapper reads (it fails on a missing key) and where the runtime mounts.
    pod = torchserve.read_properties(out / "config" / "config.properties")
    for key in ("inference_address", "management_address", "grpc_inference_port"):
        assert pod[key]
    assert pod["inference_address"] == pod["management_address"] == "http://0.0.0.0:8085"
    assert pod["model_store"] == "/mnt/models/model-store"
    # Everything else is the pod config as committed.
    written = (out / "config" / "config.properties").read_text().splitlines()
    template = TEMPLATE.read_text().splitlines()
    assert len(written) == len(template)
    assert [a for a, b in zip(written, template, strict=True) if a != b] == [
        line for line in written if line.startswith("model_snapshot=")
    ]


def test_a_canary_pin_replaces_the_layout_whole(store, tmp_path):
    source, config = store
    out = tmp_path / "layout"
    assemble(out, "--model-store", source, "--config", config)
    result = assemble(out, "--model-store", source, "--config", config, "--pin", "emnist-cnn=2.0")
    assert "emnist-cnn   2.0" in result.stdout
    copied = sorted(p.name for p in (out / "model-store").iterdir())
    assert copied == ["emnist-cnn-2.0.mar", "emnist-rcnn-1.1.mar"]
    assert list(snapshot_of(out)["models"]["emnist-cnn"]) == ["2.0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.properties", "layout", "store"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pin", "emnist-cnn=3.0"], "no archive of emnist-cnn 3.0 (have: 1.0, 2.0)"),
        (["--pin", "emnist-xyz=1.0"], "--pin names no archived model: emnist-xyz"),
        (["--pin", "emnist-cnn"], "--pin takes NAME=VERSION"),
        (["--model-store", "empty"], "no model archives in"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(store, tmp_path, args, message):
    source, config = store
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / a) if a == "empty" else a for a in args]
    out = tmp_path / "layout"
    result = assemble(out, "--model-store", source, "--config", config, *args, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not out.exists()


def test_a_folder_that_is_not_a_layout_is_never_replaced(store, tmp_path):
    source, config = store
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = assemble(out, "--model-store", source, "--config", config, check=False)
    assert result.returncode != 0 and "is not a KServe layout" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_canary_manifest_changes_only_the_release_and_its_traffic():
    base, canary = (
        yaml.safe_load((ROOT / "deploy" / "kserve" / name).read_text())
        for name in ("inferenceservice.yaml", "canary.yaml")
    )
    model = base["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "pytorch"
    # The runtime image's TorchServe is the one the archives are built and tested with.
    pins = (ROOT / "requirements.txt").read_text().splitlines()
    assert f"torchserve=={model['runtimeVersion']}" in pins
    assert canary["spec"]["predictor"].pop("canaryTrafficPercent") == 10
    assert canary["spec"]["predictor"]["model"].pop("storageUri") != model.pop("storageUri")
    assert canary == base


# --- TorchServe under the pod's config, on loopback -------------------------------------------


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    """`make kserve-layout`: the shipped archives, pinned as config.properties says."""
    out = tmp_path_factory.mktemp("kserve") / "layout"
    assemble(out)
    return out


@pytest.fixture(scope="module")
def pinned(layout) -> dict[str, str]:
    return pinned_versions(layout)


@pytest.fixture(scope="module")
def servers(layout, tmp_path_factory):
    """{"plain", "v1", "v2"}: TorchServe started by serving.torchserve, stopped by PID."""
    with running(("plain", "v1", "v2"), layout, tmp_path_factory) as started:
        yield started


def v2_body(png: bytes, request_id: str) -> dict:
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES"}
    return {"id": request_id, "inputs": [{**tensor, "data": [base64.b64encode(png).decode()]}]}


@end_to_end
@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_the_pod_config_runs_with_only_its_addresses_rewritten(servers, layout, kind):
    server = servers[kind]
    pod = torchserve.read_properties(layout / "config" / "config.properties")
    ran = torchserve.read_properties(Path(server.workdir) / "config.properties")
    assert {k for k in pod.keys() | ran.keys() if pod.get(k) != ran.get(k)} <= REWRITTEN
    assert ran["inference_address"] == ran["management_address"]  # one port, as in the pod
    listening = [
        c.laddr
        for c in psutil.Process(server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert {addr.ip for addr in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}
    assert {addr.port for addr in listening} == set(server.ports.values())


@end_to_end
def test_the_snapshot_serves_exactly_the_pinned_versions_one_request_per_batch(servers, pinned):
    for kind in ("v1", "v2"):
        management = Management(servers[kind].endpoints)
        assert sorted(management.model_names()) == sorted(pinned)
        for name, version in pinned.items():
            assert management.default_version(name) == version
            # The archives ask for batches of 8 (model-config.yaml); the snapshot's 1 wins.
            url = f"{management.endpoints.management}/models/{name}"
            (described,) = requests.get(url, timeout=30).json()
            assert described["batchSize"] == 1


@end_to_end
def test_kserve_v1_and_v2_answer_what_the_plain_api_answers(servers, pinned):
    for name, version in pinned.items():
        plain = {}
        for image, png in IMAGES.items():
            response = post(servers["plain"], f"predictions/{name}", data=png)
            assert response.status_code == 200, response.text
            plain[image] = response.json()

            v1 = post(servers["v1"], f"v1/models/{name}:predict", json=v1_body(png))
            assert v1.status_code == 200, v1.text
            assert list(v1.json()) == ["predictions"] and len(v1.json()["predictions"]) == 1
            same_answer(v1.json()["predictions"][0], plain[image])

            v2 = post(servers["v2"], f"v2/models/{name}/infer", json=v2_body(png, f"r-{image}"))
            assert v2.status_code == 200, v2.text
            body = v2.json()
            assert (body["id"], body["model_name"], body["model_version"]) == (
                f"r-{image}",
                name,
                version,
            )
            (output,) = body["outputs"]
            assert (output["name"], output["datatype"], output["shape"]) == ("image", "BYTES", [1])
            same_answer(output["data"][0], plain[image])
        # The comparison means something: two drawings, two different answers; blank is empty.
        assert plain["T"]["predictions"][0]["label"] != plain["L"]["predictions"][0]["label"]
        assert plain["blank"]["empty"] is True and plain["blank"]["predictions"] == []
        # topk rides along inside a v1 instance.
        v1 = post(servers["v1"], f"v1/models/{name}:predict", json=v1_body(IMAGES["T"], topk=2))
        same_answer(v1.json()["predictions"][0], plain["T"], topk=2)


@end_to_end
def test_a_v1_request_with_several_instances_answers_each(servers, pinned):
    name = sorted(pinned)[0]
    order = ["T", "L", "blank"]
    plain = [post(servers["plain"], f"predictions/{name}", data=IMAGES[i]).json() for i in order]
    instances = [v1_body(IMAGES[i])["instances"][0] for i in order]
    v1 = post(servers["v1"], f"v1/models/{name}:predict", json={"instances": instances})
    assert v1.status_code == 200, v1.text
    answers = v1.json()["predictions"]
    assert len(answers) == len(order)
    for answer, expected in zip(answers, plain, strict=True):
        same_answer(answer, expected)


@end_to_end
def test_concurrent_v1_requests_each_get_their_own_answer(servers, pinned):
    name = sorted(pinned)[0]
    expected = {
        image: post(servers["plain"], f"predictions/{name}", data=IMAGES[image]).json()
        for image in ("T", "L")
    }
    order = ["T", "L"] * 8

    def send(image):
        return post(servers["v1"], f"v1/models/{name}:predict", json=v1_body(IMAGES[image]))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, order))
    assert [r.status_code for r in responses] == [200] * len(order)
    for image, response in zip(order, responses, strict=True):
        same_answer(response.json()["predictions"][0], expected[image])


@end_to_end
def test_errors_keep_their_status_and_reason_through_the_envelopes(servers, pinned):
    name = sorted(pinned)[0]
    truncated = base64.b64encode(truncated_png()).decode()
    for data in ("this is not base64!", truncated):
        v1 = post(servers["v1"], f"v1/models/{name}:predict", json={"instances": [{"data": data}]})
        assert v1.status_code == 400, v1.text
        assert v1.json()["predictions"][0]["type"] == "InvalidInput"
        tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [data]}
        v2 = post(servers["v2"], f"v2/models/{name}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 400, v2.text
        assert v2.json()["outputs"][0]["data"][0]["type"] == "InvalidInput"
    # The envelope really is on: the plain API's raw PNG body is not a KServe request.
    assert post(servers["v1"], f"predictions/{name}", data=IMAGES["T"]).status_code != 200
