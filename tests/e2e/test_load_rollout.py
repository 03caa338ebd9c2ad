"""8 clients through the real web app for 60 s while a new version is rolled out and back.

The original project's server mixed up a quarter of its answers between concurrent clients (one
fixed file on disk for every request). Here each client keeps sending its own known drawings and
every answer must equal that drawing's single-client answer for the version that served it,
while TorchServe batches the clients' requests together. Meanwhile a controller registers
emnist-cnn 2.0, makes it the default and rolls back to 1.0: no request may fail, and each
response reports the version that served it. p50/p99 go to stdout and
test-artifacts/load_rollout.json.

`EMNIST_LOAD_SECONDS=15` shortens the run for local work; CI runs the full 60 s.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image, ImageDraw
from support.servers import (
    build_test_store,
    drawing_png,
    needs_java,
    serving_config,
    torchserve_running,
    webapp_running,
)

from serving.management import Management

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "test-artifacts" / "load_rollout.json"
DURATION_S = float(os.environ.get("EMNIST_LOAD_SECONDS", "60"))
CLIENTS = 8
MODEL, OLD, NEW = "emnist-cnn", "1.0", "2.0"
# Batched and single inference may differ in the last float32 bits, and answers are rounded to
# 6 decimals: two units of the last decimal. The small untrained test models answer close to
# uniform, so different drawings must differ by 10 times that at least (checked below).
TOLERANCE = 2e-6
pytestmark = [pytest.mark.slow, pytest.mark.torchserve, needs_java]


def polyline_png(*strokes: list[tuple[int, int]]) -> bytes:
    """Black strokes on a white 280x280 canvas, like the page's drawings."""
    image = Image.new("RGB", (280, 280), "white")
    draw = ImageDraw.Draw(image)
    for points in strokes:
        draw.line(points, fill="black", width=18, joint="curve")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


DRAWINGS = {
    "T": drawing_png("T"),
    "L": drawing_png("L"),
    "I": polyline_png([(140, 50), (140, 230)]),
    "Z": polyline_png([(70, 60), (210, 60), (70, 220), (210, 220)]),
    "X": polyline_png([(70, 60), (210, 220)], [(210, 60), (70, 220)]),
    "O": polyline_png([(140, 50), (210, 140), (140, 230), (70, 140), (140, 50)]),
}


@dataclass
class Answer:
    client: int
    drawing: str
    started: float
    ended: float
    status: int | str  # the HTTP status, or the exception of a request that got none
    version: str | None = None
    predictions: list | None = None
    preview: str | None = None


