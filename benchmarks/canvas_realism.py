"""Canvas realism: do the released models read drawings that do not come from EMNIST?

    .venv/bin/python benchmarks/canvas_realism.py               # or: make canvas-realism
    .venv/bin/python benchmarks/canvas_realism.py --preprocessing repo --brush-sweep 40 28 18 12

Every character of the 47 bymerge classes (62 characters: c, i, j, k, l, m, o, p, s, u, v, w,
x, y, z drawn in lower case too) is drawn from Hershey vector-font pen paths as the web app's
canvas draws it (evaluation/stroke_drawings.py: 280x280, black round brush of app.js's width on
white, random size, position, slant, rotation, wobble), encoded as PNG, then read by every
archive in model_store/ through the archive's own preprocessing and model
(evaluation/drawings.py); an archive reads only the characters it has classes for (the digits
archive: the digits). Reports top-1, top-3, top-1 with look-alikes merged (0/O, 1/I/l,
2/Z, 5/S, 9/g/q), per class, per font, and the most common confusions; `--brush-sweep N...`
repeats the overall figures with brushes of canvas/N pixels on the same pen paths.
Writes report.json and report.md into --out, atomically.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emnist.files import atomic_write, atomic_write_json  # noqa: E402
from evaluation.drawings import drawings_for, evaluate, load_released, load_trained  # noqa: E402
from evaluation.stroke_drawings import CANVAS_SIZE, FONTS, app_brush_px, drawing_set  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-store", type=Path, default=ROOT / "model_store")
    p.add_argument("--per-character", type=int, default=20, help="drawings per character")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--preprocessing",
        choices=("archive", "repo"),
        default="archive",
        help="archive: the preprocessing.py inside each .mar (what serving runs); "
        "repo: emnist/preprocessing.py of this checkout (a change not yet archived)",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="also read the drawings with this training checkpoint (repo preprocessing); "
        "repeatable",
    )
    p.add_argument(
        "--fonts", nargs="+", choices=FONTS, default=list(FONTS), help="Hershey styles to draw"
    )
    p.add_argument("--brush-sweep", type=float, nargs="*", default=[], metavar="N")
    p.add_argument(
        "--prior-tau",
        type=float,
        nargs="*",
        default=[],
        metavar="TAU",
        help="also score with logits - TAU * log(class frequency in the emnist47 training set) "
        "(needs ../shared/emnist): how much the training set's class imbalance costs",
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "canvas-realism")
    return p.parse_args(argv)


def emnist47_log_prior(class_names: list[str]) -> np.ndarray:
    """log of each class's share of the emnist47 training set the released models learned from."""
    from training.protocol import default_shared_root, load_protocol

    bundle = load_protocol("emnist47", default_shared_root())
    if bundle.class_names != class_names:
        sys.exit("error: the emnist47 classes differ from the archives' label map")
    counts = np.bincount(bundle.train_labels, minlength=len(class_names))
    return np.log(counts / counts.sum())


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    lines = [
        "# Canvas realism",
        "",
        f"{report['drawings']} drawings ({report['per_character']} per character, seed "
        f"{report['seed']}), brush {report['brush_px']:.1f} px on a {CANVAS_SIZE} px canvas, "
        f"preprocessing from: {report['preprocessing']}, fonts: {', '.join(report['fonts'])}.",
        "",
        "| archive | drawings | top-1 | top-3 | top-1, look-alikes merged | "
        "look-alikes among errors | letters: top-1 | letters: top-1, charset=letters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["models"].items():
        letters = r.get("letters")
        read = (
            f"{pct(letters['top1'])} | {pct(letters['top1_charset_letters'])}"
            if letters
            else "- | -"
        )
        lines.append(
            f"| {name} | {r['n']} | {pct(r['top1'])} | {pct(r['top3'])} | "
            f"{pct(r['top1_lookalikes_merged'])} | {pct(r['lookalike_share_of_errors'])} | "
            f"{read} |"
        )
    for name, r in report["models"].items():
        lines += ["", f"## {name}", "", "Top-1 per font: "]
        lines[-1] += ", ".join(f"{font} {pct(v)}" for font, v in r["per_font"].items())
        lines += ["", "Most common confusions (drawn -> read as, count): "]
        lines[-1] += ", ".join(
            f"{c['drawn']}->{c['read_as']} {c['count']}" for c in r["confusions"]
        )
        lines += ["", "| class | n | top-1 | top-3 |", "|---|---|---|---|"]
        for label, c in r["per_class"].items():
            lines.append(f"| {label} | {c['n']} | {pct(c['top1'])} | {pct(c['top3'])} |")
    if report["brush_sweep"]:
        lines += ["", "## Brush width (same pen paths)", "", "| brush | archive | top-1 | top-3 |"]
        lines.append("|---|---|---|---|")
        for row in report["brush_sweep"]:
            lines.append(
                f"| canvas/{row['divisor']:g} = {row['brush_px']:.1f} px | {row['archive']} | "
                f"{pct(row['top1'])} | {pct(row['top3'])} |"
            )
    if report["prior_correction"]:
        lines += ["", "## Training-prior correction", "", "| tau | archive | top-1 | top-3 |"]
        lines.append("|---|---|---|---|")
        for row in report["prior_correction"]:
            lines.append(
                f"| {row['tau']:g} | {row['archive']} | {pct(row['top1'])} | {pct(row['top3'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    archives = sorted(args.model_store.glob("*.mar"))
    if not archives and not args.checkpoint:
        sys.exit(f"error: no .mar archives in {args.model_store} and no --checkpoint")
    if len(set(args.checkpoint)) < len(args.checkpoint):
        sys.exit("error: a --checkpoint is named twice")
    started = time.perf_counter()
    released = [load_released(a, preprocessing=args.preprocessing) for a in archives]
    released += [load_trained(path) for path in args.checkpoint]
    brush = app_brush_px()
    fonts = tuple(args.fonts)
    drawings = drawing_set(args.per_character, seed=args.seed, brush=brush, fonts=fonts)
    report = {
        "drawings": len(drawings),
        "per_character": args.per_character,
        "seed": args.seed,
        "brush_px": brush,
        "preprocessing": args.preprocessing,
        "fonts": list(fonts),
        "models": {},
        "brush_sweep": [],
        "prior_correction": [],
    }
    for model in released:
        own = drawings_for(model, drawings)
        report["models"][model.name] = r = evaluate(model, own)
        print(
            f"{model.name}: top-1 {pct(r['top1'])} | top-3 {pct(r['top3'])} | "
            f"look-alikes merged {pct(r['top1_lookalikes_merged'])} ({len(own)} drawings)"
            + (
                f" | letters {pct(r['letters']['top1'])}, with charset=letters "
                f"{pct(r['letters']['top1_charset_letters'])}"
                if "letters" in r
                else ""
            )
        )
    # The prior correction and the brush sweep compare the 47-class models.
    released = [m for m in released if len(m.class_names) == 47]
    if args.prior_tau and released:
        log_prior = emnist47_log_prior(released[0].class_names)
    for tau in args.prior_tau:
        for model in released:
            r = evaluate(model, drawings, logit_offset=-tau * log_prior)
            report["prior_correction"].append(
                {"tau": tau, "archive": model.name}
                | {k: r[k] for k in ("top1", "top3", "top1_lookalikes_merged")}
            )
            print(f"prior tau {tau:g}: {model.name} top-1 {pct(r['top1'])}")
    for divisor in args.brush_sweep:
        width = CANVAS_SIZE / divisor
        swept = drawing_set(args.per_character, seed=args.seed, brush=width, fonts=fonts)
        for model in released:
            r = evaluate(model, swept)
            report["brush_sweep"].append(
                {"divisor": divisor, "brush_px": width, "archive": model.name}
                | {k: r[k] for k in ("top1", "top3", "top1_lookalikes_merged")}
            )
            print(f"brush canvas/{divisor:g}: {model.name} top-1 {pct(r['top1'])}")
    report["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(args.out / "report.json", report)
    atomic_write(args.out / "report.md", markdown(report).encode())
    print(f"-> {args.out / 'report.md'} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
