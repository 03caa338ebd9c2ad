"""The web app's one client for TorchServe: predictions, the model list, reachability.

Kept-alive connections (webapp/upstream_http.py: per thread, about a fifth of the app's CPU per
prediction less than `requests`), bounded connect and read timeouts, and an optional bearer
token (TorchServe's token-auth mode). Every upstream failure becomes a `TorchServeError` carrying
the HTTP status the app answers with and a message a user can act on:

- not listening / connection refused or reset -> 503 with Retry-After
- connected but no answer within the read timeout -> 504
- unknown model or version (TorchServe 404) -> 404
- an image TorchServe refuses (TorchServe 4xx) -> 400 with its message
- TorchServe overloaded or a model without workers (503) -> 503 with Retry-After
- a worker that died with the request in flight (TorchServe 507 or 500 "Worker died.", it
  restarts it) -> 503 likewise
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from webapp import upstream_http

RETRY_AFTER_S = 5


class TorchServeError(RuntimeError):
    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Prediction:
    body: dict[str, Any]
    latency_ms: float


class TorchServeClient:
    # How messages name the server; the KServe client says "the KServe endpoint".
    SERVER = "TorchServe"

    def __init__(
        self,
        inference_url: str,
        management_url: str,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        token: str | None = None,
        token_file: str | Path | None = None,
        pool_size: int = 16,
    ):
        self.inference_url = inference_url.rstrip("/")
        self.management_url = management_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.token = token
        self.token_file = Path(token_file) if token_file else None
        # pool_size is kept for callers: connections are per server thread (waitress's 8).
        self.pool = upstream_http.Pool(connect_timeout, read_timeout)
        self.default_headers: dict[str, str] = {}

    def predict(
        self,
        model: str,
        version: str | None,
        image: bytes,
        content_type: str,
        topk: int,
        want_input: bool = False,
    ) -> Prediction:
        """The handler's answer; with `want_input`, also the 28x28 it read (archives since
        emnist-cnn 2.1 send it; older ones ignore the header)."""
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        # TorchServe 0.12 drops the query string of /predictions URLs: options go in headers.
        headers = {"Content-Type": content_type, "X-TopK": str(topk)}
        if want_input:
            headers["X-Input"] = "true"
        start = time.perf_counter()
        response = self._request("POST", self.inference_url + path, "inference", image, headers)
        latency_ms = round((time.perf_counter() - start) * 1000, 1)
        if response.status_code == 404:
            what = f"version {version} of model {model}" if version else f"model {model}"
            raise TorchServeError(404, f"unknown {what}: GET /api/models lists what is served")
        body = self._json(response)
        return Prediction(body, latency_ms)

    def models(self) -> list[dict[str, Any]]:
        """[{"name", "default", "versions": [...]}] for every registered model, by name."""
        names, token = [], None
        while True:
            params = {"limit": 100, **({"next_page_token": token} if token else {})}
            page = self._management(f"/models?{_query(params)}")
            names += [m["modelName"] for m in page.get("models", [])]
            token = page.get("nextPageToken")
            if not token:
                break
        models = []
        for name in sorted(names):
            default = self._management(f"/models/{name}")[0]["modelVersion"]
            versions = [v["modelVersion"] for v in self._management(f"/models/{name}/all")]
            models.append({"name": name, "default": default, "versions": sorted(versions)})
        return models

    def model_names(self) -> list[str]:
        page = self._management("/models?limit=100")
        return sorted(m["modelName"] for m in page.get("models", []))

    def ping(self) -> dict[str, Any]:
        response = self._request("GET", self.inference_url + "/ping", "inference")
        return self._json(response)

    def _management(self, path: str) -> Any:
        response = self._request("GET", self.management_url + path, "management")
        if response.status_code == 404:
            raise TorchServeError(404, "unknown model: GET /api/models lists what is served")
        return self._json(response)

    def _request(self, method, url, kind, data=None, headers=None) -> upstream_http.Response:
        headers = {**self.default_headers, **(headers or {}), **self._auth(kind)}
        try:
            return self.pool.request(method, url, data, headers)
        except upstream_http.ReadTimedOut as err:
            raise TorchServeError(
                504, f"{self.SERVER} did not answer within {self.timeout[1]:g} s: try again"
            ) from err
        except OSError as err:  # nothing listening, refused, reset, connection lost
            raise self._unreachable(url) from err

    def _unreachable(self, url: str) -> TorchServeError:
        base = url.split("/", 3)[:3]
        return TorchServeError(
            503,
            f"TorchServe is not reachable at {'/'.join(base)}: start it with `make serve` "
            "(or `make demo`), then try again",
            retry_after=RETRY_AFTER_S,
        )

    def _json(self, response: upstream_http.Response) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:300]}
        if response.ok:
            return body
        message = str(self._error_message(body) or f"{self.SERVER} answered {response.status_code}")
        if response.status_code == 503:
            raise TorchServeError(503, f"{self.SERVER} is busy: {message}", RETRY_AFTER_S)
        if response.status_code == 507 or "worker died" in message.lower():
            # TorchServe's "Worker died.": the model's worker crashed on a request in flight
            # and TorchServe is restarting it; the same request succeeds once it is back.
            # Usually a 507, but a 500 when the frontend notices the death while the batch is
            # being sent (seen under load in tests/e2e/test_faults.py).
            raise TorchServeError(
                503, f"the model's worker is restarting ({message}): try again", RETRY_AFTER_S
            )
        if "token" in message.lower() and "authorization" in message.lower():
            raise TorchServeError(502, "TorchServe refused the app's API key: check --token-file")
        if 400 <= response.status_code < 500:
            raise TorchServeError(400, message)
        raise TorchServeError(502, f"{self.SERVER} failed: {message}")

    def _error_message(self, body: Any) -> Any:
        return body.get("message") if isinstance(body, dict) else None

    def _auth(self, kind: str) -> dict[str, str]:
        key = self.token
        if self.token_file is not None:
            # TorchServe writes both keys to key_file.json and may renew them while running.
            try:
                key = json.loads(self.token_file.read_text())[kind]["key"]
            except (OSError, ValueError, KeyError) as err:
                raise TorchServeError(502, f"cannot read the {kind} key: {err}") from err
        return {"Authorization": f"Bearer {key}"} if key else {}


def _query(params: dict[str, Any]) -> str:
    return urlencode({k: str(v) for k, v in params.items()})
