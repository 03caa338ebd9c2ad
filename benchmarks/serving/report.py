"""Turn bench results into the targets summary, the Markdown tables and the plot."""

from __future__ import annotations

import io
import statistics

from benchmarks.serving.scenarios import fmt


def _row(results: dict, config: str, clients: int) -> dict | None:
    return next(
        (r for r in results["serving"] if r["config"] == config and r["clients"] == clients),
        None,
    )


def _get(row: dict | None, key: str):
    return None if row is None else row[key]


def summary(results: dict) -> dict:
    """The issue's targets for the first default model (the CNN) and the measured ratios."""
    model = results["meta"]["models"][0]["name"]
    batched = f"ts-{model}"  # the archive's own batching: what the web app calls
    fp32 = f"{batched}-fp32"  # the same archive answering in float32: reported, not a target
    served = sorted(
        {
            r["config"]
            for r in results["serving"]
            if r["config"] == batched or r["config"].startswith(f"{batched}-")
        }
        - {fp32}
    )
    most = max(r["clients"] for r in results["serving"])
    limit = next(
        r
        for r in results["limit"]
        if r["model"] == model and r["batch"] > 1 and r.get("precision", "archive") == "archive"
    )  # the batched in-process limit at the served thread count
    limit_fp32 = next(
        (
            r
            for r in results["limit"]
            if r["model"] == model and r["batch"] > 1 and r.get("precision") == "fp32"
        ),
        None,
    )
    ts_p50 = {k: _get(_row(results, k, 1), "p50_ms") for k in served}
    ts_rps = {k: _get(_row(results, k, most), "correct_rps") for k in served}
    best_rps = max((v for v in ts_rps.values() if v is not None), default=None)
    web = _row(results, "webapp", 1)
    web_rps = _get(_row(results, "webapp", most), "correct_rps")
    overhead = None if web is None or ts_p50[batched] is None else web["p50_ms"] - ts_p50[batched]
    base1, base8 = _row(results, "baseline", 1), _row(results, "baseline", most)
    demo = results.get("cold_start", {}).get("demo")
    demo_s = statistics.median(demo) if demo else None
    best_p50 = min((v for v in ts_p50.values() if v is not None), default=None)
    p50_at = min((k for k in ts_p50 if ts_p50[k] is not None), key=ts_p50.get, default=None)
    rps_at = max((k for k in ts_rps if ts_rps[k] is not None), key=ts_rps.get, default=None)
    ratio = best_rps / limit["images_per_s"] if best_rps else None
    return {
        "model": model,
        "clients_max": most,
        "torchserve_p50_ms": ts_p50,
        "torchserve_correct_rps_max_clients": ts_rps,
        "limit_batched_images_per_s": limit["images_per_s"],
        "float32": {
            "p50_ms_1_client": _get(_row(results, fp32, 1), "p50_ms"),
            "correct_rps_max_clients": _get(_row(results, fp32, most), "correct_rps"),
            "limit_batched_images_per_s": _get(limit_fp32, "images_per_s"),
        },
        "torchserve_vs_limit": ratio,
        "webapp_p50_overhead_ms": overhead,
        "webapp_rps_max_clients": web_rps,
        "demo_cold_start_s": demo_s,
        "baseline": {
            "p50_ms_1_client": _get(base1, "p50_ms"),
            "rps_max_clients": _get(base8, "throughput_rps"),
            "correct_rps_max_clients": _get(base8, "correct_rps"),
            "mixed_up_share": _get(base8, "mixed_up_share"),
            "failed_share": _get(base8, "failed_share"),
        },
        "torchserve_vs_baseline_correct_rps": (
            best_rps / base8["correct_rps"] if best_rps and base8 and base8["correct_rps"] else None
        ),
        "targets": [
            _target("TorchServe single-client p50 (ms)", best_p50, 3.0, "<=", p50_at),
            _target(f"predictions/s with {most} clients", best_rps, 1000.0, ">=", rps_at),
            _target("TorchServe / in-process batched limit", ratio, 0.5, ">=", rps_at),
            _target("web-app p50 overhead (ms)", overhead, 1.5, "<=", f"webapp - {batched}"),
            _target(f"web-app predictions/s with {most} clients", web_rps, 500.0, ">=", "webapp"),
            _target("make demo to first prediction (s)", demo_s, 10.0, "<=", "median"),
        ],
    }


def _target(name: str, value, goal: float, op: str, where: str | None) -> dict:
    met = None if value is None else (value <= goal if op == "<=" else value >= goal)
    return {"target": name, "goal": f"{op} {goal:g}", "measured": value, "met": met, "at": where}


