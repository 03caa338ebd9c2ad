"""The release ledger: an append-only JSON-lines record of learns, gates, promotions, rollbacks.

    python -m release.ledger show [--model emnist-cnn]        # what happened, newest last
    python -m release.ledger defaults                         # each model's default per the ledger
    python -m release.ledger restore-defaults                 # write them into config.properties

One line per event, appended with a single `write` on a file opened in append mode and fsynced
before the command reports success: lines are never rewritten or removed. Each holds the time,
the event, the model, the versions, the figures and (for `learn`) the feedback snapshot: the
database hash, the counts and the writers' random ids. It lives beside the corrections it was
made from (EMNIST_LEDGER, default data/releases/ledger.jsonl), never in git.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from serving import torchserve
from training.protocol import PROJECT_ROOT

DEFAULT_PATH = PROJECT_ROOT / "data" / "releases" / "ledger.jsonl"
CONFIG = PROJECT_ROOT / "config.properties"
EVENTS = ("learn", "gate", "promote", "rollback")


def path() -> Path:
    return Path(os.environ.get("EMNIST_LEDGER") or DEFAULT_PATH)


def append(event: str, model: str, **fields) -> dict:
    """Add one event (durably) and return it."""
    if event not in EVENTS:
        raise ValueError(f"unknown ledger event {event!r}")
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event}
    entry |= {"model": model, **fields}
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=False) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of one line: appends never interleave mid-line
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def entries(model: str | None = None) -> list[dict]:
    target = path()
    if not target.exists():
        return []
    lines = target.read_text().splitlines()
    found = [json.loads(line) for line in lines if line.strip()]
    return [e for e in found if model is None or e["model"] == model]


def current_defaults(config: Path = CONFIG) -> dict[str, str]:
    """{model: default version}: config.properties' `models=`, then every promotion and
    rollback of the ledger in order."""
    defaults = torchserve.intended_defaults(torchserve.read_properties(config))
    for entry in entries():
        if entry["event"] in ("promote", "rollback"):
            defaults[entry["model"]] = entry["to"]
    return defaults


def previous_default(model: str) -> str | None:
    """The version a rollback returns to: what the latest promotion replaced, undoing
    promotions that were already rolled back."""
    stack: list[str] = []
    for entry in entries(model):
        if entry["event"] == "promote":
            stack.append(entry["from"])
        elif entry["event"] == "rollback" and stack:
            stack.pop()
    return stack[-1] if stack else None


def write_defaults(defaults: dict[str, str], config: Path = CONFIG) -> None:
    """Rewrite the `models=` line of config.properties (atomically) so that a restarted
    TorchServe comes up with these defaults."""
    text = config.read_text()
    line = "models=" + json.dumps(
        {name: {version: {"defaultVersion": True}} for name, version in sorted(defaults.items())}
    )
    lines = [line if row.startswith("models=") else row for row in text.splitlines()]
    if line not in lines:
        lines.append(line)
    tmp = config.with_name(f".{config.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m release.ledger", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("show", help="every event, oldest first")
    show.add_argument("--model")
    commands.add_parser("defaults", help="each model's default version per the ledger")
    restore = commands.add_parser("restore-defaults", help="write them into config.properties")
    restore.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args(argv)
    if args.command == "show":
        found = entries(args.model)
        if not found:
            print(f"the ledger is empty ({path()})")
        for entry in found:
            print(describe(entry))
    elif args.command == "defaults":
        json.dump(current_defaults(), sys.stdout, indent=2)
        print()
    else:
        defaults = current_defaults(args.config)
        write_defaults(defaults, args.config)
        print(f"{args.config}: models= {defaults}")


def describe(entry: dict) -> str:
    head = f"{entry['time']}  {entry['event']:<8} {entry['model']}"
    if entry["event"] == "learn":
        snapshot = entry["feedback"]
        return (
            f"{head} {entry['base']} -> candidate {entry['candidate']}: "
            f"{snapshot['train_images']} corrections from {len(snapshot['train_writers'])} writers "
            f"(database {snapshot['database_sha256'][:12]})"
        )
    if entry["event"] == "gate":
        verdict = "passed" if entry["passed"] else "refused: " + "; ".join(entry["reasons"])
        return f"{head} {entry['candidate']} against {entry['default']}: {verdict}"
    forced = f" (forced: {entry['override']})" if entry.get("override") else ""
    return f"{head} {entry['from']} -> {entry['to']}{forced}"


if __name__ == "__main__":
    main()
