"""End to end in real headless Chromium: `make demo`'s launcher starts TorchServe with the
released archives and the web app; a character is drawn with pointer events (mouse, then pen)
and the page must show the released model's answer. Screenshots go to test-artifacts/.
Teardown sends Ctrl-C (SIGINT) to the launcher and checks that nothing is left listening."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from support.servers import free_ports, needs_java

from serving import processes, torchserve

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
def demo(tmp_path_factory):
    """`python -m serving.demo` on free ports; Ctrl-C'd at the end, which must free every port."""
    logs = tmp_path_factory.mktemp("demo-logs")
    web, *ts_ports = free_ports(6)
    names = ["inference", "management", "metrics", "grpc-inference", "grpc-management"]
    command = [sys.executable, "-m", "serving.demo", "--logs", str(logs), f"--web-port={web}"]
    command += [f"--{name}-port={port}" for name, port in zip(names, ts_ports, strict=True)]
    out = open(logs / "demo.out", "wb")  # noqa: SIM115 (closed in the finally below)
    process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
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
        draw_seven(page, pointer)
        assert predicted(page, expect) == "7"
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
