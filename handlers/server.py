"""Start and stop one TorchServe on loopback, from a config template, with its state in a file.

`start` renders the template into `<workdir>/config.properties` (ports overridden, every listener
on 127.0.0.1, the model store made absolute), launches TorchServe with its working directory in
`workdir` (logs, `key_file.json`) and records what `stop` needs in `<workdir>/torchserve.json`:
the frontend's PID and the workers it had, so exactly those processes are stopped.

Each server gets a private temporary folder (TorchServe's launcher keeps its PID file in $TMPDIR,
the frontend its worker sockets `.ts.sock.<port>` and unpacked archives in java.io.tmpdir):
with the shared /tmp, two servers on one machine (two engineers, a test run beside `make serve`)
would overwrite each other's PID file and sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from handlers.management import Endpoints

STATE_FILE = "torchserve.json"
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Ports:
    inference: int = 8080
    management: int = 8081
    metrics: int = 8082
    grpc_inference: int = 7070
    grpc_management: int = 7071


@dataclass
class Server:
    pid: int
    workdir: str
    tmpdir: str
    ports: dict
    token_auth: bool
    workers: list[int]

    @property
    def endpoints(self) -> Endpoints:
        base = f"http://{LOOPBACK}"
        return Endpoints(
            inference=f"{base}:{self.ports['inference']}",
            management=f"{base}:{self.ports['management']}",
            metrics=f"{base}:{self.ports['metrics']}",
            key_file=Path(self.workdir) / "key_file.json" if self.token_auth else None,
        )

    def save(self) -> None:
        path = Path(self.workdir) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, workdir: str | Path) -> Server | None:
        path = Path(workdir) / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def alive(self) -> bool:
        try:
            return FRONTEND_CLASS in psutil.Process(self.pid).cmdline()
        except psutil.Error:
            return False

    def remember_workers(self) -> None:
        """Record the worker PIDs (they change as models are registered) for `stop`."""
        if self.alive():
            children = psutil.Process(self.pid).children(recursive=True)
            self.workers = sorted({*self.workers, *(c.pid for c in children)})
            self.save()


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


def render_config(template: Path, model_store: Path, ports: Ports, token_auth: bool) -> str:
    """The template with ports, addresses, model store and token mode replaced or added."""
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
    for name, archive in entries:
        archive = archive.strip()
        manifest = archive_manifest(model_store / archive)
        result[archive] = (
            name.strip() if name else manifest["modelName"],
            manifest["modelVersion"],
        )
    return result


def archive_manifest(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("MAR-INF/MANIFEST.json"))["model"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
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


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def start(
    template: Path, workdir: Path, model_store: Path, ports: Ports, token_auth: bool
) -> Server:
    """Launch TorchServe (not yet READY: see `Management.wait_ready`); returns its state."""
    workdir = workdir.resolve()  # TorchServe runs in it: every path must be absolute
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.properties"
    config.write_text(render_config(template, model_store, ports, token_auth))
    (workdir / "key_file.json").unlink(missing_ok=True)
    # Short, private and removed by `stop`; unix socket paths must stay under 108 bytes.
    tmpdir = tempfile.mkdtemp(prefix="emnist-ts-", dir="/tmp" if os.path.isdir("/tmp") else None)
    env = {
        **os.environ,
        "TMPDIR": tmpdir,  # the launcher's PID file
        "TEMP": tmpdir,  # the launcher passes it on as java.io.tmpdir
        "LOG_LOCATION": str(workdir),
        "METRICS_LOCATION": str(workdir),
    }
    command = [sys.executable, "-m", "ts.model_server", "--start", "--ts-config", str(config)]
    command.append("--ncs")  # no config snapshots: a restart uses config.properties, nothing else
    with open(workdir / "torchserve.out", "ab") as out:
        launcher = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=60,
            start_new_session=True,  # a daemon: no signals from the terminal that started it
        )
    pid_file = Path(tmpdir) / ".model_server.pid"
    if launcher.returncode != 0 or not pid_file.exists():
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise SystemExit(f"error: TorchServe did not start; see {workdir / 'torchserve.out'}")
    server = Server(int(pid_file.read_text()), str(workdir), tmpdir, asdict(ports), token_auth, [])
    server.save()
    return server


def stop(server: Server, timeout: float = 30) -> list[int]:
    """Stop the frontend, then any of its workers still running; returns the PIDs stopped."""
    server.remember_workers()
    stopped = []
    pids = ([server.pid] if server.alive() else []) + server.workers
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if pid != server.pid and "model_service_worker" not in " ".join(process.cmdline()):
                continue  # a recycled PID, not our worker
            process.terminate()
            try:
                process.wait(timeout)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(5)
            stopped.append(pid)
        except psutil.NoSuchProcess:
            pass  # the frontend's shutdown already took its workers down
    workdir = Path(server.workdir)
    (workdir / "key_file.json").unlink(missing_ok=True)
    (workdir / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(server.tmpdir, ignore_errors=True)
    return stopped


def log_tail(workdir: str | Path, lines: int = 25) -> str:
    """The end of TorchServe's logs, for error messages."""
    parts = []
    for name in ("ts_log.log", "model_log.log"):
        path = Path(workdir) / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)
