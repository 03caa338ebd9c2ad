"""People's corrections as data: counts, and an EMNIST-format export that training reads.

    python -m training.feedback stats                    # per class, writer, model version
    python -m training.feedback export --out data/feedback/export

`export` reads a consistent snapshot of the store (EMNIST_FEEDBACK_DB, default
data/feedback/feedback.sqlite3) and writes, atomically (a temporary folder renamed into place):

    feedback-{train,heldout}-images-idx3-ubyte.gz   28x28 uint8, EMNIST orientation
    feedback-{train,heldout}-labels-idx1-ubyte.gz   indices into the 47 bymerge classes
    feedback-mapping.txt                            `<label> <ASCII code>`, as EMNIST's
    {train,heldout}-originals/00000.png ...         the pictures as people sent them, in order
    manifest.json                                   counts, writers, the snapshot's SHA-256

The split is by writer, never by image: a writer's corrections are all in one part, so the
held-out part measures how a model does for people it has not learned from. A writer is held out
when a hash of their id falls in the first `--heldout-fraction` of the hash range: a decision
about that writer alone, so it never changes as other writers arrive, and a writer trained on
in one round is never held out in the next. `train.py --feedback DIR` adds the training part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from emnist.files import atomic_write_json
from feedback import store
from training.emnist import read_idx, write_idx
from training.protocol import PROJECT_ROOT

DEFAULT_DB = store.DEFAULT_PATH
# bymerge's 47 classes in label order (emnist-bymerge-mapping.txt).
CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
PARTS = ("train", "heldout")


def file_name(part: str, kind: str) -> str:
    return f"feedback-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"


def held_out(writer: str, fraction: float) -> bool:
    """Whether `writer` belongs to the held-out part (see the module docstring)."""
    return int(hashlib.sha256(writer.encode()).hexdigest()[:16], 16) < fraction * 2**64


def split_writers(writers: list[str], fraction: float) -> set[str]:
    """The held-out writers among `writers`."""
    return {w for w in set(writers) if held_out(w, fraction)}


def export(db: Path, out: Path, heldout_fraction: float = 0.2) -> dict:
    """Write the export (see the module docstring) and return its manifest."""
    db, out = Path(db), Path(out)
    if not db.exists():
        raise SystemExit(f"error: no feedback store at {db} (EMNIST_FEEDBACK_DB)")
    if out.exists() and (
        db.resolve().is_relative_to(out.resolve()) or not (out / "manifest.json").exists()
    ):
        raise SystemExit(f"error: {out} is not an earlier export: choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with store.opened(db) as connection:
            digest = store.snapshot(connection, staging / "snapshot.sqlite3")
        with store.opened(staging / "snapshot.sqlite3") as snapshot:
            records = store.rows(snapshot)
        (staging / "snapshot.sqlite3").unlink()
        for suffix in ("-wal", "-shm"):
            (staging / f"snapshot.sqlite3{suffix}").unlink(missing_ok=True)
        heldout = split_writers([r["writer"] for r in records], heldout_fraction)
        manifest = {
            "database": str(db),
            "database_sha256": digest,
            "heldout_fraction": heldout_fraction,
            "classes": CLASSES,
            "parts": {},
        }
        for part in PARTS:
            chosen = [r for r in records if (r["writer"] in heldout) == (part == "heldout")]
            images = (
                np.stack(
                    [np.frombuffer(r["pixels"], dtype=np.uint8).reshape(28, 28) for r in chosen]
                )
                if chosen
                else np.zeros((0, 28, 28), dtype=np.uint8)
            )
            labels = np.array([CLASSES.index(r["label"]) for r in chosen], dtype=np.uint8)
            write_idx(staging / file_name(part, "images"), images)
            write_idx(staging / file_name(part, "labels"), labels)
            originals = staging / f"{part}-originals"
            originals.mkdir()
            for i, r in enumerate(chosen):  # the gate sends these through TorchServe
                (originals / f"{i:05d}.png").write_bytes(r["image_png"])
            manifest["parts"][part] = {
                "images": len(chosen),
                "writers": sorted({r["writer"] for r in chosen}),
                "per_class": dict(sorted(Counter(r["label"] for r in chosen).items())),
                "model_versions": dict(
                    Counter(f"{r['model']} {r['version']}" for r in chosen).most_common()
                ),
            }
        mapping = "".join(f"{i} {ord(c)}\n" for i, c in enumerate(CLASSES))
        (staging / "feedback-mapping.txt").write_text(mapping)
        atomic_write_json(staging / "manifest.json", manifest)
        old = out.with_name(f".{out.name}-old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)  # kept until the new export is in place
        os.replace(staging, out)  # the export appears whole or not at all
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def load_export(folder: Path, part: str = "train") -> tuple[np.ndarray, list[str], dict]:
    """(uint8 images, class names, manifest) of one part of an export."""
    manifest = json.loads((folder / "manifest.json").read_text())
    images = read_idx(folder / file_name(part, "images"))
    labels = read_idx(folder / file_name(part, "labels"))
    return images, [manifest["classes"][i] for i in labels], manifest


def load_originals(folder: Path, part: str = "heldout") -> tuple[list[bytes], list[str]]:
    """The pictures of one part as people sent them, with their class names."""
    _, names, _ = load_export(folder, part)
    files = sorted((folder / f"{part}-originals").glob("*.png"))
    if len(files) != len(names):
        raise ValueError(f"{folder}: {len(files)} originals for {len(names)} {part} labels")
    return [f.read_bytes() for f in files], names


def stats(db: Path) -> dict:
    with store.opened(db) as connection:
        records = store.rows(connection)
    return {
        "corrections": len(records),
        "per_class": dict(sorted(Counter(r["label"] for r in records).items())),
        "per_writer": dict(Counter(r["writer"] for r in records).most_common()),
        "per_model_version": dict(
            Counter(f"{r['model']} {r['version']}" for r in records).most_common()
        ),
        "corrected": sum(1 for r in records if r["predicted"] not in (None, r["label"])),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m training.feedback", description=__doc__)
    parser.add_argument(
        "--db", type=Path, default=Path(os.environ.get("EMNIST_FEEDBACK_DB") or DEFAULT_DB)
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stats", help="counts per class, writer and model version")
    exporter = commands.add_parser("export", help="write the EMNIST-format export")
    exporter.add_argument("--out", type=Path, default=PROJECT_ROOT / "data" / "feedback" / "export")
    exporter.add_argument("--heldout-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    if args.command == "stats":
        if not args.db.exists():
            raise SystemExit(f"error: no feedback store at {args.db} (EMNIST_FEEDBACK_DB)")
        result = stats(args.db)
        json.dump(result, sys.stdout, indent=2)
        print()
        return result
    manifest = export(args.db, args.out, args.heldout_fraction)
    parts = ", ".join(f"{p} {manifest['parts'][p]['images']}" for p in PARTS)
    print(
        f"exported {parts} corrections -> {args.out} (database {manifest['database_sha256'][:12]})"
    )
    return manifest


if __name__ == "__main__":
    main()
