"""A small stand-in for TorchServe 0.12 on loopback, for the web app's tests without Java:
emnist-cnn 1.0 (default) and 2.0 and emnist-rcnn 1.0, answering as TorchServe does (success,
404, 400); it records what it was sent. The real TorchServe runs in tests/service/."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import ClassVar


class FakeTorchServe(BaseHTTPRequestHandler):
    """emnist-cnn 1.0 (default) and 2.0, emnist-rcnn 1.0; records what it was sent."""

    seen: ClassVar[list[dict]] = []  # shared on purpose: the tests read what was sent
    models: ClassVar[dict[str, list[str]]] = {"emnist-cnn": ["1.0", "2.0"], "emnist-rcnn": ["1.0"]}

    def log_message(self, *args):  # keep the test output clean
        pass

    def reply(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0].strip("/").split("/")
        if path == ["ping"]:
            return self.reply(200, {"status": "Healthy"})
        if path == ["models"]:
            return self.reply(200, {"models": [{"modelName": n} for n in self.models]})
        if path[0] == "models" and path[1] in self.models:
            versions = self.models[path[1]] if path[2:] == ["all"] else ["1.0"]
            return self.reply(200, [{"modelVersion": v} for v in versions])
        self.reply(404, {"code": 404, "message": "Model not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _, name, *version = self.path.strip("/").split("/")
        if name not in self.models or (version and version[0] not in self.models[name]):
            return self.reply(404, {"code": 404, "message": f"Model not found: {name}"})
        self.seen.append({"headers": dict(self.headers), "body": body, "path": self.path})
        if body.startswith(b"BAD"):
            return self.reply(400, {"code": 400, "message": "the image data is corrupt"})
        topk = int(self.headers.get("X-TopK", 5))
        predictions = [{"label": label, "probability": 0.5} for label in "LI1C7"[:topk]]
        version = version[0] if version else "1.0"
        self.reply(200, {"model": name, "version": version, "empty": False,
                         "predictions": predictions, "batch_size": 1})  # fmt: skip
