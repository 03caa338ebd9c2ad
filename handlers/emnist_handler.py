"""TorchServe handler for the EMNIST models: image requests in, top-k labels out.

Inside a model archive this file sits at the root (TorchServe imports it as `emnist_handler` and
wants exactly one class in it) next to the `emnist/` package, the core the archive ships, so
serving runs the very preprocessing and model code that training used. Everything here is
TorchServe glue: request parsing, preprocessing, the model and the answers are the core's, so
another Python server could host the same model with an adapter of its own.

The built-in vision handlers are not used: they import captum and assume 3-channel images.
"""

from __future__ import annotations

import json
import logging
import os
from http import HTTPStatus
from pathlib import Path

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

import emnist
from emnist import hardware, responses
from emnist.charsets import CharsetError
from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.labels import LABELS_FILE, load_labels
from emnist.preprocessing import (
    PREPROCESSING_VERSION,
    InvalidImageError,
    decode_image,
    preprocess,
    to_model_input,
)
from emnist.requests import DEFAULT_TOPK, RequestError, parse_request

log = logging.getLogger(__name__)

# Torch threads per CPU worker: every TorchServe worker is a process with its own torch thread
# pool, and by default each pool takes every core. With W workers on C cores, C / W threads per
# worker avoids oversubscription; model-config.yaml sets it per archive, this variable overrides
# it at serving time without rebuilding the archive.
CPU_THREADS_ENV = "EMNIST_CPU_THREADS"
# Inference arithmetic on the CPU: model-config.yaml's handler.precision (auto, fp32 or bf16), or
# this variable at serving time. auto is bf16 where the CPU has native bf16 (emnist/hardware.py):
# there the CNN's forward pass takes 0.84 instead of 1.38 ms per image at batch 1, 0.39 instead
# of 0.66 at batch 8 (docs/benchmarks.md). GPUs keep float32, as before.
PRECISION_ENV = "EMNIST_PRECISION"
PRECISIONS = ("auto", "fp32", "bf16")


