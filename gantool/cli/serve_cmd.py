"""`gantool serve`: the exported generator on a real Triton Inference Server (PyTriton; the serve extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gantool import backends as backend_table
from gantool.cli.app import app
from gantool.cli.common import user_errors


@app.command()
@user_errors
def serve(
    exported: Annotated[Optional[Path], typer.Option(help="Directory of exported artifacts (with manifest.json): its fp32 artifact for --backend is served. Default: ./exported when it exists.")] = None,
    artifact: Annotated[Optional[Path], typer.Option(help="Serve this file instead (.onnx for ort/openvino, .ts for torch; fp16/int8 files too).")] = None,
    backend: Annotated[str, typer.Option(help="Runner that executes each batch: " + ", ".join(
        f"{b.name} ({b.about})" for b in backend_table.table() if b.serves) + "; torch means torchscript.")] = "ort",
    max_batch_size: Annotated[int, typer.Option(help="Largest batch Triton's dynamic batcher forms (and accepts in one request).")] = 256,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long the batcher may hold a request to grow the batch, in µs.")] = 500,
    instances: Annotated[int, typer.Option(help="Model instances (each its own Runner) Triton runs batches on in parallel.")] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Intra-op threads per instance (ORT/OpenVINO; default: the runtime's).")] = None,
    host: Annotated[str, typer.Option(help="Address every endpoint binds to (default loopback only; 0.0.0.0 exposes it).")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (what `gantool bench --url` takes).")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
) -> None:
    """Serve the exported generator as Triton model `generator` (z: latent -> images: C,H,W) until Ctrl-C/SIGTERM.

    Needs the serve extra: pip install 'gantool\\[serve]'. Load-test it with
    `gantool bench --backends triton --url HOST:GRPC_PORT --triton-model generator --concurrency 1,4,16`.
    """
    from gantool.errors import ConfigError

    if exported is None and artifact is None:
        if not Path("exported/manifest.json").exists():
            raise ConfigError("give --exported DIR (the folder `gantool export` wrote) or --artifact FILE")
        exported = Path("exported")
    if exported is not None and not exported.is_dir():
        raise ConfigError(f"--exported {exported} is not a directory")
    from gantool.serve.server import ServeOptions, serve as run_server

    opts = ServeOptions(exported=exported, artifact=artifact, backend=backend, max_batch_size=max_batch_size,
                        max_queue_delay_us=max_queue_delay_us, instances=instances, host=host, http_port=http_port,
                        grpc_port=grpc_port, metrics_port=metrics_port, threads=threads)
    run_server(opts, log=lambda msg: typer.echo(msg, err=False))