def markdown(results: dict) -> str:
    meta, s = results["meta"], results["summary"]
    lines = [
        "# Serving benchmark results",
        "",
        f"Run {meta['started_utc']}, {meta['elapsed_s']:.0f} s, {meta['cpus']} CPUs, "
        f"load average {meta['load_avg_1m']:.1f} at start / {meta['load_avg_1m_end']:.1f} at "
        f"end, torch {meta['torch']}, GPU: {meta['gpu'] or 'none'}. Arguments: "
        f"`{' '.join(meta['argv']) or '(defaults)'}`. Medians over repeats; compare rows of "
        "this run with each other, not with other machines.",
        "",
        "## Targets (first default model, " + s["model"] + ")",
        "",
        "| target | goal | measured | met | where |",
        "|---|---|---:|---|---|",
    ]
    for t in s["targets"]:
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(
            f"| {t['target']} | {t['goal']} | {fmt(t['measured'], 2)} | {met} | {t['at'] or ''} |"
        )
    lines += [
        "",
        "## Serving (one load-generator process, keep-alive connections, closed loop)",
        "",
        "| configuration | clients | p50 ms | p99 ms | answers/s | correct/s | mixed up | "
        "failed | load-gen CPU | server CPU ms per answer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(results["serving"], key=lambda r: (r["label"], r["clients"])):
        lines.append(
            f"| {r['label']} | {r['clients']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
            f"{fmt(r['throughput_rps'], 0)} | {fmt(r['correct_rps'], 0)} | "
            f"{r['mixed_up_share']:.0%} | {r['failed_share']:.0%} | "
            f"{fmt(100 * r['loadgen_cpu_fraction'], 0)}% | {cpu_parts(r)} |"
        )
    lines += [
        "",
        "## The limit: the handler in-process (no HTTP, no frontend, no worker protocol)",
        "",
        "| model | threads | batch | images/s | ms/image | preprocess | inference | postprocess |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["limit"]:
        p = r["phase_ms_per_image"]
        arithmetic = " (float32)" if r.get("precision") == "fp32" else ""
        lines.append(
            f"| {r['model']} {r['version']}{arithmetic} | {r['threads']} | {r['batch']} | "
            f"{r['images_per_s']:.0f} | {r['per_image_ms']:.2f} | {p['preprocess']:.2f} | "
            f"{p['inference']:.2f} | {p['postprocess']:.2f} |"
        )
    metrics = results["serving_info"]["torchserve_metrics"]
    if metrics:
        lines += [
            "",
            "## TorchServe's own metrics over the whole run (mean per request)",
            "",
            "| model | requests | queue ms | worker round trip ms |",
            "|---|---:|---:|---:|",
        ]
        for name, m in sorted(metrics.items()):
            lines.append(
                f"| {name} | {m['requests']:.0f} | {m['queue_ms_mean']:.2f} | "
                f"{m['inference_ms_mean']:.2f} |"
            )
    b = s["baseline"]
    lines += [
        "",
        "## Against the original design",
        "",
        f"Baseline: p50 {fmt(b['p50_ms_1_client'])} ms with one client; with "
        f"{s['clients_max']} clients {fmt(b['rps_max_clients'], 0)} answers/s, "
        f"{fmt(b['correct_rps_max_clients'], 0)} of them correct/s, "
        f"{fmt(100 * (b['mixed_up_share'] or 0), 0)}% answered with another client's drawing, "
        f"{fmt(100 * (b['failed_share'] or 0), 0)}% of requests failed. TorchServe's best "
        f"correct answers/s with {s['clients_max']} clients: "
        f"{fmt(s['torchserve_vs_baseline_correct_rps'], 2)}x the baseline's.",
    ]
    if "cold_start" in results:
        lines += ["", "## Cold start (launch to first successful prediction)", ""]
        for target, values in results["cold_start"].items():
            runs = ", ".join(f"{v:.1f}" for v in values)
            lines.append(f"- `make {target}`: median {statistics.median(values):.1f} s ({runs})")
    if "training" in results:
        lines += [
            "",
            "## Training throughput (benchmarks/train_throughput.py, eager, batch 128)",
            "",
            "| arch | params | images/s | range |",
            "|---|---:|---:|---:|",
        ]
        for r in results["training"]:
            lines.append(
                f"| {r['arch']} | {r['params'] / 1e6:.2f}M | {r['images_per_s']:.0f} | "
                f"{r['min']:.0f}-{r['max']:.0f} |"
            )
    return "\n".join(lines) + "\n"


PARTS = {
    "torchserve": ("ts_frontend", "ts_workers"),
    "webapp": ("webapp", "ts_frontend", "ts_workers"),
    "baseline": ("baseline",),
}
PART_NAMES = {"ts_frontend": "frontend", "ts_workers": "worker", "webapp": "app"}


def cpu_parts(row: dict) -> str:
    """`app 2.1 + frontend 0.6 + worker 3.0`: where the servers' CPU went, per answer."""
    cpu = row.get("cpu_ms_per_request") or {}
    parts = [p for p in PARTS.get(row["kind"], ()) if p in cpu]
    return " + ".join(f"{PART_NAMES.get(p, p)} {cpu[p]:.1f}" for p in parts) or "-"


def plot_png(results: dict) -> bytes:
    """Latency (p50 solid, p99 dashed) and correct answers/s against clients, per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = sorted({r["label"] for r in results["serving"]})
    for i, label in enumerate(labels):
        rows = sorted(
            (r for r in results["serving"] if r["label"] == label), key=lambda r: r["clients"]
        )
        x = [r["clients"] for r in rows]
        color = f"C{i}"
        left.plot(x, [r["p50_ms"] for r in rows], "o-", color=color, label=label)
        left.plot(x, [r["p99_ms"] for r in rows], "--", color=color, alpha=0.6)
        right.plot(x, [r["correct_rps"] for r in rows], "o-", color=color, label=label)
    left.set(xlabel="concurrent clients", ylabel="latency ms (p50 solid, p99 dashed)")
    left.set_yscale("log")
    right.set(xlabel="concurrent clients", ylabel="correct answers / s")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r["clients"] for r in results["serving"]}))
    right.legend(fontsize=7, loc="upper left")
    meta = results["meta"]
    fig.suptitle(
        f"emnist-serve on {meta['cpus']} CPUs (load avg {meta['load_avg_1m']:.1f}), "
        f"{meta['started_utc']}",
        fontsize=10,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
