"""Over 1,000 seeded bad requests against TorchServe directly and against the web app (waitress
in its own process): none may crash anything or kill a worker, each gets a 4xx with a JSON
message (or, for an odd but valid image, a correct prediction), and both still answer correctly
afterwards. Bombs and lying headers are also checked in process: refused from the header, in
milliseconds, without the memory their pixels would take.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from support.bad_images import encode, png_bomb, png_claiming, same_pixels_variant, text_chunk_bomb
from support.bad_inputs import EITHER, PREDICT, REJECT, TORCHSERVE, WEBAPP, Case, Routes, generate
from support.live import live_torchserve, webapp, worker_pids
from support.servers import LABELS, TEST_MODELS, build_test_store, drawing_png, needs_java

from emnist.checkpoint import load_checkpoint, model_from_checkpoint
from emnist.preprocessing import preprocess, to_model_input
from emnist.requests import RequestError, parse_request
from webapp import create_app

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611
TORCHSERVE_CASES, WEBAPP_CASES = 500, 600
MODELS = sorted({(name, version) for _, name, version, _ in TEST_MODELS})
REQUEST_TIMEOUT = (5, 60)  # connect, read: a hang fails the case instead of the run


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_test_store(tmp_path_factory.mktemp("bad-input"))


@pytest.fixture(scope="module")
def served(store):
    with live_torchserve(store.parent / "logs", store) as server:
        yield server


@pytest.fixture(scope="module")
def app(served, store):
    with webapp(served.endpoints, store.parent / "webapp.log") as running:
        yield running


BOMB_CHECK = r"""
import json, re, sys, time
from pathlib import Path
from emnist.preprocessing import InvalidImageError, decode_image, preprocess
decode_image(Path(sys.argv[1]).read_bytes())  # warm up: Pillow loads its plugins on first use
# This process's peak RSS in MB (not ru_maxrss: Linux carries the parent's over exec).
status = lambda: Path("/proc/self/status").read_text()
peak = lambda: int(re.search(r"VmHWM:\s+(\d+) kB", status()).group(1)) / 1024
result = {"refused": [], "ms": [], "bombs_mb": 0.0}
before = peak()
for path in sys.argv[2:-1]:
    start = time.perf_counter()
    try:
        decode_image(Path(path).read_bytes())
        result["refused"].append(False)
    except InvalidImageError:
        result["refused"].append(True)
    result["ms"].append((time.perf_counter() - start) * 1000)
