"""Cold start: seconds from `make serve` / `make demo` to the first successful prediction.

The real make targets run (so `make`'s own install check counts) on free loopback ports with a
private logs folder; a poller sends the drawing every 50 ms from the moment make is launched
until an answer with predictions comes back. Then everything is stopped by PID: `make serve`'s
TorchServe through its state file, `make demo` by SIGTERM to the launcher, which stops the web
app and TorchServe itself.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.serving.loadgen import top_predictions
from benchmarks.serving.scenarios import post
from benchmarks.serving.stack import ROOT, default_models
from serving import processes
from serving.processes import LOOPBACK, free_ports

PORT_VARIABLES = (
    "INFERENCE_PORT",
    "MANAGEMENT_PORT",
    "METRICS_PORT",
    "GRPC_INFERENCE_PORT",
    "GRPC_MANAGEMENT_PORT",
)


def wait_for_prediction(url: str, png: bytes, process: subprocess.Popen, timeout: float) -> float:
    """Seconds until `url` answers a prediction for `png` (time counted by the caller)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = post(url, png, "image/png")
            if status == 200 and top_predictions(body):
                return time.monotonic()
        if process.poll() not in (None, 0):
            raise RuntimeError(f"{' '.join(process.args)} failed with status {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"no prediction from {url} within {timeout:.0f} s")


def launch(target: str, logs: Path, ports: list[int], web_port: int | None) -> subprocess.Popen:
    command = ["make", "--no-print-directory", target, f"LOGS={logs}"]
    command += [f"{name}={port}" for name, port in zip(PORT_VARIABLES, ports, strict=True)]
    if web_port is not None:
        command.append(f"WEB_PORT={web_port}")
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def measure(target: str, png: bytes, timeout: float = 120) -> float:
    """One cold start of `make serve` or `make demo`; everything it started is stopped."""
    model = default_models()[0].name
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-") as folder:
        logs = Path(folder)
        *ports, spare = free_ports(6)
        web_port = spare if target == "demo" else None
        if target == "demo":
            url = f"http://{LOOPBACK}:{web_port}/api/predict"
        else:
            url = f"http://{LOOPBACK}:{ports[0]}/predictions/{model}"
        started = time.monotonic()
        process = launch(target, logs, ports, web_port)
        try:
            return wait_for_prediction(url, png, process, timeout) - started
        finally:
            if target == "demo":
                stop_demo(process)
            else:
                process.wait(timeout)
                server = processes.find_torchserve(logs)
                if server is not None:
                    processes.stop_torchserve(server)


def stop_demo(make: subprocess.Popen) -> None:
    """SIGTERM to the `python -m serving.demo` under make: it stops the app and TorchServe."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(make.pid).children(recursive=True):
            if "serving.demo" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGTERM)
    try:
        make.wait(60)
    except subprocess.TimeoutExpired:
        make.kill()
        make.wait(5)
