"""Headless Chromium for the web export: find its dependencies, serve a site on 127.0.0.1, drive pages through Node."""
from __future__ import annotations

import atexit
import functools
import http.server
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantool.errors import DeviceError, clip, short_path

CHROMIUM = "/usr/bin/chromium"  # Debian's package; nothing downloads a browser build of its own
DRIVER = Path(__file__).with_name("web_driver.cjs")
DEPS_SCRIPT = "scripts/web_deps.sh"


def web_cache() -> Path:
    """Where scripts/web_deps.sh installs onnxruntime-web and playwright-core: $GANTOOL_WEB_CACHE,
    else .cache/web in the source tree gantool runs from."""
    env = os.environ.get("GANTOOL_WEB_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "web"


@dataclass(frozen=True)
class WebDeps:
    """What the browser bench and tests need, and what is missing (one reason each)."""

    node: str | None
    chromium: str | None
    cache: Path
    missing: tuple[str, ...]

    @property
    def ort_dist(self) -> Path:
        return self.cache / "node_modules" / "onnxruntime-web" / "dist"

    def require(self) -> "WebDeps":
        if self.missing:
            raise DeviceError(f"web unavailable: {'; '.join(self.missing)} (run {DEPS_SCRIPT})")
        return self


def find_deps() -> WebDeps:
    node = shutil.which("node")
    chromium = os.environ.get("GANTOOL_CHROMIUM", CHROMIUM)
    chromium = chromium if os.access(chromium, os.X_OK) else None
    cache = web_cache()
    missing = []
    if node is None:
        missing.append("Node.js is not installed (no `node` on PATH)")
    if chromium is None:
        missing.append(f"no Chromium at {short_path(os.environ.get('GANTOOL_CHROMIUM', CHROMIUM))} "
                       "(Debian: apt-get install chromium)")
    for pkg in ("playwright-core", "onnxruntime-web"):
        if not (cache / "node_modules" / pkg / "package.json").exists():
            missing.append(f"npm package {pkg} is not in {short_path(cache)}")
    return WebDeps(node, chromium, cache, tuple(missing))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class StaticServer:
    """A static file server for one folder on 127.0.0.1 (a free port), in a daemon thread."""

    def __init__(self, root: str | Path):
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Browser:
    """One headless Chromium (one fresh profile) driven by web_driver.cjs; pages are opened by URL."""

    def __init__(self, deps: WebDeps | None = None, timeout: float = 60.0):
        deps = (deps or find_deps()).require()
        self.timeout = timeout
        self._log = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "NODE_PATH": str(deps.cache / "node_modules"), "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"}
        self.proc = subprocess.Popen([deps.node, str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next = 1
        self._lock = threading.Lock()
        try:
            got = self.call("launch", executable=deps.chromium, timeout_ms=int(timeout * 1000))
        except DeviceError as e:
            self.close()
            raise DeviceError(f"web unavailable: Chromium did not start: {e}") from None
        self.version = f"Chromium {got['version']}" if got.get("version") else "Chromium (version unknown)"
        self.flags = got.get("flags", [])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def call(self, op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """One driver request; DeviceError with the driver's one-line message when it fails."""
        with self._lock:
            if self.proc.poll() is not None:
                raise DeviceError(f"the browser driver exited ({self._stderr_tail()})")
            msg_id, self._next = self._next, self._next + 1
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"id": msg_id, "op": op, **args}) + "\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise DeviceError(f"the browser driver exited ({self._stderr_tail()})") from None
            while True:
                try:
                    line = self._lines.get(timeout=timeout or self.timeout)
                except queue.Empty:
                    raise DeviceError(f"the browser did not answer {op} within {timeout or self.timeout:.0f} s") from None
                if line is None:
                    raise DeviceError(f"the browser driver exited ({self._stderr_tail()})")
                reply = json.loads(line)
                if reply.get("id") in (msg_id, 0):
                    break
        if "error" in reply:
            raise DeviceError(reply["error"])
        return reply

    def _stderr_tail(self) -> str:
        self._log.seek(0)
        lines = [s for s in self._log.read().splitlines() if s.strip()]
        return clip(lines[-1]) if lines else f"exit code {self.proc.poll()}"

    def open(self, url: str, width: int = 1280, height: int = 900) -> "Page":
        got = self.call("open", url=url, width=width, height=height, timeout_ms=int(self.timeout * 1000))
        return Page(self, got["page"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=20)
            except DeviceError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@dataclass
class Page:
    browser: Browser
    id: int

    def eval(self, fn: str, arg: Any = None, timeout: float | None = None) -> Any:
        """Run a JS function's source text in the page with `arg`; returns its (awaited) value."""
        return self.browser.call("eval", timeout=timeout, page=self.id, fn=fn, arg=arg).get("value")

    def wait(self, expr: str, timeout: float = 60.0) -> None:
        self.browser.call("wait", timeout=timeout + 5, page=self.id, expr=expr, timeout_ms=int(timeout * 1000))

    def viewport(self, width: int, height: int) -> None:
        self.browser.call("viewport", page=self.id, width=width, height=height)

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        self.browser.call("screenshot", page=self.id, path=str(path), full_page=full_page)
        return Path(path)

    def log(self) -> list[str]:
        return self.browser.call("log", page=self.id)["log"]

    def close(self) -> None:
        self.browser.call("close", page=self.id)


_shared: Browser | None = None


def shared_browser() -> Browser:
    """The process's one browser (started on first use, closed at exit): tests and bench rows share it."""
    global _shared
    if _shared is None or _shared.proc.poll() is not None:
        _shared = Browser()
        atexit.register(_shared.close)
    return _shared
