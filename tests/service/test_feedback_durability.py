"""No acknowledged correction is lost: 8 writers post through the real web app (waitress, its own
process) while it is killed with SIGKILL and restarted; every row that got a 201 is in the
store afterwards, the database is intact, and no row is half-written."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import threading
import time

import pytest
import requests
from PIL import Image
from support.servers import drawing_png, free_ports

from feedback import store
from serving import processes
from serving.management import Endpoints

WRITERS = 8


def poster(url: str, writer: str, acknowledged: dict, stop: threading.Event) -> None:
    """Post distinct corrections until told to stop; record what got a 201."""
    session, n = requests.Session(), 0
    while not stop.is_set():
        png = drawing_png("T" if n % 2 else "L") + f"{writer}-{n}".encode()  # distinct bytes
        n += 1
        try:
            response = session.post(
                f"{url}/api/feedback",
                files={"image": ("drawing.png", png, "image/png")},
                data={"label": "7", "writer": writer, "model": "emnist-cnn", "version": "1.2"},
                timeout=10,
            )
        except requests.RequestException:
            time.sleep(0.05)  # the app is down: not acknowledged, try the next one
            continue
        if response.status_code == 201:
            acknowledged[response.json()["id"]] = png


@pytest.mark.slow
def test_every_acknowledged_correction_survives_sigkill_of_the_web_app(tmp_path):
    db = tmp_path / "feedback.sqlite3"
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"  # no TorchServe: probabilities stay null
    endpoints = Endpoints(inference=nowhere, management=nowhere, metrics=nowhere)
    env = {**os.environ, "EMNIST_FEEDBACK_DB": str(db), "EMNIST_FEEDBACK_MAX_ROWS": "100000"}
    port = free_ports(1)[0]
    url, app = processes.start_webapp(endpoints, tmp_path / "app.log", port=port, env=env)
    acknowledged: dict[str, bytes] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=poster, args=(url, f"writer{i:02d}abcdefgh", acknowledged, stop))
        for i in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2):  # two crashes, each in the middle of the writes
            time.sleep(2.0)
            before = len(acknowledged)
            os.kill(app.pid, signal.SIGKILL)
            app.popen.wait(10)
            time.sleep(0.5)
            url, app = processes.start_webapp(endpoints, tmp_path / "app.log", port=port, env=env)
            assert before > 0, "nothing was acknowledged before the crash"
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        app.stop()
    assert len(acknowledged) > 50, f"only {len(acknowledged)} corrections acknowledged"
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()
    with store.opened(db) as connection:
        rows = {row["id"]: row for row in store.rows(connection)}
    missing = sorted(set(acknowledged) - set(rows))
    assert not missing, f"{len(missing)} acknowledged corrections lost"
    for row in rows.values():  # nothing half-written, acknowledged or not
        assert len(row["pixels"]) == 28 * 28 and row["label"] == "7"
        Image.open(io.BytesIO(row["image_png"])).verify()
    for identifier, png in acknowledged.items():
        assert rows[identifier]["image_png"] == png