def ask(session: requests.Session, url: str, png: bytes, version: str | None = None) -> dict:
    params = {"version": version} if version else {}
    response = session.post(
        f"{url}/api/predict", data=png, params=params, headers={"Content-Type": "image/png"},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


def same(predictions: list, expected: list, tolerance: float = TOLERANCE) -> bool:
    got = {p["label"]: p["probability"] for p in predictions}
    want = {p["label"]: p["probability"] for p in expected}
    return got.keys() == want.keys() and all(abs(got[k] - want[k]) <= tolerance for k in want)


def single_client_answers(url: str, version: str) -> dict[str, dict]:
    with requests.Session() as session:
        answers = {name: ask(session, url, png, version) for name, png in DRAWINGS.items()}
    assert {a["version"] for a in answers.values()} == {version}
    # Every pair of drawings must be told apart, or a mix-up could go unseen.
    for a in DRAWINGS:
        for b in DRAWINGS:
            if a < b:
                pair = answers[a]["predictions"], answers[b]["predictions"]
                assert not same(*pair, tolerance=10 * TOLERANCE), (a, b, pair)
    return answers


def client_loop(index: int, url: str, deadline: float, out: list[Answer]) -> None:
    """Its own keep-alive session; its own order of the drawings, so that at any moment the
    clients send different ones."""
    names = list(DRAWINGS)
    with requests.Session() as session:
        turn = index
        while time.monotonic() < deadline:
            name = names[turn % len(names)]
            turn += 1
            started = time.monotonic()
            try:
                response = session.post(
                    f"{url}/api/predict", data=DRAWINGS[name], timeout=60,
                    headers={"Content-Type": "image/png"},
                )  # fmt: skip
            except requests.RequestException as err:
                out.append(Answer(index, name, started, time.monotonic(), repr(err)))
                continue
            answer = Answer(index, name, started, time.monotonic(), response.status_code)
            if response.status_code == 200:
                body = response.json()
                answer.version, answer.predictions = body["version"], body["predictions"]
                answer.preview = body["preview"]
            out.append(answer)


def roll_out_and_back(management: Management, start: float, events: dict) -> None:
    """Register 2.0 at 15% of the run, default from 35%, rolled back to 1.0 at 65%."""
    try:
        time.sleep(max(0.0, start + 0.15 * DURATION_S - time.monotonic()))
        events["register"] = time.monotonic()
        management.register(f"{MODEL}-{NEW}.mar")
        management.wait_ready([(MODEL, NEW)], timeout=120)
        time.sleep(max(0.0, start + 0.35 * DURATION_S - time.monotonic()))
        events["switch"] = time.monotonic()
        management.set_default(MODEL, NEW)
        events["switched"] = time.monotonic()
        time.sleep(max(0.0, start + 0.65 * DURATION_S - time.monotonic()))
        events["rollback"] = time.monotonic()
        management.set_default(MODEL, OLD)
        events["rolled_back"] = time.monotonic()
    except Exception as err:  # reported by the test, which must not hang on a dead thread
        events["error"] = repr(err)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else 0


def write_report(report: dict) -> None:
    ARTIFACT.parent.mkdir(exist_ok=True)
    partial = ARTIFACT.with_suffix(".json.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(ARTIFACT)  # atomic: a reader never sees half a report


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """TorchServe serving emnist-cnn 1.0 only (2.0 waits in the store) and the web app."""
    tmp = tmp_path_factory.mktemp("load")
    store = build_test_store(tmp)
    template = serving_config(store).read_text()
    assert "\nload_models=ALL\n" in template
    config = tmp / "config.properties"
    config.write_text(template.replace("\nload_models=ALL\n", f"\nload_models={MODEL}-{OLD}.mar\n"))
    with (
        torchserve_running(tmp / "logs", store, config=config) as server,
        webapp_running(server, tmp) as (url, _),
    ):
        yield server, url


def test_every_client_gets_its_own_answer_while_versions_roll(deployment):
    server, url = deployment
    management = Management(server.endpoints)
    assert management.model_names() == [MODEL] and management.default_version(MODEL) == OLD
    expected = {OLD: single_client_answers(url, OLD)}

    answers: list[Answer] = []  # list.append is atomic: the clients share it
    events: dict = {}
    start = time.monotonic()
    deadline = start + DURATION_S
    threads = [
        threading.Thread(target=client_loop, args=(i, url, deadline, answers))
        for i in range(CLIENTS)
    ]
    threads.append(threading.Thread(target=roll_out_and_back, args=(management, start, events)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DURATION_S + 180)
    assert not any(t.is_alive() for t in threads), "a client or the controller hung"
    elapsed = time.monotonic() - start
    expected[NEW] = single_client_answers(url, NEW)  # now that 2.0 is registered

    latencies = sorted(1000 * (a.ended - a.started) for a in answers)
    by_version = {v: sum(a.version == v for a in answers) for v in (OLD, NEW)}
    report = {
        "clients": CLIENTS,
        "duration_s": round(elapsed, 1),
        "requests": len(answers),
        "requests_per_s": round(len(answers) / elapsed, 1),
        "failed": sum(a.status != 200 for a in answers),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies, default=0), 1),
        "served_by_version": by_version,
        "events_s": {k: round(v - start, 2) for k, v in events.items() if k != "error"},
    }
    write_report(report)
    print(f"\nload and rollout through the web app: {json.dumps(report)}")

    assert "error" not in events, f"the rollout failed: {events['error']}"
    failed = [asdict(a) for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} failed requests, first: {failed[:3]}"
    assert set(by_version) >= {a.version for a in answers}, "an unknown version answered"
    mixed = [
        (a.client, a.drawing, a.version)
        for a in answers
        if not same(a.predictions, expected[a.version][a.drawing]["predictions"])
        or a.preview != expected[a.version][a.drawing]["preview"]
    ]
    assert not mixed, (
        f"{len(mixed)} of {len(answers)} answers were not their drawing's: {mixed[:5]}"
    )
    # The switch and the rollback take effect for every request sent after they returned (one
    # sent just before may reach TorchServe after: the app decodes the image first).
    switched, rollback = events["switched"], events["rollback"]
    before = [a.version for a in answers if a.ended < events["switch"]]
    during = [a.version for a in answers if switched < a.started and a.ended < rollback]
    after = [a.version for a in answers if a.started > events["rolled_back"]]
    assert before and set(before) == {OLD}, set(before)
    assert during and set(during) == {NEW}, set(during)
    assert after and set(after) == {OLD}, set(after)
    assert management.default_version(MODEL) == OLD
