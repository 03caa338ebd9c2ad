"""Start and stop what the benchmark measures, on free loopback ports, stopped by PID.

TorchServe starts through `serving.processes.serve` (the code `make serve` runs) in a private
work folder, with the shipped archives of model_store/ and the default versions of
config.properties `models=` (read at run time: the lead may ship new versions). The web app is
`python -m webapp` (waitress) in its own process, as `make demo` runs it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from serving import processes, torchserve
from serving.management import Management
from serving.processes import free_ports

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config.properties"


@dataclass
class Served:
    """One served model: name, default version and its archive file."""

    name: str
    version: str
    archive: str


def default_models() -> list[Served]:
    """The models `make serve` loads, each at the default version it would set."""
    props = torchserve.read_properties(CONFIG)
    store = ROOT / props.get("model_store", "model_store")
    archives = torchserve.archives_to_load(props, store)
    intended = {}
    for name, versions in json.loads(props.get("models") or "{}").items():
        for version, settings in versions.items():
            if settings.get("defaultVersion"):
                intended[name] = version
    by_name: dict[str, dict[str, str]] = {}
    for archive, (name, version) in archives.items():
        by_name.setdefault(name, {})[version] = archive
    served = {}
    for name, versions in by_name.items():
        version = intended.get(name)
        if version not in versions:
            version = max(versions, key=torchserve.version_key)
        served[name] = Served(name, version, versions[version])
    return [served[n] for n in sorted(served)]


def free_ports_for_torchserve() -> torchserve.Ports:
    names = torchserve.Ports.__dataclass_fields__
    return torchserve.Ports(**dict(zip(names, free_ports(5), strict=True)))


@contextlib.contextmanager
def torchserve_stack(logs: Path, model_store: Path | None = None):
    """TorchServe as `make serve` starts it, READY with defaults set; stopped on exit."""
    ports = free_ports_for_torchserve()
    with processes.torchserve_running(CONFIG, logs, model_store=model_store, ports=ports) as server:
        yield server


FP32_SUFFIX = "-fp32"


def store_with_fp32(folder: Path, model: Served) -> tuple[Path, str]:
    """model_store/'s archives (linked) plus `model`'s again as version `<version>-fp32`,
    answering in float32 (its model-config.yaml's `handler.precision`); returns the store and
    that version. The same weights and code: only the arithmetic differs."""
    store = folder / "store"
    store.mkdir(parents=True)
    for path in sorted((ROOT / "model_store").glob("*.mar")):
        (store / path.name).symlink_to(path)
    version = model.version + FP32_SUFFIX
    source = ROOT / "model_store" / model.archive
    with (
        zipfile.ZipFile(source) as old,
        zipfile.ZipFile(store / f"{model.name}-{version}.mar", "w") as new,
    ):
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "MAR-INF/MANIFEST.json":
                manifest = json.loads(data)
                manifest["model"]["modelVersion"] = version
                data = json.dumps(manifest, indent=2).encode()
            elif item.filename == "model-config.yaml":
                data = _with_precision(data.decode(), "fp32").encode()
            new.writestr(item, data)
    return store, version


def _with_precision(config: str, precision: str) -> str:
    """model-config.yaml text with `handler.precision` set (the keys archive.py writes)."""
    lines = [line for line in config.splitlines() if not line.strip().startswith("precision:")]
    if "handler:" not in lines:
        lines.append("handler:")
    at = lines.index("handler:") + 1
    return "\n".join([*lines[:at], f"  precision: {precision}", *lines[at:]]) + "\n"


def register_variant(
    server: processes.Server,
    model: Served,
    batch_size: int,
    delay_ms: int,
    workers: int | None = None,
) -> str:
    """The same archive registered again as `<name>-b<size>d<delay>` (with `workers`:
    `<name>-w<workers>b<size>d<delay>`, that many workers) with other batching, READY.

    TorchServe's register API takes batch_size and max_batch_delay over the archive's
    model-config.yaml, so this needs no new archive (checked: describe must agree). The
    workers it pins there win over initial_workers, so they are scaled afterwards."""
    management = Management(server.endpoints, timeout=180)
    name = f"{model.name}-{f'w{workers}' if workers else ''}b{batch_size}d{delay_ms}"
    management._call(
        "POST",
        "/models",
        url=model.archive,
        model_name=name,
        batch_size=batch_size,
        max_batch_delay=delay_ms,
        initial_workers=workers or 1,
        synchronous="true",
    )
    if workers:
        path = f"/models/{name}/{model.version}"
        management._call("PUT", path, min_worker=workers, max_worker=workers, synchronous="true")
    info = management.describe(name, model.version)
    if (info["batchSize"], info["maxBatchDelay"]) != (batch_size, delay_ms):
        raise RuntimeError(f"{name} registered with {info['batchSize']}/{info['maxBatchDelay']}")
    ready = sum(w["status"] == "READY" for w in info["workers"])
    if workers and ready != workers:
        raise RuntimeError(f"{name} has {ready} READY workers, not {workers}")
    server.remember_workers()
    return name


def torchserve_processes(server: processes.Server) -> dict[str, list[int]]:
    """The frontend's PID and its workers' (all models: only the measured one is busy)."""
    try:
        workers = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        workers = []
    return {"ts_frontend": [server.pid], "ts_workers": workers}


def describe(server: processes.Server, name: str, version: str) -> dict:
    info = Management(server.endpoints).describe(name, version)
    return {"batch_size": info["batchSize"], "max_batch_delay_ms": info["maxBatchDelay"]}


@contextlib.contextmanager
def webapp(server: processes.Server, logs: Path, threads: int | None = None):
    """`python -m webapp` (waitress) in front of `server`; yields its base URL and PID."""
    extra = ["--threads", str(threads)] if threads else []
    with processes.webapp(server.endpoints, logs / "webapp.log", *extra) as (url, child):
        yield url, child.pid


@contextlib.contextmanager
def peer(checkpoint: Path, logs: Path):
    """The original project's design (benchmarks/peer_baseline.py); yields its URL and PID."""
    port = free_ports(1)[0]
    command = [sys.executable, "-m", "benchmarks.peer_baseline", str(checkpoint)]
    command += ["--port", str(port), "--workdir", str(logs / "peer")]
    child = processes.spawn(command, logs / "peer.log")
    try:
        url = f"http://{processes.LOOPBACK}:{port}"
        processes.wait_http(f"{url}/", child)
        yield url, child.pid
    finally:
        child.stop()


def environment_note() -> dict:
    return {"cpus": len(os.sched_getaffinity(0)), "load_avg_1m": os.getloadavg()[0]}


def backend_metrics(server: processes.Server) -> dict[str, dict]:
    """TorchServe's own counters per model: mean queue and inference time per request (ms).

    `ts_queue_latency_microseconds` is the time a request waited in the frontend's queue;
    `ts_inference_latency_microseconds` the time from dispatch to the worker until its answer
    came back (worker protocol + handler), both summed over every request so far.
    """
    parts = urlsplit(server.endpoints.metrics)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    sums: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("#") or "model_name=" not in line:
            continue
        metric, rest = line.split("{", 1)
        labels, value = rest.rsplit("}", 1)
        model = labels.split('model_name="', 1)[1].split('"', 1)[0]
        sums.setdefault(model, {})[metric] = sums.get(model, {}).get(metric, 0) + float(value)
    result = {}
    for model, values in sums.items():
        count = values.get("ts_inference_requests_total", 0)
        if count:
            result[model] = {
                "requests": count,
                "queue_ms_mean": values.get("ts_queue_latency_microseconds", 0) / count / 1000,
                "inference_ms_mean": values.get("ts_inference_latency_microseconds", 0)
                / count
                / 1000,
            }
    return result
