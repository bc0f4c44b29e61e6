"""A real headless browser for tests: Debian's chromium driven by chromedriver over the W3C WebDriver
protocol (plain JSON over HTTP, so no client library). `browser()` skips the test, saying why, when
chromium or chromedriver is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from app_support import free_port

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key
TAB, ENTER = "\ue004", "\ue007"  # WebDriver key codes


class Browser:
    def __init__(self, base: str, session: str):
        self.base, self.session = base, session

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/session/{self.session}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())["value"]

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._call("GET", "/url")

    def text(self, css: str = "body") -> str:
        return self._call("GET", f"/element/{self._find(css)}/text")

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self._find(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self._find(css)}/value", {"text": text})

    def script(self, js: str, *args: Any) -> Any:
        """Run `js` (a function body; `arguments` holds args) in the page and return its value."""
        return self._call("POST", "/execute/sync", {"script": js, "args": list(args)})

    def press(self, *keys: str) -> None:
        """Press and release each key (WebDriver key codes, e.g. TAB, ENTER) on whatever has focus."""
        actions = []
        for k in keys:
            actions += [{"type": "keyDown", "value": k}, {"type": "keyUp", "value": k}]
        self._call("POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": actions}]})

    def window(self, width: int, height: int) -> None:
        self._call("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self) -> bytes:
        import base64

        return base64.b64decode(self._call("GET", "/screenshot"))

    def _find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def wait_for(self, css: str, timeout: float = 30) -> str:
        """The text of the first element matching `css`, once a page that has one has loaded."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.text(css)
            except urllib.error.HTTPError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no {css} on {self.url}: {self.text()[:500]}") from None
                time.sleep(0.2)


@contextmanager
def browser() -> Iterator[Browser]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does it as root)")
    port = free_port()
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    profile = tempfile.TemporaryDirectory()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "/status", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                         f"--user-data-dir={profile.name}", "--no-proxy-server"]}}}}
        req = urllib.request.Request(base + "/session", data=json.dumps(caps).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            session = json.loads(resp.read())["value"]["sessionId"]
        b = Browser(base, session)
        try:
            yield b
        finally:
            try:
                urllib.request.urlopen(urllib.request.Request(f"{base}/session/{session}", method="DELETE"),
                                       timeout=30).read()
            except OSError:
                pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        profile.cleanup()
