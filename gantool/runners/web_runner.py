"""The "web" backend: the exported site's page in headless Chromium, running the ONNX generator on ONNX Runtime Web (wasm).

    runner = load_runner("exported/generator.fp32.onnx", "web")   # builds a site with the cached runtime
    runner = load_runner("site/", "web")                          # or opens a site `gantool export --format web` wrote

z goes to the page once in prepare(); run() is one session.run() in the page, timed there with
performance.now(), so the host<->browser round trip stays out of the bench's numbers.
"""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantool.errors import ArtifactError, ConfigError, DeviceError
from gantool.runners.base import Runner, RunnerInfo
from gantool.signature import DEFAULT_INPUT, DEFAULT_OUTPUT, Signature

READY = "document.body.dataset.state === 'ready' || document.body.dataset.state === 'error'"


def _site_for(source: Path, deps: Any) -> tuple[Path, str | None]:
    """(site folder, temporary folder to remove or None): a site as is, an .onnx built into a temporary site."""
    if source.is_dir():
        if not (source / "model.json").is_file() or not (source / "index.html").is_file():
            raise ArtifactError(f"{source} is not a web site from `gantool export --format web` (no model.json / index.html)")
        return source, None
    from gantool.export.web import site_from_onnx

    tmp = tempfile.mkdtemp(prefix="gantool-web-")
    try:
        site_from_onnx(source, Path(tmp) / "site", ort_web=deps.ort_dist)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(tmp) / "site", tmp


class WebRunner(Runner):
    """ONNX Runtime Web in a headless Chromium page; prepared inputs stay in the page."""

    clock = "performance.now (in page)"

    def __init__(self, source: str | Path, device: str = "cpu", dtype: str | None = "auto", ep: str = "wasm",
                 threads: int | None = None, browser: Any = None):
        from gantool.runners.browser import StaticServer, find_deps, shared_browser

        if device not in ("cpu", "auto", None):
            raise ConfigError(f"backend 'web' runs ONNX Runtime Web's {ep} in a browser on this machine's CPU, not on {device}")
        if ep != "wasm":
            raise ConfigError("backend 'web' measures the wasm build (headless Chromium runs with --disable-gpu)")
        deps = find_deps().require()
        site, self._tmp = _site_for(Path(source), deps)
        meta = json.loads((site / "model.json").read_text())
        have = [m["dtype"] for m in meta["models"]]
        want = "fp32" if dtype in (None, "auto") else dtype
        if want not in have:
            raise ArtifactError(f"{source} has no {want} model for the web backend (it has {', '.join(have)})")
        self.server = StaticServer(site)
        self._pages: list[Any] = []
        self._finalizer = weakref.finalize(self, _cleanup, self._pages, self.server, self._tmp)
        self.browser = browser or shared_browser()
        query = f"index.html?backend={ep}&dtype={want}&bench=0" + (f"&threads={threads}" if threads else "")
        try:
            self.page = self.browser.open(self.server.url + query)
            self._pages.append(self.page)
            self.page.wait(READY, timeout=120)
        except BaseException:
            self.close()
            raise
        got = self.page.eval("() => ({error: window.gantool.error, info: window.gantool.info})")
        if got["error"]:
            self.close()
            raise DeviceError(f"web unavailable: the page reports: {got['error']}")
        info = got["info"]
        self.last_run_s: float | None = None
        sig = Signature.latent_to_image(int(info["latent_dim"]), tuple(info["img_shape"]), tuple(meta["value_range"]),
                                        meta.get("input", DEFAULT_INPUT), meta.get("output", DEFAULT_OUTPUT))
        self.info = RunnerInfo("web", "cpu", want, sig, str(source), {
            "runtime": {"browser": self.browser.version, "ort_web": info["ort_web"], "ep": info["backend"],
                        "threads": info["threads"], "cross_origin_isolated": info["cross_origin_isolated"],
                        "runtime_source": info["runtime_source"]},
            "timer": self.clock,
        })

    def prepare(self, z: torch.Tensor, labels: Any = None) -> tuple[int, int]:
        if labels is not None:
            raise ConfigError("the web backend feeds z alone (the page has no label input yet)")
        x = np.ascontiguousarray(z.detach().cpu().numpy(), dtype="<f4")
        handle = self.page.eval("(a) => window.gantool.putZ(a.b64, a.n)",
                                {"b64": base64.b64encode(x.tobytes()).decode(), "n": int(x.shape[0])})
        return int(handle), int(x.shape[0])

    def run(self, x: tuple[int, int]) -> tuple[int, int]:
        ms = self.page.eval("(id) => window.gantool.run(id)", x[0], timeout=600)
        self.last_run_s = float(ms) / 1e3
        return x

    def to_cpu(self, y: tuple[int, int]) -> torch.Tensor:
        data = base64.b64decode(self.page.eval("(id) => window.gantool.output(id)", y[0], timeout=600))
        out = np.frombuffer(data, dtype="<f4").reshape(y[1], *self.info.img_shape)
        return torch.from_numpy(out.copy())

    def sync(self) -> None:
        pass  # run() returns when the page's session.run has resolved

    def close(self) -> None:
        self._finalizer()


def _cleanup(pages: list[Any], server: Any, tmp: str | None) -> None:
    for page in pages:
        try:
            page.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone at exit
            pass
    server.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)

