"""The commands behind `make serve / stop / models / register / unregister / set-default`.

    python -m serving.ctl start [--token-auth] [--inference-port 8080 ...]
    python -m serving.ctl models
    python -m serving.ctl register emnist-cnn 2.0     # model_store/emnist-cnn-2.0.mar
    python -m serving.ctl set-default emnist-cnn 2.0
    python -m serving.ctl stop

`start` returns once every archive that `load_models` names has all its workers READY, with
each model's default version set (`serving.processes.serve`). The other commands find the
server through its record, `<logs>/torchserve.json` (`serving.processes.find_torchserve`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from serving import processes, torchserve
from serving.management import Management, ManagementError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.command(args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m serving.ctl", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--logs", type=Path, default=ROOT / "logs", help="TorchServe's work folder")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    start = commands.add_parser("start", help="start TorchServe and wait until READY")
    start.set_defaults(command=cmd_start)
    start.add_argument("--config", type=Path, default=ROOT / "config.properties")
    start.add_argument("--model-store", type=Path, help="default: model_store of the config")
    start.add_argument("--token-auth", action="store_true", help="require TorchServe's API keys")
    start.add_argument("--timeout", type=float, default=180, help="seconds to wait for READY")
    defaults = torchserve.Ports()
    for field in ("inference", "management", "metrics", "grpc_inference", "grpc_management"):
        start.add_argument(
            f"--{field.replace('_', '-')}-port", type=int, default=getattr(defaults, field)
        )
    commands.add_parser("stop", help="stop the server and its workers").set_defaults(
        command=cmd_stop
    )
    commands.add_parser("models", help="models, versions, defaults, workers").set_defaults(
        command=cmd_models
    )
    for name, command, what in (
        ("register", cmd_register, "register model_store/NAME-VERSION.mar (not as default)"),
        ("unregister", cmd_unregister, "unregister a version (not the default one)"),
        ("set-default", cmd_set_default, "make VERSION what /predictions/NAME serves"),
    ):
        sub = commands.add_parser(name, help=what)
        sub.set_defaults(command=command)
        sub.add_argument("name", help="model name, e.g. emnist-cnn")
        sub.add_argument("version", help="model version, e.g. 2.0")
        sub.add_argument("--timeout", type=float, default=120, help="seconds to wait for READY")
    return parser.parse_args(argv)


def cmd_start(args: argparse.Namespace) -> None:
    ports = torchserve.Ports(
        **{f: getattr(args, f"{f}_port") for f in torchserve.Ports.__dataclass_fields__}
    )
    try:
        server, defaults = processes.serve(
            args.config,
            args.logs,
            model_store=args.model_store,
            ports=ports,
            token_auth=args.token_auth,
            timeout=args.timeout,
        )
    except KeyboardInterrupt:
        raise SystemExit("interrupted: TorchServe stopped") from None
    print_models(Management(server.endpoints))
    name = sorted(defaults)[0]
    auth = ""
    if args.token_auth:
        key_file = server.endpoints.key_file
        read_key = f"import json; print(json.load(open('{key_file}'))['inference']['key'])"
        auth = f'-H "Authorization: Bearer $(python3 -c "{read_key}")" '
    print(f"\nready: curl {auth}-T some.png {server.endpoints.inference}/predictions/{name}")


def cmd_stop(args: argparse.Namespace) -> None:
    server = processes.find_torchserve(args.logs)
    if server is None:
        print(f"TorchServe is not running (no {args.logs / processes.STATE_FILE})")
        return
    pids = processes.stop_torchserve(server)
    ports = [p for p in server.ports.values() if processes.port_in_use(p)]
    print(f"stopped TorchServe (pids {pids or 'already gone'})")
    if ports:
        raise SystemExit(f"error: port(s) {ports} still in use")


def cmd_models(args: argparse.Namespace) -> None:
    print_models(Management(running(args).endpoints))


def cmd_register(args: argparse.Namespace) -> None:
    server = running(args)
    store = Path(
        torchserve.read_properties(Path(server.workdir) / "config.properties")["model_store"]
    )
    archive = f"{args.name}-{args.version}.mar"
    if not (store / archive).exists():
        raise SystemExit(
            f"error: no {store / archive}: build it with\n"
            f"  make archive CHECKPOINT=... MODEL_NAME={args.name} VERSION={args.version}"
        )
    manifest = torchserve.archive_manifest(store / archive)
    management = Management(server.endpoints)
    print(call(management.register, archive, torchserve.archive_batching(store / archive)))
    call(management.wait_ready, [(manifest["modelName"], manifest["modelVersion"])], args.timeout)
    server.remember_workers()
    base = f"{server.endpoints.inference}/predictions/{manifest['modelName']}"
    print(f"smoke test it: curl -T some.png {base}/{manifest['modelVersion']}")
    print(f"then: make set-default MODEL={args.name} VERSION={args.version}")


def cmd_unregister(args: argparse.Namespace) -> None:
    print(call(Management(running(args).endpoints).unregister, args.name, args.version))


def cmd_set_default(args: argparse.Namespace) -> None:
    print(call(Management(running(args).endpoints).set_default, args.name, args.version))


def running(args: argparse.Namespace) -> processes.Server:
    server = processes.find_torchserve(args.logs)
    if server is None or not server.alive():
        raise SystemExit("error: TorchServe is not running: make serve")
    return server


def call(function, *args):
    try:
        return function(*args)
    except ManagementError as err:
        raise SystemExit(f"error: {err}") from err


def print_models(management: Management) -> None:
    rows = [("MODEL", "VERSION", "DEFAULT", "WORKERS", "BATCH", "ARCHIVE")]
    for name in sorted(call(management.model_names)):
        default = call(management.default_version, name)
        versions = sorted(
            call(management.versions, name), key=lambda v: torchserve.version_key(v["modelVersion"])
        )
        for info in versions:
            states = Counter(w["status"] for w in info.get("workers", []))
            workers = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
            rows.append(
                (
                    name,
                    info["modelVersion"],
                    "*" if info["modelVersion"] == default else "",
                    workers,
                    f"{info['batchSize']}/{info['maxBatchDelay']}ms",
                    info["modelUrl"],
                )
            )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )


if __name__ == "__main__":
    main()
