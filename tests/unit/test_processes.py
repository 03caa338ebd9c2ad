"""serving.processes without TorchServe: it stops only what it started and keeps the records
of servers it did not stop."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from serving import processes


@pytest.fixture
def sleeper():
    """A process that is not ours to stop (stands in for a recycled PID)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait(10)


def record(workdir, pid: int, started: float | None) -> processes.Server:
    ports = {"inference": 1, "management": 2, "metrics": 3, "grpc_inference": 4}
    tmpdir = workdir / f"tmp-{pid}"
    tmpdir.mkdir()
    return processes.Server(pid, str(workdir), str(tmpdir), ports, False, [], started)


def test_a_pid_that_is_not_a_torchserve_frontend_is_never_signalled(tmp_path, sleeper):
    server = record(tmp_path, sleeper.pid, psutil.Process(sleeper.pid).create_time())
    server.workers = [[sleeper.pid, psutil.Process(sleeper.pid).create_time()]]  # not a worker
    server.save()
    assert not server.alive()
    assert processes.stop_torchserve(server) == []
    assert sleeper.poll() is None, "a process that is neither frontend nor worker was stopped"
    assert not (tmp_path / processes.STATE_FILE).exists()  # its own record: removed


def test_a_reused_pid_is_not_the_process_that_was_started(tmp_path, sleeper):
    started = psutil.Process(sleeper.pid).create_time()
    assert processes._same_process(sleeper.pid, started) is not None
    assert processes._same_process(sleeper.pid, started - 100) is None


def test_stopping_a_dead_server_keeps_the_record_of_its_successor(tmp_path, sleeper):
    """The demo's bug: its TorchServe died, `make serve` started another in the same folder,
    and stopping the demo deleted the new server's record (and `make stop` lost it)."""
    dead = record(tmp_path, 999_999, 1.0)
    dead.save()
    successor = record(tmp_path, sleeper.pid, psutil.Process(sleeper.pid).create_time())
    successor.save()
    (tmp_path / "key_file.json").write_text("{}")
    processes.stop_torchserve(dead)
    on_disk = processes.Server.load(tmp_path)
    assert on_disk is not None and on_disk.pid == sleeper.pid
    assert (tmp_path / "key_file.json").exists()
    assert not (tmp_path / f"tmp-{dead.pid}").exists()  # the dead server's own folder goes


def test_records_of_older_versions_still_load(tmp_path):
    (tmp_path / processes.STATE_FILE).write_text(
        '{"pid": 5, "workdir": "w", "tmpdir": "t", "ports": {}, "token_auth": false,'
        ' "workers": [6, 7]}'
    )
    server = processes.Server.load(tmp_path)
    assert server.workers == [[6, None], [7, None]] and server.started is None


def test_a_child_is_stopped_by_pid_and_reaped(tmp_path):
    child = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log")
    assert child.alive()
    started = time.monotonic()
    child.stop(timeout=5)
    assert not child.alive() and time.monotonic() - started < 5
    assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == "zombie"


def test_free_ports_are_free_and_distinct():
    ports = processes.free_ports(5)
    assert len(set(ports)) == 5
    assert not any(processes.port_in_use(p) for p in ports)
