"""`make demo`: TorchServe with the archives in model_store/ plus the web app, until Ctrl-C.

    python -m webapp.demo [--web-port 5000] [--inference-port 8080] [--management-port 8081] ...

Starts TorchServe through `handlers.ctl start` (returns once every model is READY), then the web
app (`python -m webapp`, waitress) in its own process group, waits until /healthz says both are
up and prints the URL. Ctrl-C or SIGTERM stops the web app, then TorchServe and its workers, by
PID, leaving nothing listening. A TorchServe already started by `make serve` in the same logs
folder is reused and left running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from handlers import ctl
from handlers import server as ts

ROOT = Path(__file__).resolve().parent.parent


class Stop(Exception):
    """SIGINT or SIGTERM arrived: shut everything down."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m webapp.demo",
        description="start TorchServe and the web app on 127.0.0.1 until Ctrl-C",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--logs", type=Path, default=ROOT / "logs", help="TorchServe's work folder")
    parser.add_argument("--config", type=Path, default=ROOT / "config.properties")
    parser.add_argument("--model-store", type=Path, help="default: model_store of the config")
    parser.add_argument("--web-port", type=int, default=5000)
    defaults = ts.Ports()
    for field in ts.Ports.__dataclass_fields__:
        parser.add_argument(
            f"--{field.replace('_', '-')}-port", type=int, default=getattr(defaults, field)
        )
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for READY")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop(signum, _frame):
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if ts.port_in_use(args.web_port):
        print(f"error: port {args.web_port} is in use on 127.0.0.1 (try WEB_PORT=5001)")
        return 1
    server, web = None, None
    try:
        server, owned = start_torchserve(args)
        web = start_webapp(args, server)
        url = f"http://127.0.0.1:{args.web_port}"
        wait_healthy(url, web, timeout=60)
        print(f"\n  EMNIST demo ready: {url}\n  (Ctrl-C stops the web app and TorchServe)\n")
        sys.stdout.flush()
        while web.poll() is None:
            time.sleep(0.5)
        print(f"error: the web app exited with status {web.returncode}")
        return 1
    except Stop as why:
        print(f"\n{why}: stopping")
        return 0
    except SystemExit as err:  # ctl's errors: already a message for the user
        print(err.code if isinstance(err.code, str) else f"error: exit {err.code}")
        return 1
    finally:
        # Ignore further Ctrl-C while cleaning up: a half-stopped demo leaves ports taken.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if web is not None:
            stop_process(web)
            print("stopped the web app")
        if server is not None and owned:
            ts.stop(server)
            print("stopped TorchServe")


def start_torchserve(args: argparse.Namespace) -> tuple[ts.Server, bool]:
    running = ts.Server.load(args.logs)
    if running is not None and running.alive():
        print(f"using the TorchServe already running (pid {running.pid}; make stop stops it)")
        return running, False
    argv = ["--logs", str(args.logs), "start", "--config", str(args.config)]
    argv += ["--timeout", str(args.timeout)]
    if args.model_store:
        argv += ["--model-store", str(args.model_store)]
    for field in ts.Ports.__dataclass_fields__:
        argv.append(f"--{field.replace('_', '-')}-port={getattr(args, f'{field}_port')}")
    try:
        ctl.main(argv)
    except Stop:
        # Interrupted while the models loaded: stop whatever ctl had started.
        server = ts.Server.load(args.logs)
        if server is not None:
            ts.stop(server)
        raise
    return ts.Server.load(args.logs), True


def start_webapp(args: argparse.Namespace, server: ts.Server) -> subprocess.Popen:
    endpoints = server.endpoints
    command = [sys.executable, "-m", "webapp", "--host", "127.0.0.1", "--port", str(args.web_port)]
    command += ["--inference-url", endpoints.inference, "--management-url", endpoints.management]
    if endpoints.key_file is not None:
        command += ["--token-file", str(endpoints.key_file)]
    # Its own session: the terminal's Ctrl-C reaches only this launcher, which stops it in order.
    return subprocess.Popen(command, cwd=ROOT, env=os.environ.copy(), start_new_session=True)


def wait_healthy(url: str, web: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if web.poll() is not None:
            raise SystemExit(f"error: the web app exited with status {web.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"error: {url}/healthz did not answer 200 within {timeout:.0f} s")


def stop_process(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


if __name__ == "__main__":
    sys.exit(main())
