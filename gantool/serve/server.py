"""`gantool serve`: the exported generator behind PyTriton's Triton (tritonserver 2.51 + Python backend).

Model `generator`: input `z` FP32 [latent], output `images` FP32 [C, H, W], the batch dimension
Triton's, dynamic batcher on. Each batch the batcher forms is run by gantool's own Runner for the
artifact (the computation `gantool verify` checked). I/O is FP32 whatever the artifact's dtype: the
Runner casts, as it does in-process.

Contract for odd requests (Triton answers these before the model sees them, with an error): a wrong
input name, a wrong shape or dtype, a batch above max_batch_size. An empty batch ([0, latent]) gets
an error from the model. NaN/Inf in z are served, not rejected: the generator maps rows
independently, so such a request gets non-finite (or saturated) images and the other requests in
the same batch are untouched (rejecting would fail the whole batch Triton formed).

Readiness: the model is in the repository before tritonserver starts and is loaded at its startup,
before it opens its ports, so the first ready answer of /v2/health/ready (HTTP) or gRPC ServerReady
means requests to the model succeed. The model config's parameters say what is served
(gantool.dtype, gantool.artifact, gantool.sha256, gantool.backend): bench judges answers by that dtype.
"""
from __future__ import annotations

import os
import sys
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gantool.backends import get
from gantool.signature import LATENT
from gantool.errors import ArtifactError, ConfigError, DeviceError, GantoolError
from gantool.serve.env import HOST, check_ports, check_python_abi, require_pytriton, server_env

MODEL = "generator"


def served_backends() -> list[str]:
    """What --backend takes: the table's serving backends, and their aliases (torch = torchscript)."""
    from gantool.backends import table

    return [n for b in table() if b.serves for n in (b.name, *b.aliases)]
EXIT_TIMEOUT_S = 4  # after SIGINT/SIGTERM: in-flight requests and the model unload (~2.5 s here) get this long


@dataclass
class ServeOptions:
    exported: Path | None = None
    artifact: Path | None = None
    backend: str = "ort"
    max_batch_size: int = 256
    max_queue_delay_us: int = 500
    instances: int = 1
    host: str = HOST
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    threads: int | None = None  # ORT/OpenVINO/torch intra-op threads per instance (default: the runtime's)

    def validate(self) -> None:
        if self.backend not in served_backends():
            raise ConfigError(f"unknown --backend {self.backend!r}; choose one of: {', '.join(served_backends())}")
        if self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be >= 1 (got {self.max_batch_size})")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"--max-queue-delay-us must be >= 0 (got {self.max_queue_delay_us})")
        if self.instances < 1:
            raise ConfigError(f"--instances must be >= 1 (got {self.instances})")
        if self.exported is None and self.artifact is None:
            raise ConfigError("give --exported DIR (the folder `gantool export` wrote) or --artifact FILE")


def resolve_artifact(opts: ServeOptions) -> Path:
    """--artifact as given (its suffix must fit --backend), else the manifest's fp32 artifact for --backend."""
    from gantool.export import get_format

    fmt = get(opts.backend).format
    suffix = get_format(fmt).suffix
    if opts.artifact is not None:
        if not opts.artifact.is_file():
            raise ArtifactError(f"--artifact {opts.artifact} does not exist")
        if opts.artifact.suffix != suffix:
            raise ConfigError(f"--artifact {opts.artifact}: backend {opts.backend} serves {suffix} files")
        return opts.artifact
    exported = opts.exported
    assert exported is not None
    if not (exported / "manifest.json").is_file():
        raise ArtifactError(f"--exported {exported} has no manifest.json (run `gantool export --out {exported}`)")
    from gantool.export.manifest import Manifest

    entries = Manifest.load(exported).find(format=fmt, dtype="fp32", device="cpu")
    if not entries:
        raise ArtifactError(f"no fp32 {fmt} artifact in {exported} for --backend {opts.backend} "
                            f"(run `gantool export --format {fmt} --out {exported}`, or pass --artifact FILE)")
    path = exported / entries[0]["file"]
    if not path.is_file():
        raise ArtifactError(f"{path} is listed in {exported}/manifest.json but missing")
    return path


