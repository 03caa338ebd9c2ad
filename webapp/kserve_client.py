"""The web app's client for a KServe endpoint speaking the KServe v1 protocol.

The same interface as `TorchServeClient` (predict, models, model_names, ping) and the same error
mapping, so api.py does not know which one it talks to. It calls only the inference paths that
reach a KServe pod, never a management API:

- predict: POST /v1/models/<model>:predict with {"instances": [{"data": <base64>, "topk": k}]};
  the handler's answer is `predictions[0]`, the shape TorchServe's /predictions returns.
- the model list: GET /v1/models (KServe's model server answers {"models": [...]}); TorchServe
  itself under TS_SERVICE_ENVELOPE=kserve answers 404 there, so the configured names
  (EMNIST_MODELS) are used instead.
- health: GET /v1/models/<model> -> {"ready": true} for every model; both KServe's model server
  and TorchServe under the envelope answer it.

KServe serves one version per model and revision and its URLs carry none: the version is the one
the answers report. /api/models asks each model with a 1-pixel blank PNG (answered `empty`, no
state kept here), and a request for another version than the one that answers is a 404.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from webapp.torchserve_client import RETRY_AFTER_S, Prediction, TorchServeClient, TorchServeError

PROTOCOLS = ("torchserve", "kserve-v1")


def _blank_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 255).save(buffer, format="PNG")
    return buffer.getvalue()


PROBE_PNG = _blank_png()


class KServeV1Client(TorchServeClient):
    SERVER = "the KServe endpoint"

    def __init__(
        self,
        inference_url: str,
        *,
        models: Iterable[str] = (),
        host_header: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        token: str | None = None,
        token_file: str | Path | None = None,
        pool_size: int = 16,
    ):
        # No management URL: nothing behind KServe's ingress would answer it.
        super().__init__(
            inference_url,
            "",
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            token=token,
            token_file=token_file,
            pool_size=pool_size,
        )
        self.configured_models = sorted({m.strip() for m in models if m.strip()})
        if host_header:
            # Calling through the ingress IP: the Host header picks the InferenceService.
            self.default_headers["Host"] = host_header

    def predict(
        self,
        model: str,
        version: str | None,
        image: bytes,
        content_type: str,
        topk: int,
        want_input: bool = False,
    ) -> Prediction:
        answer = self._predict(model, image, topk, want_input)
        served = answer.body.get("version")
        if version is not None and served != version:
            raise TorchServeError(
                404,
                f"unknown version {version} of model {model}: this KServe endpoint serves "
                f"{model} {served} (one version per revision; GET /api/models lists it)",
            )
        return answer

    def models(self) -> list[dict[str, Any]]:
        """[{"name", "default", "versions": [default]}]: the version each model answers with."""
        models = []
        for name in self.model_names():
            version = self._predict(name, PROBE_PNG, 1).body.get("version")
            models.append({"name": name, "default": version, "versions": [version]})
        return models

    def model_names(self) -> list[str]:
        response = self._request("GET", self.inference_url + "/v1/models", "inference")
        if response.status_code == 404 or response.status_code == 405:
            if self.configured_models:
                return list(self.configured_models)
            raise TorchServeError(
                502,
                f"{self.SERVER} does not list its models (GET /v1/models answered "
                f"{response.status_code}): name them with EMNIST_MODELS=emnist-cnn,emnist-rcnn",
            )
        listed = self._json(response)
        names = listed.get("models") if isinstance(listed, dict) else None
        if not isinstance(names, list):
            raise TorchServeError(502, f"{self.SERVER} answered GET /v1/models without models")
        return sorted(str(n) for n in names)

    def ping(self) -> dict[str, Any]:
        """{"status": "Healthy"} when every model says {"ready": true}, else which are not."""
        not_ready = []
        for name in self.model_names():
            url = f"{self.inference_url}/v1/models/{name}"
            response = self._request("GET", url, "inference")
            body = self._json(response) if response.status_code != 404 else {}
            if not (isinstance(body, dict) and body.get("ready") is True):
                not_ready.append(name)
        if not_ready:
            return {"status": f"not ready: {', '.join(not_ready)}"}
        return {"status": "Healthy"}

    def _predict(self, model: str, image: bytes, topk: int, want_input: bool = False) -> Prediction:
        instance = {"data": base64.b64encode(image).decode("ascii"), "topk": topk}
        if want_input:
            instance["input"] = True
        body = json.dumps({"instances": [instance]}).encode()
        url = f"{self.inference_url}/v1/models/{model}:predict"
        headers = {"Content-Type": "application/json"}
        start = time.perf_counter()
        response = self._request("POST", url, "inference", body, headers)
        latency_ms = round((time.perf_counter() - start) * 1000, 1)
        if response.status_code == 404:
            raise TorchServeError(
                404, f"unknown model {model}: GET /api/models lists what is served"
            )
        envelope = self._json(response)
        answers = envelope.get("predictions") if isinstance(envelope, dict) else None
        if not isinstance(answers, list) or len(answers) != 1 or not isinstance(answers[0], dict):
            raise TorchServeError(502, f"{self.SERVER} answered without one prediction")
        return Prediction(answers[0], latency_ms)

    def _error_message(self, body: Any) -> Any:
        # The envelope puts the handler's error in predictions[0]; KServe's server uses "error".
        if isinstance(body, dict):
            answers = body.get("predictions")
            if isinstance(answers, list) and answers and isinstance(answers[0], dict):
                return answers[0].get("message")
            return body.get("message") or body.get("error")
        return None

    def _unreachable(self, url: str) -> TorchServeError:
        base = "/".join(url.split("/", 3)[:3])
        return TorchServeError(
            503,
            f"the KServe endpoint is not reachable at {base}: check EMNIST_INFERENCE_URL and "
            "that the InferenceService is READY (kubectl get isvc), then try again",
            retry_after=RETRY_AFTER_S,
        )
