"""BASELINE, NOT FOR USE: the original project's serving design, reproduced for `make bench`.

    python -m benchmarks.peer_baseline CHECKPOINT --port 5099 [--workdir DIR]

What the original project did, kept faithfully so the comparison is measured, not quoted:
the model lives in the web process, Flask's development server answers (threaded, as
`app.run()` is by default), and every request's drawing is written to ONE fixed file, read back
and predicted. Two requests in flight at once overwrite each other's file: one client gets the
prediction for another client's drawing, or the read meets a half-written file and fails.
The preprocessing is the original's too: grayscale, resize to 28x28, invert, divide by the
image's maximum (no crop, no centring). The model is `cnn-seed`, the original architecture.
Everything this project serves does the opposite (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import numpy as np
import torch
from flask import Flask, jsonify, request
from PIL import Image

from emnist.checkpoint import load_checkpoint, model_from_checkpoint


def create_app(checkpoint: Path, workdir: Path) -> Flask:
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    labels = list(ckpt["class_names"])
    workdir.mkdir(parents=True, exist_ok=True)
    fixed_file = workdir / "output.png"  # the original's output/output.png, shared by all
    app = Flask(__name__)

    @app.get("/")
    def index():
        return "baseline up"

    @app.post("/predict")
    def predict():
        data_url = request.get_json()["image"]
        fixed_file.write_bytes(base64.b64decode(data_url.split(",", 1)[-1]))
        image = Image.open(fixed_file).convert("L").resize((28, 28))
        pixels = 255 - np.asarray(image, dtype=np.float32)
        pixels /= pixels.max()  # the original's per-image maximum (0/0 on a blank canvas)
        x = torch.from_numpy(pixels.T.copy()).reshape(1, 1, 28, 28)
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)[0]
        top = torch.topk(probabilities, 5)
        predictions = [
            {"label": labels[i], "probability": round(float(p), 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        return jsonify({"label": predictions[0]["label"], "predictions": predictions})

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a cnn-seed checkpoint")
    parser.add_argument("--port", type=int, default=5099)
    parser.add_argument("--workdir", type=Path, default=Path("logs/peer"))
    args = parser.parse_args(argv)
    # Loopback only, unlike the original (which listened on every interface).
    create_app(args.checkpoint, args.workdir).run(host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
