"""TorchServe run with the KServe layout's exact config on loopback, for test_kserve.py and
test_kserve_webapp.py: the assembler command, the servers (started by serving.torchserve, stopped
by PID, checked gone) and the comparison of two answers."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from serving import processes, torchserve
from support.servers import free_ports, needs_java

ROOT = Path(__file__).resolve().parents[2]
# What the kserve-torchserve runtime sets TS_SERVICE_ENVELOPE to, per kind of server; "plain"
# is `make serve`'s own config, the /predictions reference.
ENVELOPES = {"plain": None, "v1": "kserve", "v2": "kservev2"}


def end_to_end(test):
    """Starts real TorchServes: marked `torchserve` and `slow`, skipped without Java 17."""
    return pytest.mark.torchserve(pytest.mark.slow(needs_java(test)))


def assemble(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m deploy.kserve.assemble ...`, the command the README gives."""
    command = [sys.executable, "-m", "deploy.kserve.assemble", *map(str, args)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def snapshot_of(layout: Path) -> dict:
    return json.loads(
        torchserve.read_properties(layout / "config" / "config.properties")["model_snapshot"]
    )


def pinned_versions(layout: Path) -> dict[str, str]:
    return {name: next(iter(v)) for name, v in snapshot_of(layout)["models"].items()}


@contextlib.contextmanager
def running(kinds, layout: Path, tmp_path_factory) -> Iterator[dict[str, processes.Server]]:
    """{kind: Server} for `kinds` of ENVELOPES over `layout`'s archives, all READY."""
    port_sets = iter(free_ports(5 * len(kinds)))
    started: dict[str, processes.Server] = {}
    try:
        for kind in kinds:
            envelope = ENVELOPES[kind]
            ports = torchserve.Ports(*(next(port_sets) for _ in range(5)))
            config = ROOT / "config.properties"
            if envelope:
                # In the pod inference and management share one address (8085): keep that.
                ports = dataclasses.replace(ports, management=ports.inference)
                config = layout / "config" / "config.properties"
            with pytest.MonkeyPatch.context() as env:
                if envelope:
                    env.setenv("TS_SERVICE_ENVELOPE", envelope)
                else:
                    env.delenv("TS_SERVICE_ENVELOPE", raising=False)
                workdir = tmp_path_factory.mktemp(f"ts-{kind}")
                started[kind] = processes.start_torchserve(
                    config, workdir, layout / "model-store", ports, False
                )
        for server in started.values():  # started together, waited for together: faster
            wait_until_ready(server, pinned_versions(layout))
        yield started
    finally:
        pids, ports = [], []
        for server in started.values():
            server.remember_workers()
            pids += [server.pid, *(pid for pid, _ in server.workers)]
            ports += server.ports.values()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # seconds each: in parallel
            list(pool.map(processes.stop_torchserve, started.values()))
        open_ports = sorted({p for p in ports if processes.port_in_use(p)})
        alive = [p for p in pids if psutil.pid_exists(p)]
        assert not open_ports and not alive, f"left open: {open_ports}, running: {alive}"


def wait_until_ready(server: processes.Server, names, timeout: float = 180) -> None:
    """The wrapper's readiness check (TorchserveModel.load): GET /models/<name> on the
    management address until its default version has a READY worker. (With inference and
    management on one port, TorchServe routes GET /models/<name>/<version> to the inference API,
    so Management.wait_ready, which asks per version, cannot be used here.)"""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        assert server.alive(), "TorchServe exited:\n" + processes.log_tail(server.workdir)
        for name in sorted(pending):
            url = f"{server.endpoints.management}/models/{name}?customized=false"
            with contextlib.suppress(requests.RequestException, ValueError, LookupError):
                workers = requests.get(url, timeout=5).json()[0]["workers"]
                if any(w["status"] == "READY" for w in workers):
                    pending.discard(name)
        assert time.monotonic() < deadline, f"not READY after {timeout:.0f} s: {sorted(pending)}"
        time.sleep(0.5 if pending else 0)


def post(server: processes.Server, path: str, **kwargs) -> requests.Response:
    return requests.post(f"{server.endpoints.inference}/{path}", timeout=60, **kwargs)


def v1_body(png: bytes, **extra) -> dict:
    return {"instances": [{"data": base64.b64encode(png).decode(), **extra}]}


def same_answer(answer: dict, plain: dict, topk: int | None = None) -> None:
    for key in ("model", "version", "empty"):
        assert answer[key] == plain[key], key
    expected = plain["predictions"][:topk]
    assert [p["label"] for p in answer["predictions"]] == [p["label"] for p in expected]
    assert [p["probability"] for p in answer["predictions"]] == pytest.approx(
        [p["probability"] for p in expected], abs=2e-6
    )
