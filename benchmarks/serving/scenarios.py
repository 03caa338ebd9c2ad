"""Run the load generator against each configuration, side by side, and summarise repeats.

A configuration is one URL and one kind of body (TorchServe wants the PNG bytes, the web app
the same, the baseline a JSON data URL). Within each repeat every (configuration, clients)
pair runs once, in an order that rotates between repeats, so the load of other jobs on a
shared machine falls on all of them alike; the summary takes medians over the repeats.
"""

from __future__ import annotations

import base64
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil

from benchmarks.serving.loadgen import top_predictions
from benchmarks.serving.stack import ROOT


@dataclass
class Config:
    key: str  # short id, e.g. "ts-cnn-batch8"
    label: str  # what the table shows
    kind: str  # "torchserve", "webapp" or "baseline"
    url: str
    json_body: bool = False  # the baseline takes {"image": "data:image/png;base64,..."}


def request_body(config: Config, png: bytes) -> tuple[bytes, str]:
    if config.json_body:
        data_url = "data:image/png;base64," + base64.b64encode(png).decode()
        return json.dumps({"image": data_url}).encode(), "application/json"
    return png, "image/png"


def post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", parts.path, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def spec_for(config: Config, pngs: list[bytes], clients: int, duration: float, warmup: float):
    """The load generator's spec, with each drawing's expected answer asked for alone first."""
    bodies = []
    for png in pngs:
        body, content_type = request_body(config, png)
        status, answer = post(config.url, body, content_type)
        expected = top_predictions(answer) if status == 200 else None
        if expected is None:
            raise RuntimeError(f"{config.label}: {status} {answer[:300]!r}")
        bodies.append(
            {
                "body_b64": base64.b64encode(body).decode(),
                "content_type": content_type,
                "expect": expected,
            }
        )
    return {
        "url": config.url,
        "clients": clients,
        "duration_s": duration,
        "warmup_s": warmup,
        "bodies": bodies,
    }


def run_loadgen(spec: dict) -> dict:
    """One load generator process (python -m benchmarks.serving.loadgen), its JSON result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="loadgen-") as f:
        json.dump(spec, f)
        f.flush()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.serving.loadgen", f.name],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=spec["duration_s"] + spec["warmup_s"] + 120,
        )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run_all(
    configs: list[Config],
    pngs: list[bytes],
    concurrency: list[int],
    repeats: int,
    duration: float,
    warmup: float,
    log=print,
    each_repeat=None,
    processes=None,
) -> list[dict]:
    """Every (config, clients) `repeats` times, interleaved; returns one summary row per pair.

    `each_repeat(repeat)` runs at the start of every repeat: the in-process limit, so that it
    is measured under the same load as the servers. `processes()` returns {part: [pids]}
    (TorchServe's frontend, its workers, the web app, the baseline): the CPU time each part
    used during a run, per answered request, is robust to other jobs' load where wall-clock
    latency is not."""
    pairs = [(c, n) for n in concurrency for c in configs]
    specs = {(c.key, n): spec_for(c, pngs, n, duration, warmup) for c, n in pairs}
    runs: dict[tuple[str, int], list[dict]] = {key: [] for key in specs}
    for repeat in range(repeats):
        if each_repeat is not None:
            each_repeat(repeat)
        shift = (repeat * len(configs)) % len(pairs) if pairs else 0
        for config, clients in pairs[shift:] + pairs[:shift]:
            before = cpu_seconds(processes() if processes else {})
            result = run_loadgen(specs[config.key, clients])
            used = cpu_seconds(processes() if processes else {})
            # The CPU counters span the whole load-generator run, warm-up included.
            answered = max(1, result["completed_all"])
            result["cpu_ms_per_request"] = {
                part: (used[part] - before.get(part, 0.0)) * 1000 / answered for part in used
            }
            runs[config.key, clients].append(result)
            log(
                f"  repeat {repeat + 1}/{repeats} {config.label:<38} {clients} clients: "
                f"p50 {fmt(result['p50_ms'])} ms, {result['correct_rps']:.0f} correct/s, "
                f"{result['mixed_up']} mixed up, {result['failed']} failed"
            )
    return [summarise(config, clients, runs[config.key, clients]) for config, clients in pairs]


def cpu_seconds(parts: dict[str, list[int]]) -> dict[str, float]:
    """User + system CPU seconds used so far by each part's processes."""
    totals = {}
    for part, pids in parts.items():
        totals[part] = 0.0
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            totals[part] += times.user + times.system
    return totals


def median_of(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r[key] is not None]
    return statistics.median(values) if values else None


def summarise(config: Config, clients: int, results: list[dict]) -> dict:
    requests = sum(r["requests"] for r in results)
    answered = sum(r["ok"] + r["mixed_up"] for r in results)
    return {
        "config": config.key,
        "label": config.label,
        "kind": config.kind,
        "clients": clients,
        "repeats": len(results),
        "p50_ms": median_of(results, "p50_ms"),
        "p99_ms": median_of(results, "p99_ms"),
        "throughput_rps": median_of(results, "throughput_rps"),
        "correct_rps": median_of(results, "correct_rps"),
        # Shares over every request of every repeat.
        "mixed_up_share": sum(r["mixed_up"] for r in results) / answered if answered else 0.0,
        "failed_share": sum(r["failed"] for r in results) / requests if requests else 0.0,
        "failures": _merged(r["failures"] for r in results),
        "loadgen_cpu_fraction": median_of(results, "loadgen_cpu_fraction"),
        "cpu_ms_per_request": {
            part: statistics.median(r["cpu_ms_per_request"][part] for r in results)
            for part in results[0].get("cpu_ms_per_request", {})
        },
        "runs": results,
    }


def _merged(dicts) -> dict[str, int]:
    merged: dict[str, int] = {}
    for d in dicts:
        for key, n in d.items():
            merged[key] = merged.get(key, 0) + n
    return merged


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
