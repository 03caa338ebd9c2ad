"""A real TorchServe and a real web app (waitress, in its own process) on free loopback ports,
for the bad-input and fault tests. Both are stopped by PID on the way out, even after a failure,
and the teardown checks that nothing they started is left running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from serving_helpers import free_ports, torchserve_running

from handlers import server as ts
from handlers.management import Endpoints, Management
from webapp.demo import stop_process

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def torchserve(workdir: Path, store: Path) -> Iterator[ts.Server]:
    with torchserve_running(workdir, store) as server:
        yield server


def worker_pids(endpoints: Endpoints, models: list[tuple[str, str]]) -> dict:
    """{(name, version): [(pid, status), ...]} from the management API."""
    management = Management(endpoints)
    return {
        (name, version): [
            (w["pid"], w["status"]) for w in management.describe(name, version)["workers"]
        ]
        for name, version in models
    }


@dataclass
class WebApp:
    url: str
    process: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def webapp(endpoints: Endpoints, log: Path, **environment: str) -> Iterator[WebApp]:
    """`python -m webapp` (waitress) on a free loopback port, in front of `endpoints`;
    `environment` sets e.g. EMNIST_CONNECT_TIMEOUT."""
    port = free_ports(1)[0]
    command = [sys.executable, "-m", "webapp", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--inference-url", endpoints.inference, "--management-url", endpoints.management]
    env = {**os.environ, **environment}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    app = WebApp(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 60
        while True:  # up once /healthz answers at all (200, or 503 when TorchServe is down)
            assert app.alive(), f"the web app exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the web app did not start within 60 s"
            with contextlib.suppress(requests.ConnectionError):
                requests.get(f"{app.url}/healthz", timeout=10)
                break
            time.sleep(0.2)
        yield app
    finally:
        stop_process(process, timeout=15)
