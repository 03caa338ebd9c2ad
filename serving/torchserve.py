"""One TorchServe's configuration: ports, the rendered config.properties, what it loads.

`render_config` turns a template (config.properties) into the file a server runs with: ports
overridden, every listener on 127.0.0.1, the model store made absolute, and a `model_snapshot`
where an archive asks for a batch delay of 0 (`startup_snapshot`). `archives_to_load` and
`intended_defaults` read what `load_models` and `models=` ask for. Starting and stopping the
process is `serving.processes`; talking to it, `serving.management`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.version import InvalidVersion, Version

from mar import archive

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071


def read_properties(path: str | Path) -> dict[str, str]:
    """`key=value` lines of a Java properties file (comments skipped; one line per value)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def intended_defaults(props: dict[str, str]) -> dict[str, str]:
    """{model name: version} marked `"defaultVersion": true` in the `models=` line."""
    try:
        models = json.loads(props.get("models") or "{}")
    except ValueError as err:
        raise SystemExit(f"error: the models= line of the config is not JSON: {err}") from err
    return {
        name: version
        for name, versions in models.items()
        for version, settings in versions.items()
        if isinstance(settings, dict) and settings.get("defaultVersion")
    }


def archive_config(path: Path) -> dict:
    """An archive's model-config.yaml ({} when it has none)."""
    try:
        return yaml.safe_load(archive.read_member(path, archive.CONFIG)) or {}
    except archive.ArchiveError:
        return {}
    except yaml.YAMLError as err:
        raise SystemExit(f"error: {path}: {archive.CONFIG} is not YAML: {err}") from err


def archive_batching(path: Path) -> tuple[int, int]:
    """(batchSize, maxBatchDelay) an archive's model-config.yaml asks for (TorchServe's
    defaults, 1 and 100 ms, where it says nothing): `Management.register` passes them."""
    return _batching(archive_config(path))


def _batching(config: dict) -> tuple[int, int]:
    return int(config.get("batchSize", 1)), int(config.get("maxBatchDelay", 100))


def startup_snapshot(props: dict[str, str], model_store: Path) -> dict | None:
    """TorchServe's `model_snapshot` for the archives `load_models` names, each with the
    workers, batching and timeout its model-config.yaml asks for, when one of them asks for a
    batch delay of 0; else None (plain `load_models`).

    TorchServe 0.12 reads `maxBatchDelay: 0` from an archive, from `models=` and from the
    register API's defaults as "not set" and waits its 100 ms default for every batch
    (measured: a lone request took 106 ms); a snapshot's values are taken as given, and its
    models are loaded before the server answers (the register API would leave a moment in which
    a starting server answers 404 for them)."""
    archives = archives_to_load(props, model_store)
    configs = {file: archive_config(model_store / file) for file in archives}
    if not any(_batching(config)[1] == 0 for config in configs.values()):
        return None
    workers = int(props.get("default_workers_per_model", 1))
    timeout = int(props.get("default_response_timeout", 120))
    defaults = intended_defaults(props)
    models: dict[str, dict[str, dict]] = {}
    for file, (name, version) in archives.items():
        config = configs[file]
        batch_size, delay = _batching(config)
        models.setdefault(name, {})[version] = {
            "defaultVersion": defaults.get(name) == version,
            "marName": file,
            "minWorkers": int(config.get("minWorkers", workers)),
            "maxWorkers": int(config.get("maxWorkers", config.get("minWorkers", workers))),
            "batchSize": batch_size,
            "maxBatchDelay": delay,
            "responseTimeout": int(config.get("responseTimeout", timeout)),
        }
    count = sum(len(versions) for versions in models.values())
    return {"name": "startup.cfg", "modelCount": count, "models": models}


def render_config(template: Path, model_store: Path, ports: Ports, token_auth: bool) -> str:
    """The template with ports, addresses, model store and token mode replaced or added, and
    the `startup_snapshot` in place of `load_models` when the archives need one."""
    props = read_properties(template)
    snapshot = startup_snapshot(props, model_store)
    overrides = {
        "inference_address": f"http://{LOOPBACK}:{ports.inference}",
        "management_address": f"http://{LOOPBACK}:{ports.management}",
        "metrics_address": f"http://{LOOPBACK}:{ports.metrics}",
        "grpc_inference_address": LOOPBACK,
        "grpc_management_address": LOOPBACK,
        "grpc_inference_port": str(ports.grpc_inference),
        "grpc_management_port": str(ports.grpc_management),
        "model_store": str(model_store.resolve()),
        # Workflows (.war) come from the same folder; TorchServe's cwd is the work folder.
        "workflow_store": str(model_store.resolve()),
    }
    if token_auth:
        overrides["disable_token_authorization"] = "false"
    if snapshot is not None:
        overrides["load_models"] = ""  # the snapshot says what to load
        overrides["model_snapshot"] = json.dumps(snapshot, separators=(",", ":"))
    lines = []
    for line in template.read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith(("#", "!")) and key in overrides:
            line = f"{key}={overrides.pop(key)}"
        lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def archives_to_load(props: dict[str, str], model_store: Path) -> dict[str, tuple[str, str]]:
    """{archive file: (model name, version)} that `load_models` asks for at start-up."""
    wanted = props.get("load_models", "").strip()
    if not wanted or wanted.lower() == "standalone":
        return {}
    if wanted.lower() == "all":
        entries = [(None, p.name) for p in sorted(model_store.glob("*.mar"))]
    else:
        entries = [(e.split("=", 1) if "=" in e else (None, e)) for e in wanted.split(",")]
    result = {}
    for name, file in entries:
        file = file.strip()
        manifest = archive_manifest(model_store / file)
        result[file] = (
            name.strip() if name else manifest["modelName"],
            manifest["modelVersion"],
        )
    return result


def archive_manifest(path: Path) -> dict:
    try:
        return archive.manifest(path)
    except archive.ArchiveError as err:
        raise SystemExit(f"error: {path} is not a readable model archive: {err}") from err


def java_major_version() -> int | None:
    # The launcher runs $JAVA_HOME/bin/java when JAVA_HOME is set, else `java` from PATH.
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if java is None or not os.path.exists(java):
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    # `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_..." for Java 8).
    version = out.split('"')[1] if out.count('"') >= 2 else "0"
    parts = version.split(".")
    return int(parts[1] if parts[0] == "1" else parts[0].split("-")[0])


def ports_of(props: dict[str, str]) -> dict[str, int]:
    """The five ports of a rendered config.properties, as `Ports` fields."""
    defaults = Ports()

    def port(address_key: str, default: int) -> int:
        address = props.get(address_key, "")
        return int(address.rsplit(":", 1)[1]) if ":" in address.split("//")[-1] else default

    return {
        "inference": port("inference_address", defaults.inference),
        "management": port("management_address", defaults.management),
        "metrics": port("metrics_address", defaults.metrics),
        "grpc_inference": int(props.get("grpc_inference_port", defaults.grpc_inference)),
        "grpc_management": int(props.get("grpc_management_port", defaults.grpc_management)),
    }


def version_key(version: str):
    """Orders versions as numbers (1.10 after 1.9); non-PEP 440 versions rank below, by name."""
    try:
        return (1, Version(version), version)
    except InvalidVersion:
        return (0, Version("0"), version)
