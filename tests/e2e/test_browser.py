"""End to end in real headless Chromium: `make demo`'s launcher starts TorchServe with the
released archives and the web app; a character is drawn with pointer events (mouse, then pen)
and the page must show the released model's answer. Screenshots go to test-artifacts/.
Teardown sends Ctrl-C (SIGINT) to the launcher and checks that nothing is left listening."""

from __future__ import annotations

import io
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image
from support.servers import free_ports, needs_java

from emnist.canvas import CANVAS_SIZE
from evaluation.stroke_drawings import app_brush_px, draw_character
from serving import processes, torchserve
from serving.management import Endpoints

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
RELEASED = sorted((ROOT / "model_store").glob("*.mar"))
PROPS = torchserve.read_properties(ROOT / "config.properties")
# The model names `make demo` serves (one picker group and one compare card each) and the
# release's default version of each (config.properties `models=`).
SERVED = sorted(
    {name for name, _ in torchserve.archives_to_load(PROPS, ROOT / "model_store").values()}
)
DEFAULTS = torchserve.intended_defaults(PROPS)
# Without the background-networking flags Chromium tries to reach Google's servers.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.torchserve,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (make install)"),
    needs_java,
    pytest.mark.skipif(not RELEASED, reason="no released archives in model_store/"),
]
playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def feedback_db(tmp_path_factory) -> Path:
    """Where the demo's web app stores corrections (never the project's data/ in a test)."""
    return tmp_path_factory.mktemp("feedback") / "feedback.sqlite3"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, feedback_db):
    """`python -m serving.demo` on free ports; Ctrl-C'd at the end, which must free every port."""
    logs = tmp_path_factory.mktemp("demo-logs")
    web, *ts_ports = free_ports(6)
    names = ["inference", "management", "metrics", "grpc-inference", "grpc-management"]
    command = [sys.executable, "-m", "serving.demo", "--logs", str(logs), f"--web-port={web}"]
    command += [f"--{name}-port={port}" for name, port in zip(names, ts_ports, strict=True)]
    out = open(logs / "demo.out", "wb")  # noqa: SIM115 (closed in the finally below)
    env = {**os.environ, "EMNIST_FEEDBACK_DB": str(feedback_db)}
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{web}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            if b"demo ready" in (logs / "demo.out").read_bytes():
                break
            time.sleep(0.5)
        assert process.poll() is None, (logs / "demo.out").read_text()
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        yield url
        process.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does
        assert process.wait(60) == 0
        assert not [p for p in [web, *ts_ports] if processes.port_in_use(p)], "ports left open"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        server = processes.Server.load(logs)
        if server is not None:  # the demo failed to stop it: do it here, by PID
            processes.stop_torchserve(server)
        for child in psutil.Process().children(recursive=True):
            if "webapp" in " ".join(child.cmdline()):
                child.kill()
        out.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def draw_seven(page, pointer: str = "mouse") -> None:
    """A big '7' on #canvas: Playwright's mouse produces pointer events; the pen is dispatched."""
    box = page.locator("#canvas").bounding_box()
    points = [(0.25 + 0.5 * i / 10, 0.25) for i in range(11)]
    points += [(0.75 - 0.3 * i / 15, 0.25 + 0.55 * i / 15) for i in range(1, 16)]
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    if pointer == "mouse":
        page.mouse.move(*xy[0])
        page.mouse.down()
        for x, y in xy[1:]:
            page.mouse.move(x, y)
        page.mouse.up()
        return
    # A stylus, as the Pointer Events spec delivers it (pointerType "pen", pressure).
    page.locator("#canvas").evaluate(
        """(canvas, xy) => {
            const fire = (type, [x, y]) => canvas.dispatchEvent(new PointerEvent(type, {
                bubbles: true, cancelable: true, pointerId: 7, pointerType: "pen",
                isPrimary: true, clientX: x, clientY: y, pressure: type === "pointerup" ? 0 : 0.6,
                button: type === "pointermove" ? -1 : 0, buttons: type === "pointerup" ? 0 : 1}));
            fire("pointerdown", xy[0]);
            xy.slice(1).forEach((p) => fire("pointermove", p));
            fire("pointerup", xy[xy.length - 1]);
        }""",
        xy,
    )


