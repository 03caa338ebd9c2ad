"""Start and stop the processes of the service: TorchServe and the web app, on loopback.

One module for `make serve`, `make demo`, `make stop`, the benchmarks and the tests, with two
rules:

- **Only stop what was started here.** A process is known by its PID *and* its start time, so a
  PID the system has since given to another program is never signalled.
- **Record what was started.** A TorchServe's record (`<workdir>/torchserve.json`: frontend,
  workers, ports, private temporary folder) is written when it starts and removed only by the
  stop of *that* server: a launcher that stops a server which has already died leaves the
  record of a newer server in the same folder alone, so `make stop` still finds it. When the
  record is lost, `find_torchserve` recognises a TorchServe frontend running in the folder.

Each TorchServe gets a private temporary folder (its launcher keeps a PID file in $TMPDIR, the
frontend its worker sockets `.ts.sock.<port>` and unpacked archives in java.io.tmpdir): with a
shared /tmp two servers on one machine would overwrite each other's files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import requests

from serving import torchserve
from serving.management import Endpoints, Management, ManagementError

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = torchserve.LOOPBACK
STATE_FILE = "torchserve.json"
FRONTEND_CLASS = "org.pytorch.serve.ModelServer"
WORKER_MARK = "model_service_worker"
# TorchServe's logging without its per-request lines (see the file).
LOG_CONFIG = Path(__file__).resolve().parent / "log4j2.xml"


def free_ports(count: int) -> list[int]:
    """Ports free on loopback right now (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same_process(pid: int, started: float | None) -> psutil.Process | None:
    """The process `pid` if it is still the one that started at `started`, else None."""
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > 0.01:
            return None  # the PID was reused
        return process
    except psutil.Error:
        return None


def _terminate(process: psutil.Process | subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    expired = psutil.TimeoutExpired, subprocess.TimeoutExpired
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        process.terminate()
        try:
            process.wait(timeout)
        except expired:
            process.kill()
            process.wait(5)


@dataclass
class Child:
    """A process started here (the web app, a benchmark peer): stopped by PID and start time."""

    popen: subprocess.Popen
    log: Path | None  # None: its output went to this process's terminal
    started: float | None = None

    def __post_init__(self) -> None:
        self.started = _start_time(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.alive() and _same_process(self.pid, self.started) is not None:
            _terminate(self.popen, timeout)
        self.popen.poll()  # reap it


def spawn(
    command: list[str], log: Path | None, *, env: dict | None = None, new_session: bool = True
) -> Child:
    """Start `command` in the project folder, its output appended to `log` (None: to this
    terminal). In its own session by default: a terminal's Ctrl-C reaches only the launcher,
    which stops its children in order."""
    with contextlib.ExitStack() as stack:
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(log, "ab"))
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env if env is not None else os.environ.copy(),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=new_session,
        )
    return Child(popen, log)


def wait_http(url: str, child: Child, timeout: float = 60, *, ok: tuple[int, ...] = ()) -> None:
    """Until GET `url` answers (with a status in `ok`, when given), or fail with the child's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            log = child.log
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{child.popen.args[:3]} exited ({child.popen.returncode}):\n{tail}")
        with contextlib.suppress(requests.RequestException):
            status = requests.get(url, timeout=2).status_code
            if not ok or status in ok:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def webapp_command(endpoints: Endpoints, port: int, *extra: str) -> list[str]:
    """`python -m webapp` (waitress) on loopback in front of a TorchServe's endpoints."""
    command = [sys.executable, "-m", "webapp", "--host", LOOPBACK, "--port", str(port)]
    command += ["--inference-url", endpoints.inference, "--management-url", endpoints.management]
    if endpoints.key_file is not None:
        command += ["--token-file", str(endpoints.key_file)]
    return [*command, *extra]


def start_webapp(
    endpoints: Endpoints,
    log: Path,
    *extra: str,
    port: int | None = None,
    env: dict | None = None,
    timeout: float = 60,
) -> tuple[str, Child]:
    """The web app on `port` (a free one by default), up once /healthz answers at all (200, or
    503 while TorchServe is down); returns (base URL, child)."""
    port = port or free_ports(1)[0]
    child = spawn(webapp_command(endpoints, port, *extra), log, env=env)
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/healthz", child, timeout)
    except BaseException:
        child.stop()
        raise
    return url, child


@contextlib.contextmanager
def webapp(endpoints: Endpoints, log: Path, *extra: str, **options) -> Iterator[tuple[str, Child]]:
    """`start_webapp` for the `with` block; stopped by PID on the way out, even after a failure."""
    url, child = start_webapp(endpoints, log, *extra, **options)
    try:
        yield url, child
    finally:
        child.stop()


@dataclass
class Server:
    """One TorchServe started here, as recorded in `<workdir>/torchserve.json`."""

    pid: int
    workdir: str
    tmpdir: str
    ports: dict
    token_auth: bool
    workers: list = field(default_factory=list)  # [pid, start time] pairs
    started: float | None = None

    @property
    def endpoints(self) -> Endpoints:
        base = f"http://{LOOPBACK}"
        return Endpoints(
            inference=f"{base}:{self.ports['inference']}",
            management=f"{base}:{self.ports['management']}",
            metrics=f"{base}:{self.ports['metrics']}",
            key_file=Path(self.workdir) / "key_file.json" if self.token_auth else None,
        )

    @property
    def record(self) -> Path:
        return Path(self.workdir) / STATE_FILE

    def save(self) -> None:
        tmp = self.record.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, self.record)  # never a half-written record

    @classmethod
    def load(cls, workdir: str | Path) -> Server | None:
        path = Path(workdir) / STATE_FILE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        # Records written before start times were kept list worker PIDs alone.
        state["workers"] = [w if isinstance(w, list) else [w, None] for w in state["workers"]]
        return cls(**state)

    def frontend(self) -> psutil.Process | None:
        process = _same_process(self.pid, self.started)
        try:
            return process if process and FRONTEND_CLASS in process.cmdline() else None
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return self.frontend() is not None

    def owns_record(self) -> bool:
        """Whether the record in the work folder describes this server (not a newer one)."""
        on_disk = Server.load(self.workdir)
        return on_disk is not None and (on_disk.pid, on_disk.started) == (self.pid, self.started)

    def remember_workers(self) -> None:
        """Record the worker processes (they change as models are registered) for `stop`."""
        frontend = self.frontend()
        if frontend is None:
            return
        known = {pid for pid, _ in self.workers}
        try:
            children = frontend.children(recursive=True)
        except psutil.Error:
            return  # it exited meanwhile: nothing new to record
        for child in children:
            if child.pid not in known:
                self.workers.append([child.pid, _start_time(child.pid)])
        if self.owns_record():
            self.save()


