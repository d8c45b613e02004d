"""A model served by Triton Inference Server, called through tritonclient's gRPC API, as a Runner."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gantool.errors import ConfigError, DeviceError
from gantool.runners.base import Runner, RunnerInfo
from gantool.signature import Signature

NUMPY = {"FP32": np.float32, "FP16": np.float16}
TIMEOUT_S = 10.0  # a server that does not answer a health check in this long counts as absent


class TritonRunner(Runner):
    """z -> one synchronous gRPC infer request -> images. Timing includes the network round trip
    and (de)serialisation, as a client of the server sees it."""

    def __init__(self, client: Any, url: str, model: str, dtype: str, signature: Signature | None = None):
        from gantool.errors import first_line

        self.client, self.model = client, model
        try:
            meta = client.get_model_metadata(model, as_json=True)
            server = client.get_server_metadata(as_json=True)
        except Exception as e:  # noqa: BLE001 - tritonclient raises its own exception type
            raise DeviceError(f"Triton at {url}: cannot read model {model!r}: {first_line(e)}") from None
        floats = [i for i in meta["inputs"] if i["datatype"] in NUMPY]
        ints = [i for i in meta["inputs"] if i["datatype"] == "INT64"]
        if len(floats) != 1 or len(ints) > 1 or len(meta["inputs"]) != len(floats) + len(ints):
            raise ConfigError(f"Triton model {model!r} takes {[(i['name'], i['datatype']) for i in meta['inputs']]}; "
                              "gantool sends one FP32/FP16 latent and at most one INT64 class label")
        (inp,), (out,) = floats, meta["outputs"]
        label = None
        if ints:  # a conditional G: how many classes is the generator's, not the server's, to say
            if signature is None or signature.n_classes is None:
                raise ConfigError(f"Triton model {model!r} takes class labels ({ints[0]['name']}); give bench the "
                                  "export folder (--exported DIR) so it knows the generator's classes")
            label = (ints[0]["name"], signature.n_classes)
        served = "fp16" if inp["datatype"] == "FP16" else "fp32"
        if served != dtype:
            raise ConfigError(f"Triton model {model!r} at {url} serves {served}, not {dtype}")
        self.input_name, self.output_name = inp["name"], out["name"]
        self.np_dtype = NUMPY[inp["datatype"]]
        self.datatype = inp["datatype"]
        versions = meta.get("versions") or [""]
        self.info = RunnerInfo(
            backend="triton", device="cpu", dtype=dtype,
            signature=Signature.latent_to_image(tuple(int(d) for d in inp["shape"][1:]), tuple(int(d) for d in out["shape"][-3:]),
                                                input_name=inp["name"], output_name=out["name"], label=label),
            source=f"grpc://{url}/{model}",
            extra={"model_version": str(versions[-1]), "server_version": server.get("version", ""),
                   "url": url, "model": model})

    def prepare(self, z: torch.Tensor, labels: Any = None) -> Any:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        xs = self.inputs(z, labels)
        x = np.ascontiguousarray(xs[0].numpy().astype(self.np_dtype))
        inp = InferInput(self.input_name, list(x.shape), self.datatype)
        inp.set_data_from_numpy(x)
        feeds = [inp]
        if len(xs) > 1:  # labels travel as (N, 1) int64: Triton's per-sample dims cannot be empty
            y = np.ascontiguousarray(xs[1].numpy().astype(np.int64).reshape(-1, 1))
            feeds.append(InferInput(self.info.signature.label.name, list(y.shape), "INT64"))
            feeds[-1].set_data_from_numpy(y)
        return feeds, [InferRequestedOutput(self.output_name)]

    def run(self, x: Any) -> Any:
        inputs, outputs = x
        result = self.client.infer(self.model, inputs, outputs=outputs)
        return result.as_numpy(self.output_name)

    def sync(self) -> None:
        """infer() returns once the response has arrived: nothing is left queued."""


def load_triton(source: str, device: str = "cpu", dtype: str = "fp32", model: str = "generator_onnx",
                client: Any = None, signature: Signature | None = None, **_: Any) -> Runner:
    """`source` is the server's gRPC HOST:PORT (Triton's default port is 8001)."""
    from gantool.errors import first_line

    url = str(source)
    if client is None:
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise DeviceError("backend triton needs tritonclient: pip install 'tritonclient[grpc]'") from None
        try:
            client = grpcclient.InferenceServerClient(url=url)
            live = client.is_server_live(client_timeout=TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - connection refused, bad address, timeout
            raise DeviceError(f"no Triton server at {url}: {first_line(e)}") from None
        if not live:
            raise DeviceError(f"Triton server at {url} is not live")
    if not client.is_model_ready(model):
        raise DeviceError(f"Triton server at {url} has no ready model {model!r} "
                          "(serve the folder written by `gantool export --format triton`)")
    return TritonRunner(client, url, model, dtype, signature)