def predicted(page, expect) -> str:
    # The page's CSP forbids eval, so wait with locators rather than wait_for_function.
    expect(page.locator("#prediction")).not_to_have_text("?", timeout=30_000)
    expect(page.locator(".model-card")).to_have_count(len(SERVED), timeout=30_000)
    return page.locator("#prediction").inner_text().strip()


# Playwright does not show a FormData's file in the request, so the page's fetch is watched.
RECORD_POSTED_IMAGES = """() => {
    const send = window.fetch;
    window.__posted = [];
    window.fetch = async (url, init) => {
        const image = init && init.body instanceof FormData && init.body.get("image");
        if (String(url).endsWith("/api/predict") && image) {
            window.__posted.push(new Uint8Array(await image.arrayBuffer()));
        }
        return send(url, init);
    };
}"""


@pytest.mark.parametrize(
    ("name", "options", "pointer"),
    [
        ("desktop", {"viewport": {"width": 1280, "height": 800}}, "mouse"),
        (
            "phone",
            {
                "viewport": {"width": 390, "height": 844},
                "device_scale_factor": 3,
                "is_mobile": True,
                "has_touch": True,
            },
            "pen",
        ),
    ],
)
def test_draw_a_seven(demo, browser, name, options, pointer):
    expect = playwright_api.expect
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        page.evaluate(RECORD_POSTED_IMAGES)
        draw_seven(page, pointer)
        assert predicted(page, expect) == "7"
        # The page posts an 8-bit gray PNG of the 280x280 canvas (a sixth of the decoding).
        png = bytes(page.evaluate("() => Array.from(window.__posted.at(-1))"))
        posted = Image.open(io.BytesIO(png))
        assert (posted.format, posted.mode, posted.size) == ("PNG", "L", (CANVAS_SIZE,) * 2)
        assert posted.getextrema() == (0, 255)  # black strokes on white
        expect(page.locator("#bars li")).to_have_count(5)
        assert page.locator("#preview").get_attribute("src").startswith("data:image/png")
        assert page.locator("#banner").is_hidden()
        # Nothing scrolls while drawing: the canvas takes the touch gestures itself.
        assert page.locator("#canvas").evaluate("c => getComputedStyle(c).touchAction") == "none"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"webapp-{name}.png", full_page=True)
        page.keyboard.press("z")  # undo the only stroke: back to the start
        expect(page.locator("#prediction")).to_have_text("?")
        assert not errors
    finally:
        context.close()


@pytest.mark.parametrize("model", [name for name in SERVED if name != "emnist-cnn"])
def test_other_models_through_the_picker(demo, browser, model):
    expect = playwright_api.expect
    version = DEFAULTS[model]
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        page.select_option("#model-select", f"{model}|{version}")
        draw_seven(page)
        assert predicted(page, expect) == "7"
        expect(page.locator("#meta")).to_contain_text(f"{model} {version}")
        page.click("#clear")
        expect(page.locator("#prediction")).to_have_text("?")
    finally:
        context.close()


def test_the_web_app_listens_on_loopback_only(demo):
    listening = {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == int(demo.rsplit(":", 1)[1])
    }
    assert listening == {"127.0.0.1"}


PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True,
         "has_touch": True}  # fmt: skip