def start_torchserve(
    template: Path, workdir: Path, model_store: Path, ports: torchserve.Ports, token_auth: bool
) -> Server:
    """Launch TorchServe (not yet READY: see `Management.wait_ready`) and record it."""
    workdir = workdir.resolve()  # TorchServe runs in it: every path must be absolute
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.properties"
    config.write_text(torchserve.render_config(template, model_store, ports, token_auth))
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
    command += ["--log-config", str(LOG_CONFIG)]
    pid_file = Path(tmpdir) / ".model_server.pid"
    try:
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
    except BaseException:  # a hung launcher or Ctrl-C: stop a frontend it may have started
        if pid_file.exists():
            frontend = _same_process(int(pid_file.read_text()), None)
            if frontend is not None and FRONTEND_CLASS in " ".join(frontend.cmdline()):
                _terminate(frontend, 30)
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    if launcher.returncode != 0 or not pid_file.exists():
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise SystemExit(f"error: TorchServe did not start; see {workdir / 'torchserve.out'}")
    pid = int(pid_file.read_text())
    server = Server(pid, str(workdir), tmpdir, asdict(ports), token_auth, [], _start_time(pid))
    server.save()
    return server


def stop_torchserve(server: Server, timeout: float = 30) -> list[int]:
    """Stop the frontend, then any of its workers still running; returns the PIDs stopped.

    The record, the API keys and the temporary folder go only when the record is this server's:
    a server that died and was replaced in the same folder leaves its successor alone."""
    server.remember_workers()
    stopped = []
    frontend = server.frontend()
    targets = [frontend] if frontend else []
    for pid, started in server.workers:
        worker = _same_process(pid, started)
        with contextlib.suppress(psutil.Error):
            if worker is not None and WORKER_MARK in " ".join(worker.cmdline()):
                targets.append(worker)
    for process in targets:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running():
                _terminate(process, timeout)
                stopped.append(process.pid)
    if server.owns_record():
        (Path(server.workdir) / "key_file.json").unlink(missing_ok=True)
        server.record.unlink(missing_ok=True)
    shutil.rmtree(server.tmpdir, ignore_errors=True)
    return stopped


