"""The steps of a user's bug report, with a real demo and real TorchServes.

1. While `make demo` runs, its TorchServe dies; the page's banner suggests `make serve`.
2. The user runs `make serve` (same logs folder), then stops the demo with Ctrl-C.
3. `make stop` must still find and stop the second TorchServe: nothing may be left running.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.servers import build_test_store, free_ports, needs_java, serving_config

from serving import processes

NAMES = ("inference", "management", "metrics", "grpc-inference", "grpc-management")


def ctl(logs, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m serving.ctl --logs LOGS ...`: what `make serve` and `make stop` run."""
    command = [sys.executable, "-m", "serving.ctl", "--logs", str(logs), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def torchserve_pids_in(logs) -> list[int]:
    """Every TorchServe frontend or worker whose working folder is `logs`."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or ())
        if processes.FRONTEND_CLASS in command and process.info["cwd"] == str(logs.resolve()):
            found.append(process.pid)
            found += [c.pid for c in process.children(recursive=True)]
    return found


@pytest.mark.slow
@pytest.mark.torchserve
@needs_java
def test_make_stop_finds_the_server_started_after_the_demos_died(tmp_path):
    store = build_test_store(tmp_path)
    config, logs = serving_config(store), tmp_path / "logs"
    web, *ports = free_ports(6)
    port_args = [f"--{name}-port={port}" for name, port in zip(NAMES, ports, strict=True)]
    common = ["--config", str(config), "--model-store", str(store), *port_args]
    demo_command = [sys.executable, "-m", "serving.demo", "--logs", str(logs)]
    out = open(tmp_path / "demo.out", "wb")  # noqa: SIM115 (closed in the finally below)
    demo = subprocess.Popen(
        [*demo_command, f"--web-port={web}", *common], stdout=out, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 240
        while b"demo ready" not in (tmp_path / "demo.out").read_bytes():
            assert demo.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.5)

        # 1. The demo's TorchServe dies (all of it, as after an out-of-memory kill).
        first = processes.Server.load(logs)
        victims = [psutil.Process(first.pid), *psutil.Process(first.pid).children(recursive=True)]
        for victim in victims:
            victim.kill()
        psutil.wait_procs(victims, timeout=30)

        # 2. `make serve` in the same logs folder, then Ctrl-C to the demo.
        started = ctl(logs, "start", *common)
        assert started.returncode == 0, started.stdout + started.stderr
        second = processes.Server.load(logs)
        assert second.pid != first.pid and second.alive()
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0, (tmp_path / "demo.out").read_text()
        assert second.alive(), "stopping the demo stopped a server it had not started"
        kept = processes.Server.load(logs)
        assert kept is not None and kept.pid == second.pid, "the demo removed another's record"

        # 3. `make stop` finds it and stops it: nothing is left running or listening.
        stopped = ctl(logs, "stop")
        assert stopped.returncode == 0 and "stopped TorchServe" in stopped.stdout, stopped.stdout
        assert torchserve_pids_in(logs) == []
        assert not [p for p in [web, *ports] if processes.port_in_use(p)], "ports left open"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
        out.close()
        for pid in torchserve_pids_in(logs):  # the test failed: leave nothing behind
            psutil.Process(pid).kill()


@pytest.mark.slow
@pytest.mark.torchserve
@needs_java
def test_make_stop_finds_a_server_whose_record_was_lost(tmp_path):
    store = build_test_store(tmp_path)
    logs, ports = tmp_path / "logs", free_ports(5)
    port_args = [f"--{name}-port={port}" for name, port in zip(NAMES, ports, strict=True)]
    common = ["--config", str(serving_config(store)), "--model-store", str(store), *port_args]
    try:
        assert ctl(logs, "start", *common).returncode == 0
        (logs / processes.STATE_FILE).unlink()
        stopped = ctl(logs, "stop")
        assert "stopped TorchServe" in stopped.stdout, stopped.stdout + stopped.stderr
        assert torchserve_pids_in(logs) == []
    finally:
        for pid in torchserve_pids_in(logs):
            psutil.Process(pid).kill()
