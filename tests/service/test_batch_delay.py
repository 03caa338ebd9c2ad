"""An archive's batch delay of 0 is served as 0, at start-up and when registered later.

TorchServe 0.12 reads `maxBatchDelay: 0` in an archive's model-config.yaml as "not set" and
waits its 100 ms default for every batch; `make serve` (a `model_snapshot`: serving/torchserve.py
`startup_snapshot`) and `make register` / `make promote` (`Management.register` with the
archive's batching) give it the 0 it asks for. A lone request must not wait for company.
"""

from __future__ import annotations

import statistics
import time

import pytest
import requests
from support.servers import drawing_png, needs_java, torchserve_running, write_checkpoint

from serving import archive, ctl, torchserve
from serving.management import Management

pytestmark = [pytest.mark.torchserve, pytest.mark.slow, needs_java]


def build(ckpt, store, version: str, delay: int) -> None:
    names = ["--name", "emnist-cnn", "--version", version, "--store", str(store)]
    settings = ["--workers", "1", "--max-batch-delay", str(delay), "--no-check"]
    archive.main([str(ckpt), *names, *settings])


def lone_request_ms(server, version: str) -> float:
    url = f"{server.endpoints.inference}/predictions/emnist-cnn/{version}"
    times = []
    with requests.Session() as session:
        for _ in range(7):
            start = time.perf_counter()
            assert session.post(url, data=drawing_png()).status_code == 200
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def test_a_zero_delay_is_served_as_zero_at_start_up_and_on_register(tmp_path):
    store = tmp_path / "model_store"
    ckpt = write_checkpoint(tmp_path / "c.pt")
    build(ckpt, store, "1.0", 0)
    assert torchserve.archive_batching(store / "emnist-cnn-1.0.mar") == (8, 0)
    with torchserve_running(tmp_path / "logs", store) as server:
        management = Management(server.endpoints)
        assert management.describe("emnist-cnn", "1.0")["maxBatchDelay"] == 0
        build(ckpt, store, "1.1", 0)  # a later release, registered as `make register` does
        ctl.main(["--logs", str(tmp_path / "logs"), "register", "emnist-cnn", "1.1"])
        assert management.describe("emnist-cnn", "1.1")["maxBatchDelay"] == 0
        build(ckpt, store, "1.2", 20)  # an archive's own non-zero delay is kept
        ctl.main(["--logs", str(tmp_path / "logs"), "register", "emnist-cnn", "1.2"])
        assert management.describe("emnist-cnn", "1.2")["maxBatchDelay"] == 20
        # A lone request does not wait for company: far under TorchServe's 100 ms default.
        assert lone_request_ms(server, "1.0") < 50 and lone_request_ms(server, "1.1") < 50
        assert lone_request_ms(server, "1.2") > 20
