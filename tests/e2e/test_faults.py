"""Faults under load, with a real TorchServe and the web app (waitress) in its own process:
TorchServe's Python worker killed (TorchServe restarts it; the app answers 503 + Retry-After
meanwhile and recovers without a restart), then TorchServe stopped (503 within the connect
timeout, nothing hangs) and started again on the same ports (the app recovers by itself).
Every loop is bounded in count and in time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from support.live import webapp, worker_pids
from support.servers import (
    drawing_png,
    needs_java,
    new_ports,
    start_torchserve,
    stop_torchserve,
    write_checkpoint,
)

from serving import archive, processes

pytestmark = [pytest.mark.torchserve, pytest.mark.slow, needs_java]
MODEL = ("emnist-cnn", "1.0")
CONNECT_TIMEOUT, READ_TIMEOUT = 1.0, 30.0  # the app's timeouts towards TorchServe
# No request may take longer than the app's read timeout plus this (a hang fails the test).
SLACK_S = 5.0
PNG = drawing_png("L")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """One small model: one worker, so TorchServe starts (twice) as fast as it can."""
    tmp = tmp_path_factory.mktemp("faults")
    checkpoint = write_checkpoint(tmp / "emnist-cnn-1.0.pt", arch="cnn")
    name, version = MODEL
    argv = ["--name", name, "--version", version, "--store", str(tmp / "model_store")]
    argv += ["--workers", "1"]
    archive.main([str(checkpoint), *argv, "--no-check"])
    return tmp / "model_store"


@pytest.fixture(scope="module")
def served(store):
    """A TorchServe the tests may stop and start again in the same work folder and ports."""
    workdir = store.parent / "logs"
    try:
        yield start_torchserve(workdir, store, new_ports())
    finally:
        stop_torchserve(workdir)


@pytest.fixture(scope="module")
def app(served, store):
    timeouts = {
        "EMNIST_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "EMNIST_READ_TIMEOUT": str(READ_TIMEOUT),
    }
    with webapp(served.endpoints, store.parent / "webapp.log", **timeouts) as running:
        yield running


@dataclass
class Answer:
    started: float  # time.monotonic()
    seconds: float
    status: int | None  # None: no answer at all (the test fails on it)
    retry_after: str | None
    body: dict | str


def ask(app_url: str) -> Answer:
    start = time.monotonic()
    try:
        response = requests.post(
            f"{app_url}/api/predict?topk=47",
            data=PNG,
            headers={"Content-Type": "image/png"},
            timeout=(5, READ_TIMEOUT + SLACK_S),
        )
    except requests.RequestException as err:
        return Answer(start, time.monotonic() - start, None, None, repr(err))
    try:
        body = response.json()
    except ValueError:
        body = response.text
    status, retry_after = response.status_code, response.headers.get("Retry-After")
    return Answer(start, time.monotonic() - start, status, retry_after, body)


class Load:
    """`threads` clients asking the app in a loop, each at most `per_thread` times and until
    `stop()` or `max_seconds`; every answer is kept."""

    def __init__(self, app_url: str, threads: int = 3, per_thread: int = 2000, max_seconds=90):
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        deadline = time.monotonic() + max_seconds

        def client():
            for _ in range(per_thread):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                answer = ask(app_url)
                self.answers.append(answer)
                if answer.status != 200:
                    time.sleep(0.2)  # a real client would honour Retry-After; keep it brisk

        self._threads = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(READ_TIMEOUT + 2 * SLACK_S)
        assert not any(t.is_alive() for t in self._threads), "a client is still waiting"
        return sorted(self.answers, key=lambda a: a.started)


def assert_only_predictions_or_503(answers: list[Answer], expected: dict) -> None:
    """200 with the expected answer, or 503 + Retry-After and a JSON message; nothing hangs."""
    for a in answers:
        assert a.status in (200, 503), f"{a.status}: {a.body}"
        assert a.seconds < READ_TIMEOUT + SLACK_S, f"a request took {a.seconds:.1f} s"
        if a.status == 503:
            assert a.retry_after and int(a.retry_after) > 0, a
            assert isinstance(a.body, dict) and a.body["message"], a
        else:
            assert a.body["predictions"] == expected["predictions"], a.body


def wait_until(condition, seconds: float, what: str) -> float:
    """Poll `condition` (at most `seconds`); returns how long it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < seconds, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)
    return time.monotonic() - start


