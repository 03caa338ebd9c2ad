"""`make demo`: TorchServe with the archives in model_store/ plus the web app, until Ctrl-C.

    python -m serving.demo [--web-port 5000] [--inference-port 8080] [--management-port 8081] ...

Starts TorchServe as `make serve` does (returns once every model is READY) and, while its models
load, the web app (`python -m webapp`, waitress) in its own process group; waits until /healthz
says both are up and prints the URL. Ctrl-C or SIGTERM stops the web app, then the TorchServe
the demo started and its workers, by PID and start time, leaving nothing listening
(serving/processes.py). A TorchServe already started by `make serve` in the same logs folder is
reused and left running; so is one that `make serve` started after the demo's own died.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from serving import processes, torchserve

ROOT = Path(__file__).resolve().parent.parent


class Stop(BaseException):
    """SIGINT or SIGTERM arrived: shut everything down."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.demo",
        description="start TorchServe and the web app on 127.0.0.1 until Ctrl-C",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--logs", type=Path, default=ROOT / "logs", help="TorchServe's work folder")
    parser.add_argument("--config", type=Path, default=ROOT / "config.properties")
    parser.add_argument("--model-store", type=Path, help="default: model_store of the config")
    parser.add_argument("--web-port", type=int, default=5000)
    defaults = torchserve.Ports()
    for field in torchserve.Ports.__dataclass_fields__:
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
    if processes.port_in_use(args.web_port):
        print(f"error: port {args.web_port} is in use on 127.0.0.1 (try WEB_PORT=5001)")
        return 1
    server, web, owned = None, None, False
    url = f"http://127.0.0.1:{args.web_port}"

    def start_web_app(started: processes.Server) -> None:
        # Started while TorchServe loads its models (a second saved on 2 cores): until they are
        # READY it answers 503. Its output goes to this terminal, as the requests come in.
        nonlocal web
        web = processes.spawn(processes.webapp_command(started.endpoints, args.web_port), None)

    try:
        server, owned = start_torchserve(args, start_web_app)
        processes.wait_http(f"{url}/healthz", web, timeout=60, ok=(200,))
        print(f"\n  EMNIST demo ready: {url}\n  (Ctrl-C stops the web app and TorchServe)\n")
        sys.stdout.flush()
        while web.alive():
            time.sleep(0.5)
        print(f"error: the web app exited with status {web.popen.returncode}")
        return 1
    except Stop as why:
        print(f"\n{why}: stopping")
        return 0
    except RuntimeError as err:  # the web app did not come up
        print(f"error: {err}")
        return 1
    except SystemExit as err:  # serve's errors: already a message for the user
        print(err.code if isinstance(err.code, str) else f"error: exit {err.code}")
        return 1
    finally:
        # Ignore further Ctrl-C while cleaning up: a half-stopped demo leaves ports taken.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if web is not None:
            web.stop()
            print("stopped the web app")
        if server is not None and owned:
            stopped = processes.stop_torchserve(server)
            print("stopped TorchServe" if stopped else "the demo's TorchServe had already exited")


def start_torchserve(args: argparse.Namespace, on_started) -> tuple[processes.Server, bool]:
    """(server, whether the demo started it): a running `make serve` is reused, not owned.
    `on_started(server)` runs once TorchServe is launched, before its models are READY."""
    running = processes.find_torchserve(args.logs)
    if running is not None and running.alive():
        print(f"using the TorchServe already running (pid {running.pid}; make stop stops it)")
        on_started(running)
        return running, False
    ports = torchserve.Ports(
        **{f: getattr(args, f"{f}_port") for f in torchserve.Ports.__dataclass_fields__}
    )
    server, _ = processes.serve(
        args.config,
        args.logs,
        model_store=args.model_store,
        ports=ports,
        timeout=args.timeout,
        on_started=on_started,
    )
    return server, True


if __name__ == "__main__":
    sys.exit(main())
