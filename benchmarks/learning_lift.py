"""The learning loop's lift, measured: simulated writers correct the app, then learn and promote.

    .venv/bin/python benchmarks/learning_lift.py [--writers 10] [--out docs/learning_lift.json]

Writers draw in the handwriting font families held out of training (never Hershey fonts), each
with a seed of their own: every character of the 47 classes twice. The first drawing of each
character goes through the real web app (`/api/predict`, then `/api/feedback` with the right
character); the second is kept back as that writer's held-out drawing. Then, on a copy of the
store with the current default of `emnist-cnn`: `release.learn` (the full EMNIST pool, one
epoch) and `release.promote` (the gate, through TorchServe). Reported: top-1 of the default and
of the candidate on the writers' held-out drawings (offline, each archive's own handler) and on
the complete bymerge test set, with the gate's verdict. Scratch files stay in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import requests
from PIL import ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emnist.labels import CHARACTERS, label_of
from mar import archive
from release import gate, learn, ledger
from release import promote as promotion
from serving import processes, torchserve
from training import handwriting_fonts as hw
from training.protocol import PROJECT_ROOT, load_data

MODEL = "emnist-cnn"


def drawings(writer: int) -> list[tuple[str, bytes, bytes]]:
    """(character, drawing to correct, held-out drawing) for every character."""
    family = hw.family(hw.HELD_OUT[writer % len(hw.HELD_OUT)])
    rng = np.random.default_rng(5000 + writer)
    font = ImageFont.truetype(str(hw.FONT_ROOT / family.files[0]), 160)
    result = []
    for char in CHARACTERS:
        if char.islower() and label_of(char) == char and not family.lower_case:
            continue  # a capitals-only hand has no lower case of its own
        pngs = []
        for _ in range(2):
            buffer = io.BytesIO()
            hw.render(char, font.font_variant(size=int(rng.integers(*hw.EM_PX))), rng).save(
                buffer, format="PNG"
            )
            pngs.append(buffer.getvalue())
        result.append((char, *pngs))
    return result


def send_corrections(url: str, writers: int) -> tuple[int, list[tuple[str, bytes]]]:
    sent, kept = 0, []
    for writer in range(writers):
        for char, shown, held in drawings(writer):
            files = {"image": ("drawing.png", shown, "image/png")}
            answer = requests.post(f"{url}/api/predict", files=files, timeout=60).json()
            response = requests.post(
                f"{url}/api/feedback",
                files=files,
                data={
                    "label": char,
                    "writer": f"lift{writer:03d}simulated",
                    "model": answer["model"],
                    "version": answer["version"],
                    "predicted": answer["predictions"][0]["label"],
                },
                timeout=60,
            )
            response.raise_for_status()
            sent += 1
            kept.append((label_of(char), held))
    return sent, kept


def top1(mar: Path, kept: list[tuple[str, bytes]]) -> float:
    labels = [label for label, _ in kept]
    answers = gate.offline_top1(mar, [png for _, png in kept])
    return float(np.mean([a == b for a, b in zip(answers, labels, strict=True)]))


def bymerge_top1(mar: Path) -> float:
    bundle = load_data(protocol="emnist47")
    probabilities, _ = archive.probabilities(mar, bundle.test_images)
    return float(np.mean(probabilities.argmax(axis=1) == bundle.test_labels))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=10)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "learning_lift.json")
    parser.add_argument(
        "--learn-arg", action="append", default=[], help="e.g. --learn-arg=--epochs=2"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="learning-lift-") as folder:
        tmp = Path(folder)
        os.environ["EMNIST_LEDGER"] = str(tmp / "ledger.jsonl")
        defaults = ledger.current_defaults()
        base = PROJECT_ROOT / "model_store" / f"{MODEL}-{defaults[MODEL]}.mar"
        store = tmp / "model_store"
        store.mkdir()
        shutil.copy2(base, store / base.name)
        config = tmp / "config.properties"
        shutil.copy2(PROJECT_ROOT / "config.properties", config)
        ledger.write_defaults({MODEL: defaults[MODEL]}, config)
        db = tmp / "feedback.sqlite3"
        ports = torchserve.Ports(*processes.free_ports(5))
        with processes.torchserve_running(
            config, tmp / "logs", model_store=store, ports=ports
        ) as ts:
            env = {**os.environ, "EMNIST_FEEDBACK_DB": str(db)}
            with processes.webapp(ts.endpoints, tmp / "webapp.log", env=env) as (url, _):
                sent, kept = send_corrections(url, args.writers)
            candidate = learn.main(
                [
                    "--model",
                    MODEL,
                    "--db",
                    str(db),
                    "--store",
                    str(store),
                    "--runs",
                    str(tmp / "runs"),
                    "--config",
                    str(config),
                    *args.learn_arg,
                ]
            )
            promoting = [
                "--logs",
                str(tmp / "logs"),
                "--store",
                str(store),
                "--config",
                str(config),
            ]
            promoting += ["promote", "--model", MODEL, "--version", candidate.stem.split("-")[-1]]
            try:
                verdict = promotion.main(promoting)
            except SystemExit:
                verdict = next(e for e in ledger.entries() if e["event"] == "gate")
        result = {
            "writers": args.writers,
            "families": list(hw.HELD_OUT),
            "corrections_sent": sent,
            "heldout_drawings": len(kept),
            "default": {"version": defaults[MODEL], "writers_heldout_top1": top1(base, kept)},
            "candidate": {
                "version": candidate.stem.split("-")[-1],
                "writers_heldout_top1": top1(candidate, kept),
            },
            "gate": {
                "passed": verdict["passed"],
                "reasons": verdict["reasons"],
                "figures": verdict["figures"],
            },
        }
        result["default"]["bymerge_top1"] = bymerge_top1(base)
        result["candidate"]["bymerge_top1"] = bymerge_top1(candidate)
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