DESKTOP = {"viewport": {"width": 1280, "height": 800}}


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Strokes in canvas fractions, drawn with the mouse (pointer events)."""
    box = page.locator("#canvas").bounding_box()
    for stroke in strokes:
        xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*xy[0])
        page.mouse.down()
        for x, y in xy[1:]:
            page.mouse.move(x, y)
        page.mouse.up()


def circle(cx=0.5, cy=0.5, rx=0.22, ry=0.3, steps=40) -> list[tuple[float, float]]:
    return [
        (cx + rx * math.sin(2 * math.pi * i / steps), cy - ry * math.cos(2 * math.pi * i / steps))
        for i in range(steps + 1)
    ]


def rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT label, predicted, charset, writer FROM corrections ORDER BY created_at"
        ).fetchall()


def answer(page, expect, before: str | None = None) -> str:
    locator = page.locator("#prediction")
    expect(locator).not_to_have_text(before or "?", timeout=30_000)
    return locator.inner_text().strip()


@pytest.mark.parametrize(("name", "options"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_charset_not_sure_and_a_correction(demo, browser, feedback_db, name, options):
    """An O: read as 0 (or unsure) with "anything", as O once the person says "letters"; the
    choice is remembered; a typed correction is stored with the page's writer id."""
    expect = playwright_api.expect
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        draw(page, [circle()])
        first = answer(page, expect)
        assert first in ("0", "O"), first
        if first == "0":  # the look-alike rule says so, and offers the other reading
            expect(page.locator("#notice")).to_contain_text("look alike")
            expect(page.locator("#confidence")).to_contain_text("Not sure")
        page.check('input[name="charset"][value="letters"]')
        expect(page.locator("#prediction")).to_have_text("O", timeout=30_000)
        assert all(t.strip().isalpha() for t in page.locator(".bar-label").all_inner_texts())
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / f"charset-{name}.png", full_page=True)
        before = len(rows(feedback_db))
        page.fill("#label-input", "o")  # one key: the typed character is the correction
        # The answer was O already: typing it confirms it.
        expect(page.locator("#teach-status")).to_have_text("Thanks: confirmed O.", timeout=15_000)
        stored = rows(feedback_db)
        assert len(stored) == before + 1 and stored[-1][:3] == ("O", "O", "letters")
        writer = page.evaluate("() => localStorage.getItem('emnist.writer')")
        assert stored[-1][3] == writer and len(writer) == 32
        page.screenshot(path=ARTIFACTS / f"correction-{name}.png", full_page=True)
        page.reload()
        expect(page.locator('input[name="charset"][value="letters"]')).to_be_checked()
        assert not errors
    finally:
        context.close()


