"""`gantool export --format web`: a static site that runs the fp32 ONNX generator in the browser with ONNX Runtime Web.

    build_site("site", exported="exported")                       # take generator.fp32.onnx (+ fp16) from an export
    build_site("site", checkpoint="runs/demo", ort_web="node_modules/onnxruntime-web")  # export, bundle the runtime

The runtime: `ort_web` (an npm install folder), else the one scripts/web_deps.sh installed (local_runtime),
else the pinned version from the CDN; `ort_web="cdn"` asks for the CDN.

The site is index.html + app.js + style.css (gantool/export/web_assets), generator.onnx (fp32) and
generator.fp16.onnx where the export has one, z.bin (the fixed noise, gantool.noise.latent) and
model.json (the facts the page reads). It is built in a temporary folder beside --out and renamed
into place, so a failure leaves the old --out as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from gantool.errors import ArtifactError, ConfigError, OutputError

ASSETS = Path(__file__).with_name("web_assets")
PAGE_FILES = ("index.html", "app.js", "style.css")
SITE_FORMAT = "gantool.web"
SITE_VERSION = 1
FIXED_N = 64  # the page's 8x8 grid
# onnxruntime-web's dist/ files the page loads: the plain WASM build, and the build with WebGPU.
WASM_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEBGPU_FILES = ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")


def ort_web_version() -> str:
    """The pinned onnxruntime-web version (web_assets/package.json, which scripts/web_deps.sh installs)."""
    return json.loads((ASSETS / "package.json").read_text())["dependencies"]["onnxruntime-web"]


def cdn_base(version: str | None = None) -> str:
    return f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{version or ort_web_version()}/dist/"


def find_runtime(folder: str | Path) -> tuple[Path, str | None]:
    """(dist folder, version) from an `npm install onnxruntime-web` folder, the package folder or its dist/."""
    base = Path(folder)
    if not base.is_dir():
        raise ConfigError(f"--ort-web {folder} is not a directory")
    for dist in (base, base / "dist", base / "node_modules" / "onnxruntime-web" / "dist"):
        if all((dist / f).is_file() for f in WASM_FILES):
            try:
                version = json.loads((dist.parent / "package.json").read_text()).get("version")
            except (OSError, ValueError):
                version = None
            return dist, version
    raise ConfigError(f"--ort-web {folder} has no ONNX Runtime Web runtime files ({', '.join(WASM_FILES)}): "
                      "give the folder of `npm install onnxruntime-web`, the package folder or its dist/")


CDN = "cdn"  # --ort-web cdn: load the runtime from the CDN even when a local install exists


def local_runtime() -> tuple[Path, str | None] | None:
    """The onnxruntime-web that scripts/web_deps.sh installed ($GANTOOL_WEB_CACHE or .cache/web in the source
    tree; gantool.runners.browser.web_cache), as find_runtime gives it; None when there is none."""
    from gantool.runners.browser import web_cache

    package = web_cache() / "node_modules" / "onnxruntime-web"
    try:
        return find_runtime(package) if package.is_dir() else None
    except ConfigError:
        return None


def pick_runtime(ort_web: str | Path | None) -> tuple[tuple[Path, str | None] | None, str]:
    """(runtime to copy in, or None for the CDN; why): --ort-web DIR, else a local install, else the CDN
    (issue 36.8: the page needed the network by default even where the runtime was installed)."""
    if ort_web is not None and str(ort_web) == CDN:
        return None, "--ort-web cdn"
    if ort_web is not None:
        return find_runtime(ort_web), "--ort-web"
    found = local_runtime()
    if found is not None:
        return found, "found installed locally (scripts/web_deps.sh); --ort-web cdn loads it from the CDN instead"
    from gantool.runners.browser import web_cache

    return None, (f"no local install in {web_cache()}; scripts/web_deps.sh or --ort-web DIR bundles it "
                  "so the page works offline")


def _check_out(out: Path, force: bool, protect: list[Path]) -> dict[str, Any] | None:
    """--out may be new, empty or an earlier gantool site (returned: its model.json, to say what is replaced);
    files gantool did not write are never replaced, --force or not (README, "Writing over earlier output")."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a directory")
    resolved = out.resolve()
    for p in protect:
        p = p.resolve()
        if resolved == p or resolved in p.parents:
            raise OutputError(f"--out {out} would replace {p}, which the site is built from: choose another --out")
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        old = json.loads((out / "model.json").read_text())
        is_site = old.get("format") == SITE_FORMAT
    except (OSError, ValueError, AttributeError):
        is_site = False
    if not is_site:
        raise OutputError(f"--out {out} holds files gantool did not write (it is not a gantool web site) and "
                          "gantool never replaces those, --force or not: choose an empty or new folder")
    return old


