"""Assemble the storage layout KServe's TorchServe runtime mounts at /mnt/models.

    python -m deploy.kserve.assemble [OUT_DIR] [--pin emnist-cnn=2.0]   (make kserve-layout)

writes, atomically (a complete new layout or the old one untouched):

    OUT_DIR/config/config.properties   deploy/kserve/config.properties + `model_snapshot`
    OUT_DIR/model-store/<name>-<version>.mar

One revision of an InferenceService serves one pinned version per model: the `defaultVersion`
of the `models=` line of ../../config.properties (what `make serve` makes default), else the
highest version in model_store/, unless `--pin NAME=VERSION` says otherwise (a canary layout).
Only those archives are copied: the KServe paths carry no version, so any other version would
hold a worker and memory without being reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from serving.torchserve import archive_manifest, intended_defaults, read_properties, version_key

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).resolve().parent / "config.properties"
SNAPSHOT_KEY = "model_snapshot"
# Per model version in the pod. batchSize must stay 1: TorchServe 0.12's kserve/kservev2
# envelopes parse only the first request of a batch and answer it alone, so the other requests
# of a batch would fail. A pod scales out by replicas (KServe's autoscaler), not by batching.
WORKER_SETTINGS = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 1,
    "maxBatchDelay": 5,
    "responseTimeout": 30,
}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    props = read_properties(args.config)
    pins = dict(parse_pin(p) for p in args.pin)
    chosen = choose_archives(find_archives(args.model_store), intended_defaults(props), pins)
    write_layout(args.out, args.template, args.model_store, chosen)
    print(f"KServe layout in {args.out}/ (upload it and point storageUri at it):")
    width = max(map(len, chosen), default=0)
    for name, (version, archive) in sorted(chosen.items()):
        print(f"  {name:<{width}}  {version:<8} model-store/{archive}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.kserve.assemble",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "out", nargs="?", type=Path, default=ROOT / "build" / "kserve", help="the layout folder"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=ROOT / "config.properties",
        help="where the default versions come from (its models= line)",
    )
    parser.add_argument(
        "--model-store", type=Path, default=ROOT / "model_store", help="the archives to pick from"
    )
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE, help="the in-pod TorchServe configuration"
    )
    parser.add_argument(
        "--pin",
        action="append",
        default=[],
        metavar="NAME=VERSION",
        help="serve this version of NAME (repeatable), e.g. a canary release",
    )
    return parser.parse_args(argv)


def parse_pin(text: str) -> tuple[str, str]:
    name, sep, version = text.partition("=")
    if not sep or not name.strip() or not version.strip():
        raise SystemExit(f"error: --pin takes NAME=VERSION, e.g. emnist-cnn=2.0; got {text!r}")
    return name.strip(), version.strip()


def find_archives(store: Path) -> dict[str, dict[str, str]]:
    """{model name: {version: archive file name}} from the manifests of store/*.mar."""
    found: dict[str, dict[str, str]] = {}
    for path in sorted(store.glob("*.mar")):
        manifest = archive_manifest(path)
        found.setdefault(manifest["modelName"], {})[manifest["modelVersion"]] = path.name
    if not found:
        raise SystemExit(
            f"error: no model archives in {store}/: build one with\n"
            "  make archive CHECKPOINT=runs/<run>/best.pt VERSION=1.0"
        )
    return found


def choose_archives(
    found: dict[str, dict[str, str]], defaults: dict[str, str], pins: dict[str, str]
) -> dict[str, tuple[str, str]]:
    """{model name: (version, archive)}: the pin, else the config's default, else the highest."""
    unknown = sorted(set(pins) - set(found))
    if unknown:
        raise SystemExit(f"error: --pin names no archived model: {', '.join(unknown)}")
    chosen = {}
    for name, versions in found.items():
        version = pins.get(name)
        if version is not None and version not in versions:
            have = ", ".join(sorted(versions, key=version_key))
            raise SystemExit(f"error: no archive of {name} {version} (have: {have})")
        if version is None:
            version = defaults.get(name)
        if version not in versions:
            version = max(versions, key=version_key)
        chosen[name] = (version, versions[version])
    return chosen


def snapshot(chosen: dict[str, tuple[str, str]]) -> dict:
    """TorchServe's model_snapshot: what it loads at start-up, and each model's default."""
    models = {
        name: {version: {"defaultVersion": True, "marName": archive, **WORKER_SETTINGS}}
        for name, (version, archive) in sorted(chosen.items())
    }
    return {"name": "startup.cfg", "modelCount": len(models), "models": models}


def render_config(template: Path, chosen: dict[str, tuple[str, str]]) -> str:
    line = f"{SNAPSHOT_KEY}={json.dumps(snapshot(chosen), separators=(',', ':'))}"
    lines = template.read_text().splitlines()
    keys = [entry.split("=", 1)[0].strip() for entry in lines]
    if keys.count(SNAPSHOT_KEY) != 1:
        raise SystemExit(f"error: {template} needs exactly one `{SNAPSHOT_KEY}=` line")
    lines[keys.index(SNAPSHOT_KEY)] = line
    return "\n".join(lines) + "\n"


def write_layout(
    out: Path, template: Path, store: Path, chosen: dict[str, tuple[str, str]]
) -> None:
    """Build the layout beside `out`, then swap it in: readers never see half a layout."""
    if out.exists() and any(out.iterdir()) and not (out / "config" / "config.properties").is_file():
        raise SystemExit(f"error: {out} exists and is not a KServe layout: choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (staging / "config").mkdir()
        (staging / "model-store").mkdir()
        (staging / "config" / "config.properties").write_text(render_config(template, chosen))
        for _version, archive in chosen.values():
            shutil.copy2(store / archive, staging / "model-store" / archive)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the layout from other users
        if out.exists():
            retired = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, retired)
            os.rename(staging, out)
            shutil.rmtree(retired)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


if __name__ == "__main__":
    main()