@pytest.mark.parametrize(("name", "options"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_confirming_with_one_key_and_the_feedback_switch(demo, browser, feedback_db, name, options):
    expect = playwright_api.expect
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        draw_seven(page)
        assert answer(page, expect) == "7"
        before = len(rows(feedback_db))
        if name == "phone":
            page.tap("#confirm")  # one tap
        else:
            page.keyboard.press("y")  # one key: "it is right"
        expect(page.locator("#teach-status")).to_contain_text("confirmed 7", timeout=15_000)
        page.screenshot(path=ARTIFACTS / f"confirmed-{name}.png", full_page=True)
        assert len(rows(feedback_db)) == before + 1 and rows(feedback_db)[-1][0] == "7"
        page.uncheck("#send-feedback")  # remembered, and nothing more is sent
        page.click("#clear")
        draw_seven(page)
        assert answer(page, expect) == "7"
        expect(page.locator("#teach")).to_be_hidden()
        page.keyboard.press("y")
        page.reload()
        expect(page.locator("#send-feedback")).not_to_be_checked()
        assert len(rows(feedback_db)) == before + 1
    finally:
        context.close()


def test_a_dot_is_empty_and_a_small_drawing_gets_a_hint(demo, browser):
    expect = playwright_api.expect
    context = browser.new_context(**DESKTOP)
    try:
        page = context.new_page()
        page.goto(demo)
        draw(page, [[(0.5, 0.5)]])
        expect(page.locator("#confidence")).to_have_text("Just a dot: draw a whole character")
        expect(page.locator("#prediction")).to_have_text("–")
        page.click("#clear")
        draw(page, [[(0.1 + 0.12 * i / 10, 0.1) for i in range(11)],
                    [(0.22 - 0.06 * i / 10, 0.1 + 0.15 * i / 10) for i in range(11)]])  # fmt: skip
        expect(page.locator("#notice")).to_contain_text("Draw bigger", timeout=30_000)
        page.screenshot(path=ARTIFACTS / "small-drawing.png", full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize(("name", "options"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_upload_by_file_picker_and_by_drop(demo, browser, tmp_path, name, options):
    expect = playwright_api.expect
    image = draw_character("7", "futural", np.random.default_rng(0), brush=app_brush_px())
    image.save(tmp_path / "seven.png")
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        page.set_input_files("#file", str(tmp_path / "seven.png"))
        assert answer(page, expect) == "7"
        page.click("#clear")
        expect(page.locator("#prediction")).to_have_text("?")
        data = list((tmp_path / "seven.png").read_bytes())
        page.locator("#canvas-wrap").evaluate(
            """(wrap, bytes) => {
                const file = new File([new Uint8Array(bytes)], "seven.png", {type: "image/png"});
                const transfer = new DataTransfer();
                transfer.items.add(file);
                wrap.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true,
                                                          dataTransfer: transfer}));
            }""",
            data,
        )
        assert answer(page, expect) == "7"
        page.screenshot(path=ARTIFACTS / f"upload-{name}.png", full_page=True)
        page.keyboard.press("c")
        expect(page.locator("#prediction")).to_have_text("?")
        page.evaluate(
            """(bytes) => {
                const file = new File([new Uint8Array(bytes)], "seven.png", {type: "image/png"});
                const transfer = new DataTransfer();
                transfer.items.add(file);
                document.dispatchEvent(new ClipboardEvent("paste", {bubbles: true,
                                                                    clipboardData: transfer}));
            }""",
            data,
        )
        assert answer(page, expect) == "7"  # pasted
    finally:
        context.close()


def test_one_stroke_is_answered_as_fast_as_several(demo, browser):
    """Chromium's canvas.toBlob stalled about a second on one-stroke drawings; the page no
    longer waits for it. Time from the last pointerup to the answer on the page."""
    expect = playwright_api.expect
    context = browser.new_context(**DESKTOP)
    try:
        page = context.new_page()
        page.goto(demo)
        expect(page.locator("#model-select optgroup")).to_have_count(len(SERVED))
        one = [[(0.5, 0.15 + 0.7 * i / 20) for i in range(21)]]  # a 1
        several = [[(0.2 + 0.6 * i / 10, 0.2) for i in range(11)],
                   [(0.5, 0.2 + 0.6 * i / 10) for i in range(11)]]  # a T  # fmt: skip
        timings = {}
        for name, strokes in (("one", one), ("several", several)) * 3:
            page.keyboard.press("c")  # clear (the button is disabled on an empty canvas)
            expect(page.locator("#prediction")).to_have_text("?")
            page.evaluate(
                """() => { window.__answered = null;
                    new MutationObserver((_, observer) => { window.__answered = performance.now();
                        observer.disconnect(); }).observe(document.getElementById("prediction"),
                        {childList: true, characterData: true, subtree: true}); }"""
            )
            draw(page, strokes)
            lifted = page.evaluate("() => performance.now()")
            expect(page.locator("#prediction")).not_to_have_text("?", timeout=30_000)
            answered = page.evaluate("() => window.__answered")
            timings.setdefault(name, []).append(answered - lifted)
        one_ms, several_ms = (sorted(timings[k])[1] for k in ("one", "several"))
        print(f"pointerup -> answer: one stroke {one_ms:.0f} ms, several {several_ms:.0f} ms")
        assert one_ms < several_ms + 250 and one_ms < 900, timings  # 300 ms is the debounce
    finally:
        context.close()


def test_the_banner_shows_commands_as_code_not_backticks(browser, tmp_path):
    """TorchServe down: the page says so, with `make serve` as code."""
    expect = playwright_api.expect
    nowhere = f"http://127.0.0.1:{free_ports(1)[0]}"
    endpoints = Endpoints(inference=nowhere, management=nowhere, metrics=nowhere)
    env = {**os.environ, "EMNIST_FEEDBACK_DB": str(tmp_path / "f.sqlite3")}
    with processes.webapp(endpoints, tmp_path / "webapp.log", env=env) as (url, _):
        context = browser.new_context(**DESKTOP)
        try:
            page = context.new_page()
            page.goto(url)
            banner = page.locator("#banner")
            expect(banner).to_be_visible(timeout=15_000)
            expect(banner.locator("code").first).to_have_text("make serve")
            assert "`" not in banner.inner_text()
            page.screenshot(path=ARTIFACTS / "banner.png")
        finally:
            context.close()