def _source_onnx(exported: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(manifest, [fp32 entry, fp16 entry where it exists]) with each file checked against its checksum."""
    from gantool.checkpoint import sha256_file
    from gantool.export import manifest as mf

    hint = f"run `gantool export --checkpoint RUN --format onnx --out {exported}` first, or pass --checkpoint RUN"
    if not (exported / mf.MANIFEST_NAME).exists():
        raise ArtifactError(f"no fp32 ONNX to take: {exported} has no {mf.MANIFEST_NAME} ({hint})")
    doc = mf.Manifest.load(exported)
    picked = []
    for dtype in ("fp32", "fp16"):
        entries = doc.find(format="onnx", dtype=dtype)
        if not entries:
            if dtype == "fp32":
                raise ArtifactError(f"no fp32 ONNX in {exported}: {hint}")
            continue
        path = exported / entries[0]["file"]
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in {exported}/{mf.MANIFEST_NAME} but missing: {hint}")
        if sha256_file(path) != entries[0]["sha256"]:
            raise ArtifactError(f"{path} does not match its checksum in {exported}/{mf.MANIFEST_NAME} (changed "
                                f"or corrupt): {hint}")
        picked.append(entries[0])
    return doc, picked


def build_site(out: str | Path, exported: str | Path | None = None, checkpoint: str | Path | None = None,
               ort_web: str | Path | None = None, force: bool = False, seed: int = 0,
               dtypes: tuple[str, ...] = ("fp32",), check: Callable[[Path, list[dict[str, Any]]], Any] | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the site to `out` and return its model.json document.

    With `checkpoint`, the ONNX is exported from it (fp32, plus fp16 if in `dtypes`) into a temporary
    folder, where `check(folder, entries)` (the CLI's parity check; it raises on a failure) sees it;
    otherwise it is taken from `exported` (default ./exported), fp32 required, fp16 where present.
    """
    say = log or (lambda msg: None)
    out = Path(out)
    exported = Path(exported) if exported is not None else Path("exported")
    protect = [exported] + ([Path(checkpoint)] if checkpoint is not None else [])
    previous = _check_out(out, force, protect)
    bad = [d for d in dtypes if d not in ("fp32", "fp16")]
    if bad:
        raise ConfigError(f"--format web takes fp32 and fp16 ONNX, not {', '.join(bad)}")
    runtime, why = pick_runtime(ort_web)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gantool-onnx-") as tmp_export:
        if checkpoint is not None:
            from gantool.export import export_artifacts

            entries = export_artifacts(checkpoint, ["onnx"], tmp_export, dtypes=list(dict.fromkeys(("fp32", *dtypes))),
                                       log=say)
            if check is not None:
                check(Path(tmp_export), entries)
            source = Path(tmp_export)
        else:
            source = exported
        doc, entries = _source_onnx(source)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            meta = _write_site(tmp, source, doc, entries, runtime, seed, say, why)
            _replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if previous is not None:
        say(f"replaced the earlier gantool site in {out}/ (built {previous.get('created') or 'at an unknown time'}"
            f"{'' if previous.get('source_sha256') == meta.get('source_sha256') else ' from another generator'})")
    return meta


def site_from_onnx(onnx_path: str | Path, out: str | Path, ort_web: str | Path, seed: int = 0) -> dict[str, Any]:
    """A site around one exported .onnx, its facts read from the file's gantool metadata (the bench's web rows)."""
    from gantool.export import read_artifact

    path, out = Path(onnx_path), Path(out)
    _, dtype, props = read_artifact(path)
    if dtype not in ("fp32", "fp16"):
        raise ArtifactError(f"{path} is {dtype}; the web page runs fp32 and fp16 ONNX")
    doc = {"source_checkpoint": None, "source_sha256": props.get("gantool.source_sha256")}
    out.mkdir(parents=True)
    return _write_site(out, path.parent, doc, [{"file": path.name, "dtype": dtype}], find_runtime(ort_web), seed,
                       lambda msg: None)


def _write_site(site: Path, source: Path, doc: dict[str, Any], entries: list[dict[str, Any]],
                runtime: tuple[Path, str | None] | None, seed: int, say: Callable[[str], None],
                why: str = "") -> dict[str, Any]:
    import gantool
    from gantool.checkpoint import sha256_file
    from gantool.export import read_artifact

    sig = read_artifact(source / entries[0]["file"])[0]  # what the page feeds and draws: the file's own signature
    if sig.label is not None:
        raise ConfigError(f"--format web: this generator also takes class labels ({sig.label.name}), and the page "
                          "feeds z alone so far; serve it (gantool serve) or sample it (gantool sample --class K)")

    os.chmod(site, 0o755)  # mkdtemp makes 0700; a site is meant to be served
    for name in PAGE_FILES:
        shutil.copyfile(ASSETS / name, site / name)
    models = []
    for e in entries:
        name = "generator.onnx" if e["dtype"] == "fp32" else f"generator.{e['dtype']}.onnx"
        shutil.copyfile(source / e["file"], site / name)
        models.append({"file": name, "dtype": e["dtype"], "bytes": (site / name).stat().st_size,
                       "sha256": sha256_file(site / name), "opset": e.get("opset")})
    latent_dim = sig.latent_dim
    z = sig.latents(FIXED_N, seed).numpy().astype("<f4")  # the same z as `gantool sample --n 64 --seed SEED`
    (site / "z.bin").write_bytes(z.tobytes())
    if runtime is None:
        version = ort_web_version()
        ort = {"version": version, "source": "cdn", "base": cdn_base(version),
               "wasm_script": WASM_FILES[0], "webgpu_script": WEBGPU_FILES[0]}
        say(f"runtime: onnxruntime-web {version} loaded by the page from the CDN {ort['base']}: the page needs the "
            f"network ({why})")
    else:
        dist, version = runtime
        (site / "ort").mkdir(mode=0o755)
        webgpu = all((dist / f).is_file() for f in WEBGPU_FILES)
        for f in WASM_FILES + (WEBGPU_FILES if webgpu else ()):
            shutil.copyfile(dist / f, site / "ort" / f)
        ort = {"version": version, "source": "local", "base": "ort/", "wasm_script": WASM_FILES[0],
               "webgpu_script": WEBGPU_FILES[0] if webgpu else None}
        pinned = ort_web_version()
        say(f"runtime: onnxruntime-web {version or '(version unknown)'} copied into the site from {dist}: the page "
            "works offline" + (f" ({why})" if why != "--ort-web" else "")
            + ("" if webgpu else "; no WebGPU build there: the page runs on wasm only")
            + (f"; gantool pins {pinned}" if version != pinned else ""))
    meta = {
        "format": SITE_FORMAT, "version": SITE_VERSION,
        "input": sig.input_name, "output": sig.output_name, "signature": sig.to_dict(),
        "latent_dim": latent_dim, "img_shape": list(sig.img_shape),
        "input_shape": ["N", *sig.latent_shape], "output_shape": ["N", *sig.img_shape],
        "value_range": list(sig.value_range), "seed": seed,
        "fixed_z": {"file": "z.bin", "n": FIXED_N, "seed": seed, "dtype": "float32", "byte_order": "little",
                    "shape": [FIXED_N, latent_dim], "made_by": f"gantool.noise.latent({FIXED_N}, {seed})"},
        "source_checkpoint": doc.get("source_checkpoint"), "source_sha256": doc.get("source_sha256"),
        "models": models, "ort_web": ort,
        "gantool_version": gantool.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (site / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    for p in site.rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    say(f"site: {', '.join(m['file'] for m in models)}, model.json, page; {total / 1e6:.1f} MB")
    return meta


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished site into place; an old --out is moved aside first and removed last."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "site")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "site", out)  # put the old site back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
