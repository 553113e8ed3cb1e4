"""Report pages opened in a real browser: headless Chromium driven over the DevTools
protocol (the `websockets` dev dependency; no browser download, no network).

For a run page (a real cis-toy-model run and a failed run), the runs index, a comparison
and a sweep page, at a desktop and a phone-sized viewport: no console errors, every image
loaded with a non-zero natural size and fitting the screen, the metrics table present,
the page no wider than the screen on a phone, and a screenshot that is not blank. A
planted broken page checks that these checks catch what they are for.

Skipped, saying how to install it, when no Chromium is found (`make test` installs nothing
system-wide; `.ci/run` installs Debian's `chromium`).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests import test_report_planted

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DESKTOP = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}

#: Evaluated in the page: what a reader would see (images, tables, widths).
INSPECT = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,
    w: i.naturalWidth, h: i.naturalHeight, right: i.getBoundingClientRect().right})),
  metrics: document.querySelectorAll('table.metrics, table.runs').length,
  rows: document.querySelectorAll('table.metrics tr, table.runs tr').length,
  error: document.querySelectorAll('.error').length,
  clientWidth: document.documentElement.clientWidth,
  scrollWidth: document.documentElement.scrollWidth,
  text: document.body ? document.body.innerText.length : 0})"""


def _find_browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, binary: str):
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="mi-ideas-chromium-")
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"Chromium ({binary}) did not start its DevTools endpoint")
            time.sleep(0.05)
        port, path = port_file.read_text().split()[:2]
        self._conn = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=20)
        self.ws = self._conn.__enter__()
        self._id, self.events = 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self.session)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def open(self, path: Path, viewport: dict, javascript: bool = True) -> dict:
        """Load ``path`` at ``viewport``; returns what the page shows and what went wrong."""
        s = self.session
        self.send("Emulation.setDeviceMetricsOverride", viewport, session=s)
        self.send("Emulation.setScriptExecutionDisabled", {"value": not javascript}, session=s)
        self.events = []
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=s)
        self.wait_for("Page.loadEventFired")
        info = json.loads(self.send("Runtime.evaluate", {"expression": INSPECT, "returnByValue": True},
                                    session=s)["result"]["value"])
        shot = self.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"]
        info["screenshot_std"] = _pixel_std(shot)
        info["errors"] = [_describe(e) for e in self.events if _is_error(e)]
        return info

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self._conn.__exit__(None, None, None)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


def _pixel_std(png_b64: str) -> float:
    """Standard deviation of the screenshot's grey levels (0 for a blank page)."""
    import base64

    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("L")
    return ImageStat.Stat(image).stddev[0]


def _is_error(event: dict) -> bool:
    method, params = event.get("method"), event.get("params", {})
    return (method == "Runtime.exceptionThrown"
            or (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
            or (method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error"))


def _describe(event: dict) -> str:
    return json.dumps(event.get("params", {}))[:300]


def problems(info: dict, viewport: dict, failed: bool = False) -> list[str]:
    """Everything a reader would see as broken on this page at this viewport (a failed
    run's page has no metrics: it must show its error instead)."""
    out = [f"console error: {e}" for e in info["errors"]]
    for img in info["images"]:
        if not img["complete"] or img["w"] == 0 or img["h"] == 0:
            out.append(f"image {img['alt']!r} did not load")
        elif img["right"] > info["clientWidth"] + 1:
            out.append(f"image {img['alt']!r} is wider than the screen")
    if failed and info["error"] == 0:
        out.append("a failed run's page shows no error")
    elif not failed and (info["metrics"] == 0 or info["rows"] < 2):
        out.append("no metrics table")
    if info["screenshot_std"] < 5:
        out.append(f"blank screenshot (grey-level std {info['screenshot_std']:.2f})")
    if viewport["mobile"]:
        if info["clientWidth"] != viewport["width"]:
            out.append(f"laid out {info['clientWidth']} px wide on a {viewport['width']} px phone")
        if info["scrollWidth"] > info["clientWidth"] + 1:
            out.append(f"the page scrolls sideways ({info['scrollWidth']} > {info['clientWidth']} px)")
    return out


@pytest.fixture(scope="module")
def browser():
    binary = _find_browser()
    if binary is None:
        pytest.skip("no Chromium found (looked for chromium, chromium-browser, google-chrome): "
                    "install Debian's package with `apt-get install chromium` to run the "
                    "browser tests of the report pages (.ci/run does this)")
    chrome = Chromium(binary)
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A runs directory with real pages: a cis-toy-model run, planted runs (one failed),
    its index, a comparison and a sweep."""
    from mi_ideas.cli import main
    from mi_ideas.errors import RunError
    from mi_ideas.host import Host, set_host
    from mi_ideas.report import write_comparison, write_index
    from mi_ideas.runs import execute

    root = tmp_path_factory.mktemp("browser-runs")
    host = Host()
    host.register_plugin(test_report_planted, name="planted")
    previous = set_host(host)
    try:
        cis = execute("cis-toy-model", config={"task": "tms", "tms_steps": 30, "tms_n_instances": 2},
                      out=root, host=host, quiet=True)
        a = execute("planted-effect", config={"effect": 1.0}, out=root, host=host, quiet=True)
        b = execute("planted-effect", config={"effect": 2.0}, seed=1, out=root, host=host, quiet=True)
        with pytest.raises(RunError):
            execute("planted-effect", config={"fail": True}, out=root, host=host, quiet=True)
        assert main(["sweep", "planted-effect", "--grid", "effect=0,2", "--out", str(root), "-q"]) == 0
        index = write_index(root, host=host)
        failed = next(p for p in (root / "planted-effect").iterdir()
                      if json.loads((p / "provenance.json").read_text())["status"] == "failed")
        comparison = write_comparison([a.path, b.path], host=host)
    finally:
        set_host(previous)
    return {"run": cis.path / "report.html", "failed": failed / "report.html", "index": index,
            "comparison": comparison, "sweep": next((root / "sweeps").glob("*.html"))}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize("name", ["run", "failed", "index", "comparison", "sweep"])
def test_report_pages_render_in_a_real_browser(browser, pages, name, viewport):
    info = browser.open(pages[name], viewport)
    assert problems(info, viewport, failed=name == "failed") == []
    figures = {"run": 1, "failed": 1, "comparison": 2, "sweep": 3, "index": 0}[name]
    assert len(info["images"]) >= figures  # every figure the page has is shown
    assert info["text"] > 200


def test_the_index_is_complete_without_javascript(browser, pages):
    with_js = browser.open(pages["index"], DESKTOP)
    without = browser.open(pages["index"], DESKTOP, javascript=False)
    assert problems(without, DESKTOP) == []
    assert without["rows"] == with_js["rows"]  # every run listed either way


def test_the_checks_catch_a_broken_page(browser, tmp_path):
    """Planted faults: a missing image, a console error, no table, a wide block, and a
    blank page are each reported (the checks above would fail on such pages)."""
    broken = tmp_path / "broken.html"
    broken.write_text("<!doctype html><html><head><meta name='viewport' content='width=device-width'>"
                      "</head><body><p>text</p><img alt='gone' src='missing.png'>"
                      "<div style='width:2000px'>wide</div><script>console.error('boom')</script>"
                      "</body></html>")
    found = problems(browser.open(broken, PHONE), PHONE)
    assert any("console error" in p and "boom" in p for p in found)
    assert "image 'gone' did not load" in found and "no metrics table" in found
    assert any("scrolls sideways" in p for p in found)
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><html><body></body></html>")
    assert any(re.match(r"blank screenshot", p) for p in problems(browser.open(blank, DESKTOP), DESKTOP))
