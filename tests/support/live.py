"""A real TorchServe and a real web app (waitress, in its own process) on free loopback ports,
for the bad-input and fault tests. Both are stopped by PID on the way out, even after a failure,
and the teardown checks that nothing they started is left running."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from serving import processes
from serving.management import Endpoints, Management
from support.servers import torchserve_running

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def live_torchserve(workdir: Path, store: Path) -> Iterator[processes.Server]:
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
    env = {**os.environ, **environment}
    with processes.webapp(endpoints, log, env=env) as (url, child):
        yield WebApp(url, child.popen, log)