class EmnistHandler(BaseHandler):
    """A thin BaseHandler: the checkpoint and the registry build the model, shared code does
    the preprocessing, softmax happens here once, and each request gets its own answer."""

    def initialize(self, context):
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        manifest = context.manifest["model"]
        gpu_id = properties.get("gpu_id")
        if torch.cuda.is_available() and gpu_id is not None:
            self.device = torch.device(f"cuda:{gpu_id}")
            threads = None
            self.precision = "fp32"
        else:
            self.device = torch.device("cpu")
            threads = cpu_threads(context.model_yaml_config)
            torch.set_num_threads(threads)
            self.precision = inference_precision(context.model_yaml_config)

        ckpt = load_checkpoint(model_dir / manifest["serializedFile"])
        if ckpt.get("preprocessing_version") != PREPROCESSING_VERSION:
            raise RuntimeError(
                f"checkpoint made with preprocessing version {ckpt.get('preprocessing_version')}"
                f", but this archive ships version {PREPROCESSING_VERSION}"
            )
        self.labels = load_labels(model_dir / LABELS_FILE)
        if self.labels != list(ckpt["class_names"]):
            raise RuntimeError(f"{LABELS_FILE} disagrees with the checkpoint's class names")
        self.model = model_from_checkpoint(ckpt, self.device)
        # oneDNN runs these convolutions faster in channels-last memory: 15-27% less
        # inference time per image at batch 1 and 8 on CPU (docs/benchmarks.md).
        self.memory_format = (
            torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        )
        self.model = self.model.to(memory_format=self.memory_format)
        self.arch = ckpt["arch"]
        self.checkpoint_metrics = ckpt.get("metrics", {})
        self.model_name = manifest.get("modelName", context.model_name)
        self.version = manifest.get("modelVersion", "")
        self.manifest = context.manifest
        # TorchServe's worker logs "Backend received inference" on the root logger at INFO for
        # every batch, and its frontend copies each line into model_log.log: from here on the
        # root logger's own records pass from WARNING up (named loggers, ours, are untouched).
        # One module-level function, so a second initialize in the process adds nothing.
        logging.getLogger().addFilter(_warnings_and_up)
        self.initialized = True
        log.info(
            "%s %s: %s, %d classes on %s (%s threads, %s), code from %s",
            self.model_name,
            self.version,
            self.arch,
            len(self.labels),
            self.device,
            threads or "-",
            self.precision,
            Path(emnist.__file__).parent,
        )

    def handle(self, data, context):
        """BaseHandler.handle without its HandlerTime metric: TorchServe already records the
        same span per batch (PredictionTime, and ts_inference_latency_microseconds), and each
        metric is a line the worker prints and the frontend parses, per batch."""
        self.context = context
        if self._is_describe():
            return [self.describe_handle()]
        return self.postprocess(self.inference(self.preprocess(data)))

    def preprocess(self, data):
        """Per request: parse the envelope, decode in memory, run the shared preprocessing.

        Returns one slot per request: {"error": (status, message)} or {"pixels": uint8 (28, 28),
        "empty": bool, "reason": str, "topk": int, "charset": str, "extent": float, "dot": bool,
        "want_input": bool}.
        """
        slots = []
        for idx, row in enumerate(data):
            try:
                request = parse_request(row, self._headers(idx))
                image = preprocess(decode_image(request.image))
            except RequestError as err:
                slots.append({"error": (err.status, err.message)})
            except InvalidImageError as err:
                slots.append({"error": (400, str(err))})
            except Exception:
                # A bug met by one odd image must not fail the other requests of the batch.
                log.exception("preprocessing failed")
                slots.append({"error": (500, "this image could not be processed")})
            else:
                slots.append(
                    {
                        "pixels": image.pixels,
                        # A dot is no character: answered as empty, and kept out of the batch.
                        "empty": image.empty or image.dot,
                        "reason": "dot" if image.dot and not image.empty else "blank",
                        "topk": request.topk or DEFAULT_TOPK,
                        "charset": request.charset,
                        "extent": image.extent,
                        "dot": image.dot,
                        "want_input": request.want_input,
                    }
                )
        return slots

    def inference(self, slots, *args, **kwargs):
        """One forward pass over the requests that hold a drawing; softmax here, exactly once."""
        drawn = [s["pixels"] for s in slots if "pixels" in s and not s["empty"]]
        if not drawn:
            return slots, np.empty((0, len(self.labels)), dtype=np.float32)
        x = torch.from_numpy(to_model_input(np.stack(drawn))).to(self.device)
        x = x.contiguous(memory_format=self.memory_format)
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            probabilities = torch.softmax(self.model(x).float(), dim=1)
        return slots, probabilities.cpu().numpy()

    def postprocess(self, data):
        """Exactly one JSON answer per request, in request order, errors with their 4xx."""
        slots, probabilities = data
        rows = iter(probabilities)
        identity = {"model": self.model_name, "version": self.version}
        answers = []
        for idx, slot in enumerate(slots):
            if "error" not in slot and slot["empty"]:
                answer = responses.empty_drawing(
                    **identity, batch_size=len(slots), reason=slot["reason"]
                )
            elif "error" not in slot:
                try:
                    answer = responses.prediction(
                        next(rows).tolist(),
                        self.labels,
                        **identity,
                        topk=slot["topk"],
                        batch_size=len(slots),
                        charset=slot["charset"],
                        extent=slot["extent"],
                    )
                except CharsetError as err:
                    slot["error"] = (400, str(err))
            if "error" not in slot and slot["want_input"]:
                answer["input"] = responses.model_input(
                    slot["pixels"], extent=slot["extent"], dot=slot["dot"]
                )
            if "error" in slot:
                status, message = slot["error"]
                if self._is_request(idx):
                    self.context.set_response_status(status, HTTPStatus(status).phrase, idx=idx)
                answer = responses.error(status, message)
            if self._is_request(idx):
                self.context.set_response_content_type(idx, "application/json")
            answers.append(answer)
        return answers

    def _is_request(self, idx: int) -> bool:
        """Whether row `idx` is a request of its own. Under TorchServe's KServe envelopes one
        request can carry several instances: they arrive as rows, but only the request has
        headers and a status (the envelope builds the one answer from the rows)."""
        return idx < len(self.context.request_processor or ())

    def _headers(self, idx: int) -> dict:
        return self.context.get_all_request_header(idx) if self._is_request(idx) else {}

    def describe_handle(self):
        """`GET /models/<name>/<version>?customized=true` shows this as customizedMetadata."""
        return json.dumps(
            {
                "arch": self.arch,
                "classes": len(self.labels),
                "preprocessing_version": PREPROCESSING_VERSION,
                "device": str(self.device),
                "precision": self.precision,
                "checkpoint_metrics": self.checkpoint_metrics,
            }
        )


def _warnings_and_up(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def inference_precision(model_yaml_config: dict | None) -> str:
    """fp32 or bf16 for a CPU worker: $EMNIST_PRECISION, else model-config.yaml, else fp32."""
    value = os.environ.get(PRECISION_ENV)
    if value is None:
        value = ((model_yaml_config or {}).get("handler") or {}).get("precision", "fp32")
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {value!r}")
    if value == "auto":
        return "bf16" if hardware.cpu_bf16_native() else "fp32"
    return value


def cpu_threads(model_yaml_config: dict | None) -> int:
    """Torch threads for a CPU worker: $EMNIST_CPU_THREADS, else model-config.yaml, else 1."""
    value = os.environ.get(CPU_THREADS_ENV)
    if value is None:
        value = ((model_yaml_config or {}).get("handler") or {}).get("cpu_threads", 1)
    threads = int(value)
    if threads < 1:
        raise ValueError(f"cpu_threads must be >= 1, got {value!r}")
    return threads
