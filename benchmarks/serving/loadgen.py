"""The load generator: N clients, each a thread with one keep-alive HTTP connection.

    python -m benchmarks.serving.loadgen SPEC.json      # prints one JSON result on stdout

SPEC: {"url": "http://127.0.0.1:8080/predictions/emnist-cnn", "clients": 8, "duration_s": 4,
       "warmup_s": 1, "bodies": [{"body_b64": "...", "content_type": "image/png",
       "headers": {...}, "expect": [[label, probability], ...]}, ...]}

Client i sends bodies[i % len(bodies)] in a closed loop (the next request when the answer is
in). Only answers completed inside the timed window (after the warm-up) count. An answer is a
mix-up when its top-k is nearer to another body's expected answer than to its own; anything
but a 200 with a JSON prediction, or a dropped connection, is a failure.

Why this and not wrk or locust: it runs in its own process, so it competes with the servers for
the same 2 cores only as much as a real client would, and it reports its own CPU time to show
that; it checks every answer against the drawing its client sent, which neither wrk (no
response checks without Lua) nor locust (gevent, heavier per request) does out of the box. It
uses `http.client` rather than `requests`: the same keep-alive connection per client at about a
third of the Python work per request, so the generator steals less CPU from the servers.
"""

from __future__ import annotations

import base64
import http.client
import json
import resource
import statistics
import sys
import threading
import time
from urllib.parse import urlsplit


def top_predictions(body: bytes) -> list[tuple[str, float]] | None:
    """[(label, probability), ...] from a prediction answer, None if it is not one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("predictions"), list):
        return None
    return [(p["label"], float(p["probability"])) for p in answer["predictions"]]


def distance(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> float:
    """L1 distance between two top-k lists (labels missing from one count as 0)."""
    pa, pb = dict(a), dict(b)
    return sum(abs(pa.get(k, 0.0) - pb.get(k, 0.0)) for k in pa.keys() | pb.keys())


def nearest(answer: list[tuple[str, float]], expected: list[list]) -> int:
    return min(range(len(expected)), key=lambda i: distance(answer, expected[i]))


class Client(threading.Thread):
    def __init__(self, index: int, spec: dict, window: tuple[float, float], stop_at: float):
        super().__init__(daemon=True)
        url = urlsplit(spec["url"])
        self.host, self.port = url.hostname, url.port
        self.path = url.path + (f"?{url.query}" if url.query else "")
        self.body_index = index % len(spec["bodies"])
        body = spec["bodies"][self.body_index]
        self.body = base64.b64decode(body["body_b64"])
        self.headers = {"Content-Type": body["content_type"], **body.get("headers", {})}
        self.expected = [
            [tuple(p) for p in b["expect"]] if b.get("expect") else None for b in spec["bodies"]
        ]
        self.window, self.stop_at = window, stop_at
        self.latencies: list[float] = []
        self.failures: dict[str, int] = {}
        self.mixups = 0
        self.checked = 0
        self.completed = 0  # every answer or error, warm-up included

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while (start := time.perf_counter()) < self.stop_at:
            try:
                connection.request("POST", self.path, body=self.body, headers=self.headers)
                response = connection.getresponse()
                payload = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as err:
                connection.close()  # the next request opens a new connection
                status, payload = type(err).__name__, b""
            end = time.perf_counter()
            self.completed += 1
            if not self.window[0] <= end <= self.window[1]:
                continue
            self.record(status, payload, (end - start) * 1000)
        connection.close()

    def record(self, status, payload: bytes, latency_ms: float) -> None:
        answer = top_predictions(payload) if status == 200 else None
        if answer is None:
            key = str(status)
            self.failures[key] = self.failures.get(key, 0) + 1
            return
        self.latencies.append(latency_ms)
        if self.expected[self.body_index] is not None:
            self.checked += 1
            known = [e if e is not None else [] for e in self.expected]
            if nearest(answer, known) != self.body_index:
                self.mixups += 1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(spec: dict) -> dict:
    clients_n = int(spec["clients"])
    warmup, duration = float(spec.get("warmup_s", 1)), float(spec["duration_s"])
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    begin = time.perf_counter()
    window = (begin + warmup, begin + warmup + duration)
    clients = [Client(i, spec, window, window[1]) for i in range(clients_n)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(duration + warmup + 60)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    latencies = [x for c in clients for x in c.latencies]
    failures: dict[str, int] = {}
    for client in clients:
        for key, n in client.failures.items():
            failures[key] = failures.get(key, 0) + n
    answered = len(latencies)
    total = answered + sum(failures.values())
    mixups = sum(c.mixups for c in clients)
    return {
        "clients": clients_n,
        "duration_s": duration,
        "requests": total,
        # Every request completed from start to end, warm-up included: the servers' CPU time is
        # measured around the whole run, so it is divided by this.
        "completed_all": sum(c.completed for c in clients),
        "ok": answered - mixups,
        "mixed_up": mixups,
        "checked": sum(c.checked for c in clients),
        "failed": sum(failures.values()),
        "failures": failures,
        "throughput_rps": answered / duration,  # answered with a prediction, right or wrong
        "correct_rps": (answered - mixups) / duration,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        # The generator's own CPU use over the whole run (warm-up included), per second.
        "loadgen_cpu_fraction": cpu_s / (time.perf_counter() - begin),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.serving.loadgen SPEC.json")
    with open(argv[0]) as f:
        spec = json.load(f)
    print(json.dumps(run(spec)))


if __name__ == "__main__":
    main()
