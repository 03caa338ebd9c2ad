"""Helpers for the serving tests: small checkpoints, pictures, free ports, archive contents."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import psutil
import pytest
import torch
from packaging.version import Version
from PIL import Image, ImageDraw

from emnist.checkpoint import atomic_save, make_checkpoint
from emnist.models import build_model
from mar import archive as mar_archive
from serving import archive, processes, torchserve
from serving.archive import sample_png
from serving.processes import free_ports

ROOT = Path(__file__).resolve().parents[2]
# Labels that are not their indices' digits, so a label computed from an index shows up.
LABELS = ("A", "b", "7", "Z")
SMALL_ARGS = {"cnn": {"width": 8}, "cnn-seed": {}, "rcnn": {"width": 8, "steps": 1}}


def latest_released(name: str) -> Path:
    """The newest version of `name` in model_store/ (by version, so 1.10 comes after 1.9);
    skips the test in a checkout without released archives."""
    store = ROOT / "model_store"
    archives = list(store.glob(f"{name}-*.mar"))
    if not archives:
        pytest.skip(f"no {name} archive in {store}")
    return max(archives, key=lambda p: Version(p.stem.removeprefix(f"{name}-")))


def write_checkpoint(
    path: Path,
    *,
    arch: str = "cnn",
    class_names: tuple[str, ...] | list[str] = LABELS,
    seed: int = 0,
    **extra,
) -> Path:
    """An untrained but deterministic checkpoint of a small `arch`, in the released format."""
    torch.manual_seed(seed)
    model_args = {"num_classes": len(class_names), **SMALL_ARGS[arch]}
    model = build_model(arch, **model_args)
    ckpt = make_checkpoint(
        model=model,
        arch=arch,
        model_args=model_args,
        class_names=list(class_names),
        train_config={"seed": seed},
        data={},
        metrics={"val_acc": 0.0},
        history=[],
    )
    ckpt.update(extra)
    atomic_save(ckpt, path)
    return path


_JAVA = torchserve.java_major_version()
# Skips, with the reason, every test that starts TorchServe where it cannot run.
needs_java = pytest.mark.skipif(
    _JAVA is None or _JAVA < 17, reason="TorchServe 0.12 needs Java 17+"
)

# Two versions of one model name (different weights) and a second model: what versioning needs.
TEST_MODELS = (
    ("cnn", "emnist-cnn", "1.0", 0),
    ("cnn", "emnist-cnn", "2.0", 1),
    ("rcnn", "emnist-rcnn", "1.0", 0),
)


def serving_config(store: Path) -> Path:
    """config.properties for a server of `store`, its `models=` line naming the lowest version
    of each model in `store` as default (the test stores' 1.0), so that tests do not depend on
    which versions the release marks as default. Written beside `store`."""
    versions: dict[str, list[str]] = {}
    for mar in sorted(store.glob("*.mar")):
        name, _, version = mar.stem.rpartition("-")
        versions.setdefault(name, []).append(version)
    defaults = {
        name: {min(found, key=lambda v: [int(p) for p in v.split(".")]): {"defaultVersion": True}}
        for name, found in versions.items()
    }
    lines = [
        f"models={json.dumps(defaults)}" if line.startswith("models=") else line
        for line in (ROOT / "config.properties").read_text().splitlines()
    ]
    config = store.parent / f"{store.name}.config.properties"
    config.write_text("\n".join(lines) + "\n")
    return config


def build_test_store(tmp: Path, *archive_args: str) -> Path:
    """Archive TEST_MODELS from small checkpoints into tmp/model_store (no post-build check:
    test_archive.py covers it). One worker per version and a 1 ms batch delay unless
    `archive_args` say otherwise: several test servers share 2 cores, and the batching tests
    need requests to meet in the queue. float32, so answers equal the in-process ones exactly
    (bf16 serving has its own tests: test_handler.py, benchmarks/precision_agreement.py)."""
    store = tmp / "model_store"
    for arch, name, version, seed in TEST_MODELS:
        ckpt = write_checkpoint(tmp / f"{name}-{version}.pt", arch=arch, seed=seed)
        args = ["--name", name, "--version", version, "--store", str(store), "--no-check"]
        args += ["--workers", "1", "--max-batch-delay", "1", "--precision", "fp32"]
        archive.main([str(ckpt), *args, *archive_args])
    return store


def drawing_png(kind: str = "T") -> bytes:
    """A canvas-like PNG: a dark 'T' (or an 'L') on white paper."""
    if kind == "T":
        return sample_png()
    image = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(image).line([(90, 60), (90, 220), (200, 220)], fill="black", width=20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def blank_png() -> bytes:
    return sample_png(blank=True)


def truncated_png() -> bytes:
    data = drawing_png()
    return data[: len(data) // 2]


def archive_names(mar: Path) -> set[str]:
    return set(mar_archive.members(mar))


def read_member(mar: Path, name: str) -> bytes:
    return mar_archive.read_member(mar, name)


def new_ports() -> dict[str, int]:
    return dict(zip(torchserve.Ports.__dataclass_fields__, free_ports(5), strict=True))


def start_torchserve(
    workdir: Path,
    store: Path,
    ports: dict[str, int] | None = None,
    *,
    config: Path | None = None,
    token_auth: bool = False,
) -> processes.Server:
    """`make serve`'s code on loopback ports (free ones unless given), logs in `workdir`;
    returns once every model is READY. The config defaults to `serving_config(store)`."""
    ports = ports or new_ports()
    server, _ = processes.serve(
        config or serving_config(store),
        workdir,
        model_store=store,
        ports=torchserve.Ports(**ports),
        token_auth=token_auth,
        timeout=150,
    )
    return server


def stop_torchserve(workdir: Path) -> None:
    """Stop the TorchServe recorded in `workdir` (if any, by PID) and check that none of its
    processes is left running and none of its ports open."""
    server = processes.Server.load(workdir)
    if server is None:
        return
    server.remember_workers()
    pids = [server.pid, *(pid for pid, _ in server.workers)]
    processes.stop_torchserve(server)
    assert not [p for p in pids if _torchserve_process_alive(p)], "processes left running"
    assert not [p for p in server.ports.values() if processes.port_in_use(p)], "ports left open"


def _torchserve_process_alive(pid: int) -> bool:
    # By command line, not PID alone: the system may already have reused a PID.
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False
    return processes.FRONTEND_CLASS in command or processes.WORKER_MARK in command


@contextlib.contextmanager
def torchserve_running(workdir: Path, store: Path, **options):
    """`start_torchserve` (same options) for the `with` block, then `stop_torchserve`, even
    after a failure."""
    try:
        yield start_torchserve(workdir, store, **options)
    finally:
        stop_torchserve(workdir)


@contextlib.contextmanager
def webapp_running(server: processes.Server, logs: Path, *extra: str):
    """`python -m webapp` (waitress) on a free loopback port in front of `server`; yields
    (url, process) once /healthz answers; stopped by PID on exit."""
    port = processes.free_ports(1)[0]
    with processes.webapp(server.endpoints, logs / f"webapp-{port}.out", *extra, port=port) as (
        url,
        child,
    ):
        yield url, child.popen
    assert not processes.port_in_use(port), "the web app's port was left open"