result["bombs_mb"] = peak() - before
preprocess(decode_image(Path(sys.argv[-1]).read_bytes()))
result["largest_valid_mb"] = peak() - before
print(json.dumps(result))
"""


def test_bombs_and_lying_headers_are_refused_from_the_header(tmp_path):
    """In a fresh interpreter, so that its peak RSS shows what decoding cost (Linux)."""
    hostile = {
        "png 50000x50000": png_claiming(50000, 50000),
        "png 65535x1": png_claiming(65535, 1),
        "png bomb 12000² (144 MB of pixels)": png_bomb(12000),
        "png bomb 5000²": png_bomb(5000),
        "zTXt 50 MB": text_chunk_bomb(b"zTXt"),
        "iCCP 50 MB": text_chunk_bomb(b"iCCP"),
    }
    paths = []
    for i, data in enumerate([drawing_png(), *hostile.values()]):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(data)
    # The largest image allowed (4096² px), 16-bit: decoded, then shrunk before the float work.
    white = np.full((4096, 4096), 65535, dtype=np.uint16)
    (tmp_path / "largest.png").write_bytes(encode(Image.fromarray(white)))
    command = [sys.executable, "-c", BOMB_CHECK, *map(str, paths), str(tmp_path / "largest.png")]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    print(result)
    assert dict(zip(hostile, result["refused"], strict=True)) == dict.fromkeys(hostile, True)
    slowest = max(result["ms"])
    assert slowest < 100, f"a refusal took {slowest:.1f} ms: {result['ms']}"
    # Decoding the 12000² bomb would take 144 MB, the 50000² header 2.5 GB.
    assert result["bombs_mb"] < 20, result
    # The 16-bit 4096² PNG is 32 MB of pixels; its float work used to take 160 MB.
    assert result["largest_valid_mb"] < 120, result


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"image": ' * 5000, b"[" * 100_000])
def test_json_nested_too_deeply_is_a_400_not_a_500(body):
    """It exhausts the recursive JSON parser (RecursionError): handler and app alike."""
    with pytest.raises(RequestError, match="nested too deeply") as caught:
        parse_request({"body": body}, {"Content-Type": "application/json"})
    assert caught.value.status == 400
    client = create_app({"INFERENCE_URL": "http://127.0.0.1:9"}).test_client()  # never reached
    for path in ("/api/predict", "/api/compare"):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 400 and "nested too deeply" in response.json["message"]


def test_16_bit_and_palette_pngs_give_the_same_pixels():
    """What the PREDICT cases of that category rely on (in process, no server)."""
    image = Image.open(io.BytesIO(drawing_png("L"))).convert("L")
    reference = preprocess(image).pixels
    for kind in ("png16", "palette", "palette-transparent", "bilevel", "alpha-strokes"):
        assert np.array_equal(preprocess(same_pixels_variant(image, kind)).pixels, reference), kind


def send(base_url: str, case: Case) -> tuple[int | None, dict, bytes, float]:
    """(status or None when no answer came, headers, body, seconds)."""
    start = time.perf_counter()
    try:
        response = requests.request(case.method, base_url + case.path, data=case.data,
                                    headers=case.headers, files=case.files,
                                    timeout=REQUEST_TIMEOUT)  # fmt: skip
    except requests.RequestException as err:
        return None, {}, repr(err).encode(), time.perf_counter() - start
    return response.status_code, response.headers, response.content, time.perf_counter() - start


def answers(body: dict) -> list[dict]:
    """The per-model answers of a prediction (TorchServe, /api/predict) or of /api/compare."""
    return body.get("results", [body])


def prediction_problem(body, expected_count: int) -> str | None:
    if not isinstance(body, dict):
        return "not a JSON object"
    for answer in answers(body):
        predictions = answer.get("predictions")
        if not isinstance(answer.get("empty"), bool) or not isinstance(predictions, list):
            return f"not a prediction: {answer}"
        if answer["empty"]:
            if predictions:
                return "an empty drawing with predictions"
            continue
        labels = [p["label"] for p in predictions]
        probabilities = [p["probability"] for p in predictions]
        if len(predictions) != expected_count or not set(labels) <= set(LABELS):
            return f"{len(predictions)} predictions {labels}, expected {expected_count}"
        if probabilities != sorted(probabilities, reverse=True) or not (
            min(probabilities) >= 0 and sum(probabilities) <= 1 + 1e-5
        ):
            return f"bad probabilities {probabilities}"
    return None


def same_answer(body: dict, reference: dict) -> bool:
    """Same previews (web app) and the same ranking, probabilities to 1e-4 (batches may differ
    in the last float bits)."""
    if body.get("preview") != reference.get("preview"):
        return False
    for got, ref in zip(answers(body), answers(reference), strict=True):
        if got["empty"] != ref["empty"]:
            return False
        ranked = ref["predictions"][: len(got["predictions"])]
        if [p["label"] for p in got["predictions"]] != [p["label"] for p in ranked]:
            return False
        pairs = zip(got["predictions"], ranked, strict=True)
        if any(abs(a["probability"] - b["probability"]) > 1e-4 for a, b in pairs):
            return False
    return True


class Reference:
    """The answer to the plain PNG behind a `same_as` case, on the same route, all classes."""

    def __init__(self, base_url: str, target: str):
        self.base_url, self.target, self.cache = base_url, target, {}

    def __call__(self, case: Case) -> dict:
        path = case.path.split("?")[0]
        query = [q for q in case.path.partition("?")[2].split("&") if q and "topk" not in q]
        key = (path, tuple(query), case.same_as)
        if key not in self.cache:
            url = f"{self.base_url}{path}?{'&'.join([*query, 'topk=47'])}"
            headers = {"Content-Type": "image/png", "X-TopK": "47"}
            response = requests.post(url, data=case.same_as, headers=headers, timeout=60)
            assert response.status_code == 200, response.text
            self.cache[key] = response.json()
        return self.cache[key]


def problem(case: Case, status, headers, content: bytes, reference: Reference) -> str | None:
    if status is None:
        return f"no answer: {content.decode()}"
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = None
    if case.frontend_refusal == (status, isinstance(body, dict) and body.get("type")):
        return None  # TorchServe's frontend refused it itself, with a JSON message
    if case.expect == EITHER and status == 200:
        case = Case(case.category, case.name, case.path, expect=PREDICT)
    if case.expect in (REJECT, EITHER):
        if status not in case.statuses:
            return f"status {status}, expected {case.statuses}: {content[:200]!r}"
        if case.json_error and not (
            isinstance(body, dict) and body.get("code") == status and body.get("message")
        ):
            return f"no JSON error message: {content[:200]!r}"
        return None
    if status != 200:
        return f"status {status}, expected a prediction: {content[:200]!r}"
    count = min(case.topk or 5, len(LABELS))
    found = prediction_problem(body, count)
    if found is None and case.same_as is not None and not same_answer(body, reference(case)):
        found = f"differs from the plain PNG's answer: {content[:300]!r}"
    return found


def storm(base_url: str, cases: list[Case], target: str, capsys) -> None:
    """Send every case (4 at a time, so bad and good requests share TorchServe's batches),
    print a per-category tally and fail with the first problems found."""
    reference = Reference(base_url, target)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda case: send(base_url, case), cases))
    tally: dict[str, Counter] = defaultdict(Counter)
    slowest: dict[str, float] = defaultdict(float)
    problems = []
    for case, (status, headers, content, seconds) in zip(cases, results, strict=True):
        found = problem(case, status, headers, content, reference)
        tally[case.category][str(status)] += 1
        slowest[case.category] = max(slowest[case.category], seconds)
        if found:
            tally[case.category]["PROBLEM"] += 1
            problems.append(f"[{case.category}] {case.name} -> {found}")
    lines = [f"{target}: {len(cases)} requests (seed {SEED})"]
    for category in sorted(tally):
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(tally[category].items()))
        lines.append(f"  {category:30s} {counts}  (slowest {slowest[category] * 1000:.0f} ms)")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:15])


def in_process_probabilities(store: Path, name: str, version: str, png: bytes) -> dict:
    ckpt = load_checkpoint(store.parent / f"{name}-{version}.pt")
    model = model_from_checkpoint(ckpt)
    x = torch.from_numpy(to_model_input(preprocess(png).pixels[np.newaxis]))
    with torch.inference_mode():
        probabilities = torch.softmax(model(x), dim=1)[0].tolist()
    return dict(zip(ckpt["class_names"], probabilities, strict=True))


def assert_still_correct(store: Path, predict) -> None:
    """A known drawing through every model version matches the checkpoint run in process."""
    png = drawing_png("L")
    for name, version in MODELS:
        body = predict(name, version, png)
        expected = in_process_probabilities(store, name, version, png)
        served = {p["label"]: p["probability"] for p in body["predictions"]}
        assert served.keys() == expected.keys(), body
        assert all(abs(served[k] - expected[k]) < 1e-4 for k in expected), (served, expected)


@pytest.mark.torchserve
@pytest.mark.slow
@needs_java
def test_torchserve_answers_every_bad_request_with_a_4xx(served, store, capsys):
    models = MODELS + [(name, None) for name in sorted({n for n, _ in MODELS})]
    paths = tuple(f"/predictions/{n}" + (f"/{v}" if v else "") for n, v in models)
    cases = generate(Routes(TORCHSERVE, paths), TORCHSERVE_CASES, SEED)
    before = worker_pids(served.endpoints, MODELS)
    storm(served.endpoints.inference, cases, TORCHSERVE, capsys)
    assert worker_pids(served.endpoints, MODELS) == before, "a worker died or was restarted"
    assert all(status == "READY" for workers in before.values() for _, status in workers)

    def predict(name, version, png):
        url = f"{served.endpoints.inference}/predictions/{name}/{version}"
        response = requests.post(url, data=png, headers={"X-TopK": "47"}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    assert_still_correct(store, predict)


@pytest.mark.torchserve
@pytest.mark.slow
@needs_java
def test_web_app_answers_every_bad_request_with_a_4xx(app, served, store, capsys):
    paths = ["/api/predict", "/api/compare"]
    paths += [f"/api/predict?model={n}" for n in sorted({n for n, _ in MODELS})]
    paths += [f"/api/predict?model={n}&version={v}" for n, v in MODELS]
    cases = generate(Routes(WEBAPP, tuple(paths)), WEBAPP_CASES, SEED)
    before = worker_pids(served.endpoints, MODELS)
    storm(app.url, cases, WEBAPP, capsys)
    assert app.alive(), "the web app died"
    assert worker_pids(served.endpoints, MODELS) == before, "a worker died or was restarted"
    health = requests.get(f"{app.url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["torchserve"]["reachable"], health.text

    def predict(name, version, png):
        url = f"{app.url}/api/predict?model={name}&version={version}&topk=47"
        response = requests.post(url, files={"image": ("a.png", png)}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    assert_still_correct(store, predict)