def load_runners(path: Path, opts: ServeOptions) -> list[Any]:
    """One Runner per instance (each with its own session), loaded before the server starts."""
    from gantool.runners import load_runner

    spec = get(opts.backend)
    backend = spec.name
    kw: dict[str, Any] = {}
    if opts.threads and "threads" in spec.options:
        kw["threads"] = opts.threads  # ORT puts them in its session settings; TorchScript uses torch's own
    # "auto": the dtype the artifact itself says it holds (an fp16 or int8 file copied without its manifest too)
    return [load_runner(path, backend, device="cpu", dtype="auto", **kw) for _ in range(opts.instances)]


def model_parameters(path: Path, info: Any) -> dict[str, str]:
    """What the served model says about itself in its Triton model config (`parameters`), so a client
    (gantool bench) judges its answers by the served artifact's dtype, whatever the FP32 I/O."""
    from gantool.checkpoint import sha256_file

    return {"gantool.dtype": info.dtype, "gantool.artifact": path.name, "gantool.sha256": sha256_file(path),
            "gantool.backend": info.backend}


def infer_callable(runner: Any) -> Callable[..., Any]:
    """The batched PyTriton callable: z (N, *latent) float32 [+ labels (N, 1) int64] -> {"images": (N, C, H, W)}.
    Labels out of range fail the request's batch with an error (the server keeps serving)."""
    import numpy as np
    import torch
    from pytriton.decorators import batch
    from pytriton.exceptions import PyTritonBadParameterError

    sig = runner.info.signature

    @batch
    def infer(**inputs: Any) -> dict[str, Any]:
        z = inputs[sig.input_name]
        if z.shape[0] == 0:
            raise PyTritonBadParameterError(f"empty batch: {sig.input_name} has 0 rows")
        labels = None
        if sig.label is not None:
            labels = torch.from_numpy(np.ascontiguousarray(inputs[sig.label.name]).reshape(-1))
        try:
            x = runner.prepare(torch.from_numpy(np.ascontiguousarray(z, np.float32)), labels)
        except GantoolError as e:  # labels out of range, not integers: the client's mistake
            raise PyTritonBadParameterError(str(e)) from None
        images = runner.to_cpu(runner.run(x))
        return {sig.output_name: images.numpy()}

    return infer


def served_inputs(sig: Any) -> list[Any]:
    """PyTriton's tensors for the signature's inputs: z (*latent_shape) float32, labels (1,) int64."""
    import numpy as np
    from pytriton.model_config import Tensor

    return [Tensor(name=i.name, dtype=np.float32, shape=tuple(i.shape)) if i.role == LATENT
            else Tensor(name=i.name, dtype=np.int64, shape=(1,)) for i in sig.inputs]


