"""`make bench`: the serving benchmark suite, every figure measured side by side in one run.

    .venv/bin/python -m benchmarks.run_all [--duration 3 --repeats 3 --concurrency 1,4,8]
    make bench BENCH_ARGS="--duration 1 --repeats 1 --no-training --no-cold-start"   # quick

1. the limit: each default archive's handler in-process, batch 1 and batched;
2. TorchServe (started as `make serve` does, on free loopback ports) with the default
   archives, dynamic batching on (the archive's own) and off (the same archive registered
   again with batch size 1), 1/4/8 clients; the web app (waitress) in front of it; and the
   original project's design (benchmarks/peer_baseline.py), all loaded in turn by one load
   generator process per measurement (benchmarks/serving/loadgen.py);
3. cold start of `make serve` and `make demo`;
4. training throughput per architecture (benchmarks/train_throughput.py).
Writes docs/benchmarks/results.json, results.md and latency_vs_concurrency.png atomically.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.serving import cold_start, report, scenarios, stack
from benchmarks.serving.drawings import drawings
from benchmarks.serving.scenarios import Config
from emnist.checkpoint import atomic_save, make_checkpoint
from emnist.files import atomic_write, atomic_write_json
from emnist.models import build_model
from mar import archive

ROOT = stack.ROOT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=3.0, help="timed seconds per measurement")
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds before each")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median taken)")
    p.add_argument("--concurrency", default="1,4,8", help="client counts")
    p.add_argument("--cold-repeats", type=int, default=2, help="cold starts per make target")
    p.add_argument("--no-cold-start", action="store_true")
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def limit_once(model: stack.Served, seconds: float, precision: str | None = None) -> dict:
    """One in-process measurement of `model`'s handler at batch 1 and 8 (its own threads and,
    unless `precision` says otherwise, its own arithmetic)."""
    archive = str(ROOT / "model_store" / model.archive)
    command = [sys.executable, "-m", "benchmarks.serving.inprocess", archive]
    if precision:
        command += ["--precision", precision]
    done = subprocess.run(
        [*command, "--batch", "1", "--batch", "8", "--seconds", str(seconds)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def limit_rows(measured_by: dict[tuple[str, str], list[dict]], models) -> list[dict]:
    """Median over repeats per (model, precision, batch); precision "archive" is the archive's
    own setting, "fp32" the same handler in float32."""
    versions = {m.name: m.version for m in models}
    rows = []
    for (name, precision), measured in measured_by.items():
        for i, first in enumerate(measured[0]["results"]):
            results = [r["results"][i] for r in measured]
            rows.append(
                {
                    "model": name,
                    "version": versions[name],
                    "precision": precision,
                    "threads": measured[0]["threads"],
                    "batch": first["batch"],
                    "images_per_s": statistics.median(r["images_per_s"] for r in results),
                    "per_image_ms": statistics.median(r["per_image_ms"] for r in results),
                    "phase_ms_per_image": {
                        k: statistics.median(r["phase_ms_per_image"][k] for r in results)
                        for k in first["phase_ms_per_image"]
                    },
                }
            )
    return rows


def peer_checkpoint(folder: Path, labels_from: Path) -> Path:
    """A random-initialised `cnn-seed` (the original architecture) with the shipped labels."""
    labels = archive.labels(labels_from)
    torch.manual_seed(0)
    model_args = {"num_classes": len(labels)}
    model = build_model("cnn-seed", **model_args)
    ckpt = make_checkpoint(
        model=model,
        arch="cnn-seed",
        model_args=model_args,
        class_names=labels,
        train_config={"seed": 0, "note": "random weights: for timing the baseline only"},
        data={},
        metrics={},
        history=[],
    )
    path = folder / "cnn-seed-random.pt"
    atomic_save(ckpt, path)
    return path


def serving(args, models: list[stack.Served], logs: Path) -> tuple[list[dict], list[dict], dict]:
    pngs = [png for _, png in drawings(max(args.concurrency))]
    # The first model answers in float32 too (a copy of its archive as `<version>-fp32`).
    store, fp32_version = stack.store_with_fp32(logs / "fp32", models[0])
    with stack.torchserve_stack(logs / "ts", model_store=store) as server:
        configs, batching = [], {}
        fp32_url = f"{server.endpoints.inference}/predictions/{models[0].name}/{fp32_version}"
        label = f"TorchServe {models[0].name} {models[0].version} in float32"
        configs.append(Config(f"ts-{models[0].name}-fp32", label, "torchserve", fp32_url))
        for i, model in enumerate(models):
            # The archive's own batching, no batching, and for the first model the other
            # batch delay of the two compared (1 ms, the archives' since 1.1, and 5 ms).
            own = stack.describe(server, model.name, model.version)["max_batch_delay_ms"]
            variants = [(1, 0), (8, 5 if own != 5 else 1)] if i == 0 else [(1, 0)]
            names = [model.name] + [
                stack.register_variant(server, model, size, delay) for size, delay in variants
            ]
            for name in names:
                info = stack.describe(server, name, model.version)
                batching[name] = info
                size, delay = info["batch_size"], info["max_batch_delay_ms"]
                label = f"TorchServe {model.name} {model.version}, batch " + (
                    f"{size}/{delay} ms" if size > 1 else "1"
                )
                url = f"{server.endpoints.inference}/predictions/{name}/{model.version}"
                configs.append(Config(f"ts-{name}", label, "torchserve", url))
        (logs / "peer").mkdir()
        checkpoint = peer_checkpoint(logs / "peer", ROOT / "model_store" / models[0].archive)
        with (
            stack.webapp(server, logs) as (web, web_pid),
            stack.peer(checkpoint, logs) as (peer, peer_pid),
        ):
            default = models[0]
            configs.append(
                Config(
                    "webapp",
                    f"web app /api/predict -> {default.name} {default.version}",
                    "webapp",
                    f"{web}/api/predict?model={default.name}",
                )
            )
            configs.append(
                Config(
                    "baseline",
                    "BASELINE: original design (Flask dev server, shared file)",
                    "baseline",
                    f"{peer}/predict",
                    json_body=True,
                )
            )
            limits: dict[tuple[str, str], list[dict]] = {(m.name, "archive"): [] for m in models}
            limits[models[0].name, "fp32"] = []
            by_name = {m.name: m for m in models}

            def measure_limits(repeat: int) -> None:
                for name, precision in limits:
                    arithmetic = None if precision == "archive" else precision
                    measured = limit_once(by_name[name], args.duration, arithmetic)
                    limits[name, precision].append(measured)
                    got = [r["images_per_s"] for r in measured["results"]]
                    log(
                        f"  repeat {repeat + 1}/{args.repeats} limit {name} ({precision}): "
                        f"{got[0]:.0f} / {got[1]:.0f} images/s at batch 1 / 8"
                    )

            rows = scenarios.run_all(
                configs,
                pngs,
                args.concurrency,
                args.repeats,
                args.duration,
                args.warmup,
                log,
                measure_limits,
                lambda: {
                    **stack.torchserve_processes(server),
                    "webapp": [web_pid],
                    "baseline": [peer_pid],
                },
            )
        metrics = stack.backend_metrics(server)
    info = {"batching": batching, "torchserve_metrics": metrics}
    return rows, limit_rows(limits, models), info


def training_rows(logs: Path) -> list[dict]:
    out = logs / "train.json"
    script = ROOT / "benchmarks" / "train_throughput.py"
    settings = ["--variant", "eager", "--steps", "2", "--repeats", "3", "--warmup", "1"]
    subprocess.run(
        [sys.executable, str(script), *settings, "--json", str(out)],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(out.read_text())["rows"]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.concurrency = sorted({int(n) for n in args.concurrency.split(",")})
    started = time.time()
    models = stack.default_models()
    results: dict = {
        "meta": {
            "argv": sys.argv[1:] if argv is None else argv,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "models": [vars(m) for m in models],
            **stack.environment_note(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="emnist-bench-") as folder:
        logs = Path(folder)
        log("serving and the in-process limit, interleaved ...")
        results["serving"], results["limit"], results["serving_info"] = serving(args, models, logs)
        if not args.no_cold_start:
            pngs = drawings(1)[0][1]
            results["cold_start"] = {
                target: [cold_start.measure(target, pngs) for _ in range(args.cold_repeats)]
                for target in ("serve", "demo")
            }
            log(f"cold start: {results['cold_start']}")
        if not args.no_training:
            log("training throughput ...")
            results["training"] = training_rows(logs)
    results["meta"]["elapsed_s"] = time.time() - started
    results["meta"]["load_avg_1m_end"] = stack.environment_note()["load_avg_1m"]
    results["summary"] = report.summary(results)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", results)
    atomic_write(args.out / "results.md", report.markdown(results).encode())
    atomic_write(args.out / "latency_vs_concurrency.png", report.plot_png(results))
    log(
        f"wrote {args.out}/results.json, results.md, latency_vs_concurrency.png "
        f"in {results['meta']['elapsed_s']:.0f} s"
    )
    return results


if __name__ == "__main__":
    main()
