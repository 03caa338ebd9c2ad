"""`make promote MODEL=... VERSION=...` and `make rollback MODEL=...` on the running TorchServe.

    python -m release.promote promote --model emnist-cnn --version 1.3
    python -m release.promote promote --model emnist-cnn --version 1.3 --force --reason "..."
    python -m release.promote rollback --model emnist-cnn

`promote` registers the candidate beside the default if it is not served yet, runs the gate
(release/gate.py) and makes the candidate the default only if it passes, or with `--force` and a
reason, which the ledger keeps. `rollback` returns to the version the last promotion replaced.
Both switch with TorchServe's set-default, which swaps the version a request is routed to
between two requests: under load no request fails (tests/e2e/test_learning_loop.py). Both also
rewrite config.properties' `models=` so that a restarted TorchServe keeps the default, and append
to the ledger.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import requests

from mar import archive as mar_archive
from release import gate, ledger
from serving import processes, torchserve
from serving.management import Management, ManagementError
from training.protocol import PROJECT_ROOT

STORE = PROJECT_ROOT / "model_store"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m release.promote", description=__doc__)
    p.add_argument("--logs", type=Path, default=PROJECT_ROOT / "logs", help="TorchServe's folder")
    p.add_argument("--store", type=Path, default=STORE)
    p.add_argument("--config", type=Path, default=ledger.CONFIG)
    commands = p.add_subparsers(dest="command", required=True)
    promote = commands.add_parser("promote", help="gate, then make VERSION the default")
    promote.add_argument("--model", required=True)
    promote.add_argument("--version", required=True)
    promote.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    promote.add_argument("--reason", default="", help="why (required with --force)")
    promote.add_argument("--val-limit", type=int, default=None, help="validation images (trials)")
    promote.add_argument("--drawings-per-character", type=int, default=20)
    rollback = commands.add_parser("rollback", help="back to the previous default")
    rollback.add_argument("--model", required=True)
    args = p.parse_args(argv)
    if getattr(args, "force", False) and not args.reason.strip():
        p.error("--force needs --reason: the ledger records why the gate was overridden")
    return args


def running(logs: Path) -> Management:
    server = processes.find_torchserve(logs)
    if server is None or not server.alive():
        raise SystemExit("error: TorchServe is not running: make serve (or make demo)")
    return Management(server.endpoints, timeout=120)


def ensure_registered(
    management: Management, store: Path, model: str, version: str
) -> tuple[Path, bool]:
    """The version's archive, registered beside the others; and whether it was registered now."""
    archive = store / f"{model}-{version}.mar"
    if not archive.exists():
        raise SystemExit(f"error: no {archive}: make learn MODEL={model} builds candidates")
    served = {v["modelVersion"] for v in management.versions(model)}
    if version not in served:
        management.register(archive.name, torchserve.archive_batching(archive))
        management.wait_ready([(model, version)], timeout=180)
    return archive, version not in served


def switch(management: Management, model: str, version: str, config: Path) -> None:
    management.set_default(model, version)
    defaults = ledger.current_defaults(config)
    defaults[model] = version
    ledger.write_defaults(defaults, config)


def promote(args: argparse.Namespace) -> dict:
    management = running(args.logs)
    current = management.default_version(args.model)
    if current == args.version:
        raise SystemExit(f"error: {args.model} {args.version} is already the default")
    candidate, registered = ensure_registered(management, args.store, args.model, args.version)
    default = args.store / f"{args.model}-{current}.mar"
    learned = [e for e in ledger.entries(args.model) if e["event"] == "learn"]
    export = next((e["export"] for e in reversed(learned) if e["candidate"] == args.version), None)
    if export is None:
        raise SystemExit(f"error: the ledger has no `learn` of {args.model} {args.version}")
    protocol = (mar_archive.checkpoint(candidate).get("train_config") or {}).get("protocol")
    sets = gate.samples(
        mar_archive.labels(candidate),
        protocol or "emnist47",
        Path(export),
        val_limit=args.val_limit,
        drawings_per_character=args.drawings_per_character,
    )
    endpoints = management.endpoints
    versions = {"default": default, "candidate": candidate}
    try:
        verdict = gate.judge(endpoints, args.model, versions, sets)
    except (requests.RequestException, mar_archive.ArchiveError) as err:
        ledger.append(
            "gate",
            args.model,
            default=current,
            candidate=args.version,
            passed=False,
            reasons=[f"the gate could not be evaluated: {err}"],
            figures={},
            rule=gate.RULE,
        )
        raise SystemExit(f"error: the gate could not be evaluated: {err}") from err
    ledger.append("gate", args.model, default=current, candidate=args.version, **verdict)
    for line in report(verdict):
        print(line)
    if not verdict["passed"] and not args.force:
        if registered:  # its worker would hold a core for nothing
            management.unregister(args.model, args.version)
        raise SystemExit(f"refused: {args.model} {current} stays the default")
    switch(management, args.model, args.version, args.config)
    override = args.reason if not verdict["passed"] else None
    ledger.append("promote", args.model, **{"from": current, "to": args.version}, override=override)
    print(f"promoted: {args.model} {args.version} is the default (was {current})")
    return verdict


def rollback(args: argparse.Namespace) -> str:
    management = running(args.logs)
    current = management.default_version(args.model)
    previous = ledger.previous_default(args.model)
    if previous is None:
        raise SystemExit(f"error: the ledger records no promotion of {args.model} to undo")
    ensure_registered(management, args.store, args.model, previous)  # (it normally still is)
    switch(management, args.model, previous, args.config)
    ledger.append("rollback", args.model, **{"from": current, "to": previous})
    print(f"rolled back: {args.model} {previous} is the default (was {current})")
    return previous


def report(verdict: dict) -> list[str]:
    lines = [f"gate: {verdict['rule']}"]
    for role, figures in verdict["figures"].items():
        parts = [
            f"{name} {f['top1']:.2%} of {f['n']}"
            for name, f in figures.items()
            if isinstance(f, dict)
        ]
        lines.append(f"  {role} {figures['version']}: " + ", ".join(parts))
    lines.append("  passed" if verdict["passed"] else "  refused: " + "; ".join(verdict["reasons"]))
    return lines


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    try:
        return promote(args) if args.command == "promote" else rollback(args)
    except ManagementError as err:
        raise SystemExit(f"error: {err}") from err


if __name__ == "__main__":
    main()
