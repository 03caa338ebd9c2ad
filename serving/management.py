"""A small client for TorchServe's management API: list, describe, register, default, wait.

Token authorization: TorchServe writes `key_file.json` into its working directory; the keys are
read from it on every call (they can be refreshed while the server runs) and sent as
`Authorization: Bearer <key>`, the management key here and the inference key for predictions.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests


class ManagementError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoints:
    inference: str  # http://127.0.0.1:8080
    management: str
    metrics: str
    key_file: Path | None = None  # set in token mode

    def key(self, kind: str) -> str | None:
        """The current `management` or `inference` key, None without token authorization."""
        if self.key_file is None:
            return None
        try:
            return json.loads(self.key_file.read_text())[kind]["key"]
        except (OSError, ValueError, KeyError) as err:
            raise ManagementError(
                f"cannot read the {kind} key from {self.key_file}: {err}"
            ) from err

    def headers(self, kind: str) -> dict[str, str]:
        key = self.key(kind)
        return {"Authorization": f"Bearer {key}"} if key else {}


class Management:
    def __init__(self, endpoints: Endpoints, timeout: float = 30):
        self.endpoints = endpoints
        self.timeout = timeout

    def _call(self, method: str, path: str, **params) -> Any:
        url = f"{self.endpoints.management}{path}"
        try:
            response = requests.request(
                method,
                url,
                params=params or None,
                headers=self.endpoints.headers("management"),
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            raise ManagementError(f"{method} {url}: TorchServe is not answering ({err})") from err
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        if not response.ok:
            message = body.get("message", body) if isinstance(body, dict) else body
            raise ManagementError(f"{method} {path}: {response.status_code} {message}")
        return body

    def model_names(self) -> list[str]:
        names, token = [], None
        while True:
            page = self._call(
                "GET", "/models", limit=100, **({"next_page_token": token} if token else {})
            )
            names += [m["modelName"] for m in page.get("models", [])]
            token = page.get("nextPageToken")
            if not token:
                return names

    def versions(self, name: str) -> list[dict]:
        """Every registered version of `name` with its workers (TorchServe's description)."""
        return self._call("GET", f"/models/{name}/all")

    def default_version(self, name: str) -> str:
        return self._call("GET", f"/models/{name}")[0]["modelVersion"]

    def describe(self, name: str, version: str) -> dict:
        return self._call("GET", f"/models/{name}/{version}")[0]

    def register(self, archive: str, batching: tuple[int, int] | None = None) -> str:
        """Register `archive` (a file name in the model store); workers from its config.
        `batching` (batch size, delay ms; `torchserve.archive_batching`) is passed explicitly:
        TorchServe 0.12 reads an archive's own delay of 0 as 100 ms, but takes 0 from here."""
        options = {}
        if batching is not None:
            options = {"batch_size": batching[0], "max_batch_delay": batching[1]}
        return self._call("POST", "/models", url=archive, synchronous="true", **options)["status"]

    def unregister(self, name: str, version: str) -> str:
        return self._call("DELETE", f"/models/{name}/{version}")["status"]

    def set_default(self, name: str, version: str) -> str:
        return self._call("PUT", f"/models/{name}/{version}/set-default")["status"]

    def wait_ready(self, wanted: list[tuple[str, str]], timeout: float, alive=lambda: True) -> None:
        """Wait until every (name, version) has all its minWorkers workers READY."""
        deadline = time.monotonic() + timeout
        pending = list(wanted)
        while True:
            if not alive():
                raise ManagementError("TorchServe exited while its models were loading")
            # Errors mean not listening yet, or a model still registering: ask again.
            with contextlib.suppress(ManagementError):
                pending = [nv for nv in pending if not self._ready(*nv)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ManagementError(
                    f"not READY after {timeout:.0f} s: "
                    + ", ".join(f"{name} {version}" for name, version in pending)
                )
            time.sleep(0.5)

    def _ready(self, name: str, version: str) -> bool:
        info = self.describe(name, version)
        workers = info.get("workers", [])
        return len(workers) >= max(1, info.get("minWorkers", 1)) and all(
            w.get("status") == "READY" for w in workers
        )