def serve(opts: ServeOptions, log: Callable[[str], None] = print) -> None:
    """Start the server, log its URLs, block until SIGINT/SIGTERM (or the server dies), stop it.
    The server's own log and PyTriton's workspace go to a temp folder ($TMPDIR/gantool-serve-*),
    named in the output; it is removed after a clean stop."""
    opts.validate()
    require_pytriton()
    path = resolve_artifact(opts)
    check_python_abi()
    ports = {"--http-port": opts.http_port, "--grpc-port": opts.grpc_port, "--metrics-port": opts.metrics_port}
    check_ports(opts.host, ports)
    runners = load_runners(path, opts)
    info = runners[0].info
    os.environ.update(server_env())  # PyTriton starts tritonserver with a copy of os.environ
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import (DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonLifecyclePolicy,
                                 TritonSecurityConfig)

    log_file = Path(tempfile.mkdtemp(prefix="gantool-serve-")) / "tritonserver.log"
    config = TritonConfig(http_address=opts.host, http_port=opts.http_port, grpc_address=opts.host,
                          grpc_port=opts.grpc_port, metrics_address=opts.host, metrics_port=opts.metrics_port,
                          exit_timeout_secs=EXIT_TIMEOUT_S, allow_gpu_metrics=False, log_file=log_file,
                          strict_readiness=True)
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    # PyTriton guards admin endpoints with a generated token; statistics (read-only, what bench's
    # load test reports queue/compute time and formed batches from) stay open.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    # Readiness that tells the truth (issue 35.6): PyTriton's default starts tritonserver with no model
    # and loads it through the API afterwards, so /v2/health/ready said ready ~2.5 s before the model
    # was. With the model written to the repository first (local_model_store), tritonserver loads it
    # at startup (--load-model=*) and opens its HTTP/gRPC ports only after that load: the first ready
    # answer on either port comes with the model ready (strict readiness, Triton's default, kept on).
    policy = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)
    # PyTriton's workspace (model store, sockets) beside the log, not in ~/.cache/pytriton: one folder
    # per server under $TMPDIR, removed after a clean stop
    triton = Triton(config=config, security_config=security, triton_lifecycle_policy=policy,
                    workspace=log_file.parent / "workspace")
    try:
        t0 = time.perf_counter()
        try:
            triton.bind(MODEL, [infer_callable(r) for r in runners],
                        inputs=served_inputs(info.signature),
                        outputs=[Tensor(name=info.signature.output_name, dtype=np.float32,
                                        shape=tuple(info.img_shape))],
                        config=ModelConfig(max_batch_size=opts.max_batch_size,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=opts.max_queue_delay_us)),
                        strict=True)
            params = model_parameters(path, info)
            from pytriton.model_config.generator import ModelConfigGenerator

            for model in triton._model_manager.models:  # pytriton 0.7 (pinned) has no public hook for a
                cfg = model._get_triton_model_config()  # model's parameters: add them, rewrite its config
                cfg.backend_parameters.update(params)
                ModelConfigGenerator(config=cfg).to_file(triton._workspace.model_store_path / model.model_name / "config.pbtxt")
            triton.run()
        except Exception as e:  # noqa: BLE001 - PyTriton raises its own types; the server log says why
            from gantool.errors import first_line

            raise DeviceError(f"Triton did not start: {first_line(e)} (server log: {log_file})") from None
        log(f"serving {path} ({info.backend}, {info.dtype}) as model '{MODEL}' in {time.perf_counter() - t0:.1f} s: "
            f"max_batch_size {opts.max_batch_size}, max_queue_delay {opts.max_queue_delay_us} µs, "
            f"{opts.instances} instance(s)")
        log(f"  HTTP    http://{opts.host}:{opts.http_port}/v2/models/{MODEL}")
        log(f"  gRPC    {opts.host}:{opts.grpc_port}   (gantool bench --backends triton --url "
            f"{opts.host}:{opts.grpc_port} --triton-model {MODEL})")
        log(f"  metrics http://{opts.host}:{opts.metrics_port}/metrics")
        log(f"  server log {log_file} (removed after a clean stop)")
        log(f"  ready   http://{opts.host}:{opts.http_port}/v2/health/ready (ready means the model answers)")
        log("  stop with Ctrl-C or SIGTERM")
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise GantoolError(f"the Triton server stopped on its own (server log: {log_file})")
        log("stopping the server")
    finally:
        t1 = time.perf_counter()
        triton.stop()
        for s, h in old.items():
            signal.signal(s, h)
        if stop.is_set():
            log(f"stopped in {time.perf_counter() - t1:.1f} s")
            shutil.rmtree(log_file.parent, ignore_errors=True)  # a clean stop: nothing in it to look at
        sys.stdout.flush()
