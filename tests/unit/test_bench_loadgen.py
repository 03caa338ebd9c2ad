"""The benchmark's load generator counts mix-ups and failures from real HTTP answers.

A tiny loopback server answers each drawing with its own prediction, except that it swaps the
answers of two drawings and fails a third: the counts must show exactly that.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: load the module from its file (stdlib only).
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "serving" / "loadgen.py"
_SPEC = importlib.util.spec_from_file_location("loadgen", _PATH)
loadgen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(loadgen)
distance, nearest, run, top_predictions = (
    loadgen.distance,
    loadgen.nearest,
    loadgen.run,
    loadgen.top_predictions,
)

ANSWERS = {
    b"a": [("A", 0.9), ("B", 0.05)],
    b"b": [("B", 0.8), ("A", 0.1)],
    b"c": [("C", 0.7), ("B", 0.2)],
    b"d": [("D", 0.6), ("C", 0.3)],
}
SWAPPED = {b"a": b"b", b"b": b"a"}  # a shared-file server's mix-up, on purpose
FAILING = b"c"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load generator expects

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if body == FAILING:
            status, payload = 500, b'{"code": 500}'
        else:
            answer = ANSWERS[SWAPPED.get(body, body)]
            predictions = [{"label": k, "probability": p} for k, p in answer]
            status, payload = 200, json.dumps({"predictions": predictions}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    httpd.shutdown()
    httpd.server_close()


def test_each_answer_is_nearest_its_own_drawing():
    expected = [ANSWERS[k] for k in sorted(ANSWERS)]
    assert [nearest(a, expected) for a in expected] == [0, 1, 2, 3]
    assert distance(ANSWERS[b"a"], ANSWERS[b"a"]) == 0
    assert top_predictions(b'{"predictions": [{"label": "A", "probability": 1}]}') == [("A", 1.0)]
    assert top_predictions(b"<html>") is None


def test_mix_ups_and_failures_are_counted_per_client(server):
    bodies = [
        {
            "body_b64": base64.b64encode(key).decode(),
            "content_type": "application/octet-stream",
            "expect": ANSWERS[key],
        }
        for key in sorted(ANSWERS)
    ]
    spec = {"url": server, "clients": 4, "duration_s": 0.5, "warmup_s": 0.1, "bodies": bodies}
    result = run(spec)
    # Clients 0 and 1 (drawings a, b) always get each other's answer, client 2 always fails,
    # client 3 is always right.
    assert result["requests"] > 10
    assert result["failed"] > 0 and set(result["failures"]) == {"500"}
    assert result["mixed_up"] > 0 and result["ok"] > 0
    answered = result["ok"] + result["mixed_up"]
    assert result["requests"] == answered + result["failed"]
    assert result["checked"] == answered
    # The warm-up's requests count towards what the servers' CPU time is divided by.
    assert result["completed_all"] > result["requests"]
    assert result["p50_ms"] is not None and result["p99_ms"] >= result["p50_ms"]