def tally(answers: list[Answer]) -> str:
    counts = {s: sum(a.status == s for a in answers) for s in sorted({a.status for a in answers})}
    return ", ".join(f"{s}: {n}" for s, n in counts.items())


def test_a_killed_worker_is_restarted_and_the_app_answers_503_meanwhile(served, app, capsys):
    expected = ask(app.url)
    assert expected.status == 200, expected.body
    [(old_pid, status)] = worker_pids(served.endpoints, [MODEL])[MODEL]
    assert status == "READY" and "model_service_worker" in " ".join(
        psutil.Process(old_pid).cmdline()
    )
    load = Load(app.url)
    time.sleep(1.0)
    # Frozen first, so that requests are surely in flight in the worker when it dies (a fast
    # model would otherwise often be idle at the instant of the kill).
    os.kill(old_pid, signal.SIGSTOP)
    time.sleep(0.5)
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def restarted():
        [(pid, state)] = worker_pids(served.endpoints, [MODEL])[MODEL]
        return pid != old_pid and state == "READY"

    restart_s = wait_until(restarted, 60, "TorchServe restarting the worker")
    # The app answers again by itself: at least 2 s of load after the restart.
    wait_until(
        lambda: any(a.status == 200 and a.started > killed_at + restart_s for a in load.answers),
        30,
        "a prediction after the restart",
    )
    time.sleep(2.0)
    answers = load.stop()
    after_kill = [a for a in answers if a.started + a.seconds > killed_at]
    with capsys.disabled():
        print(f"\nworker {old_pid} killed: restarted in {restart_s:.1f} s; {tally(answers)}")
    assert_only_predictions_or_503(answers, expected.body)
    assert any(a.status == 503 for a in after_kill), "requests in the dead worker were not 503"
    assert app.alive() and ask(app.url).body["predictions"] == expected.body["predictions"]


def test_torchserve_stopped_is_503_at_once_and_started_again_recovers(served, app, capsys):
    """Last in the module: it stops the shared TorchServe and starts a new one."""
    expected = ask(app.url)
    assert expected.status == 200, expected.body
    load = Load(app.url)
    time.sleep(1.0)
    workdir = Path(served.workdir)
    store, ports = workdir.parent / "model_store", processes.Server.load(workdir).ports
    stop_torchserve(workdir)  # asserts that its processes are gone and its ports closed
    stopped_at = time.monotonic()
    for _ in range(5):  # refused connections: no waiting for any timeout
        down = ask(app.url)
        assert down.status == 503 and down.retry_after, down
        assert down.seconds < CONNECT_TIMEOUT + 1.0, f"503 after {down.seconds:.2f} s"
    health = requests.get(f"{app.url}/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["torchserve"]["reachable"] is False

    started = start_torchserve(workdir, store, ports)  # same ports: the app's settings hold
    assert started.ports == ports
    wait_until(
        lambda: any(a.status == 200 and a.started > stopped_at for a in load.answers),
        30,
        "a prediction through the app after TorchServe came back",
    )
    answers = load.stop()
    back = min(a.started + a.seconds for a in answers if a.status == 200 and a.started > stopped_at)
    with capsys.disabled():
        print(f"\nTorchServe stopped, started again, predictions back after "
              f"{back - stopped_at:.1f} s: {tally(answers)}")  # fmt: skip
    assert_only_predictions_or_503(answers, expected.body)
    assert app.alive(), "the app was restarted or died"