def find_torchserve(workdir: Path) -> Server | None:
    """The TorchServe recorded in `workdir`, or, when the record is gone, a TorchServe frontend
    running with `workdir` as its working folder (recorded again so `stop` can clean up)."""
    recorded = Server.load(workdir)
    if recorded is not None:
        return recorded
    workdir = workdir.resolve()
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        info = process.info
        if FRONTEND_CLASS in " ".join(info["cmdline"] or ()) and info["cwd"] == str(workdir):
            config = workdir / "config.properties"
            props = torchserve.read_properties(config) if config.exists() else {}
            server = Server(
                process.pid,
                str(workdir),
                tempfile.mkdtemp(prefix="emnist-ts-"),
                torchserve.ports_of(props),
                props.get("disable_token_authorization") == "false",
                [],
                _start_time(process.pid),
            )
            server.save()
            return server
    return None


def log_tail(workdir: str | Path, lines: int = 25) -> str:
    """The end of TorchServe's logs, for error messages."""
    parts = []
    for name in ("ts_log.log", "model_log.log"):
        path = Path(workdir) / name
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


def serve(
    config: Path,
    workdir: Path,
    *,
    model_store: Path | None = None,
    ports: torchserve.Ports | None = None,
    token_auth: bool = False,
    timeout: float = 180,
    say=print,
    on_started=None,
) -> tuple[Server, dict[str, str]]:
    """`make serve`: start TorchServe, wait until every archive that `load_models` names has
    its workers READY (not just until /ping answers), then set each model's default version.
    `on_started(server)`, if given, runs as soon as TorchServe is launched, while the models load.

    TorchServe ignores `defaultVersion` for models loaded at start-up, so the intended default is
    read from config.properties' `models=` entry, else the highest version is taken. Returns the
    server and {model: default version}; raises SystemExit with a message a user can act on, and
    leaves nothing half-started behind."""
    ports = ports or torchserve.Ports()
    major = torchserve.java_major_version()
    if major is None or major < 17:
        found = f"Java {major}" if major else "no java"
        raise SystemExit(
            f"error: TorchServe 0.12 needs Java 17 or newer, found {found}: install a JDK 17 "
            "(Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    props = torchserve.read_properties(config)
    store = model_store or Path(props.get("model_store", "model_store"))
    if not store.is_absolute():
        store = ROOT / store
    running = find_torchserve(workdir)
    if running and running.alive():
        raise SystemExit(f"error: TorchServe is already running (pid {running.pid}): make stop")
    if running:
        stop_torchserve(running)  # the record of a server that died: clean it up
    archives = torchserve.archives_to_load(props, store)
    if not archives:
        raise SystemExit(
            f"error: no model archives in {store}/ to load: build one with\n"
            "  make archive CHECKPOINT=runs/<run>/best.pt VERSION=1.0"
        )
    busy = sorted(p for p in vars(ports).values() if port_in_use(p))
    if busy:
        raise SystemExit(f"error: port(s) {busy} already in use on 127.0.0.1 (override: *_PORT=)")
    say(f"starting TorchServe on 127.0.0.1:{ports.inference} with {len(archives)} archive(s)")
    server = start_torchserve(config, workdir, store, ports, token_auth)
    management = Management(server.endpoints)
    try:
        if on_started is not None:
            on_started(server)
        management.wait_ready(list(archives.values()), timeout, alive=server.alive)
        defaults = set_defaults(management, props, archives.values())
    except ManagementError as err:
        say(log_tail(workdir))
        stop_torchserve(server)
        raise SystemExit(f"error: {err}; TorchServe stopped (logs in {workdir}/)") from err
    except BaseException:
        stop_torchserve(server)  # Ctrl-C while the models loaded: leave nothing half-started
        raise
    server.remember_workers()
    return server, defaults


def set_defaults(management: Management, props: dict, loaded) -> dict[str, str]:
    """Per model name: the `defaultVersion` of config.properties if loaded, else the highest."""
    intended = torchserve.intended_defaults(props)
    by_name: dict[str, list[str]] = {}
    for name, version in loaded:
        by_name.setdefault(name, []).append(version)
    chosen = {}
    for name, versions in by_name.items():
        version = intended.get(name)
        if version not in versions:
            version = max(versions, key=torchserve.version_key)
        management.set_default(name, version)
        chosen[name] = version
    return chosen


@contextlib.contextmanager
def torchserve_running(config: Path, workdir: Path, **options) -> Iterator[Server]:
    """`serve` for the `with` block, then `stop_torchserve`, even after a failure."""
    server, _ = serve(config, workdir, say=lambda _message: None, **options)
    try:
        yield server
    finally:
        stop_torchserve(server)
