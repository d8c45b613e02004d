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

    def __init__(self, client: Any, url: str, model: str, dtype: str | None, signature: Signature | None = None):
        from gantool.errors import first_line

        self.client, self.model = client, model
        try:
            meta = client.get_model_metadata(model, as_json=True)
            server = client.get_server_metadata(as_json=True)
            params = served_parameters(client, model)
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
        served = served_dtype(params, inp["datatype"])
        if dtype is None:
            dtype = served
        if served != dtype:
            raise ConfigError(f"Triton model {model!r} at {url} serves {served}, not {dtype} "
                              f"(its artifact: {params.get('gantool.artifact') or 'not said'})")
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
                   "url": url, "model": model, "served_dtype": served,
                   "dtype_from": "model config parameter gantool.dtype" if params.get("gantool.dtype")
                   else f"input datatype {inp['datatype']}",
                   **{k.split(".", 1)[1]: v for k, v in params.items() if k in ("gantool.artifact", "gantool.sha256")}})

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


def served_parameters(client: Any, model: str) -> dict[str, str]:
    """The string parameters of the model's config (gantool serve and gantool's repository export
    put gantool.dtype, gantool.artifact and gantool.sha256 there)."""
    config = client.get_model_config(model, as_json=True, client_timeout=TIMEOUT_S).get("config", {})
    return {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items() if isinstance(v, dict)}


def served_dtype(params: dict[str, str], input_datatype: str) -> str:
    """The served artifact's dtype: what its config says, else what its input type implies."""
    return params.get("gantool.dtype") or ("fp16" if input_datatype == "FP16" else "fp32")


def load_triton(source: str, device: str = "cpu", dtype: str | None = "fp32", model: str | None = None,
                client: Any = None, signature: Signature | None = None, **_: Any) -> Runner:
    """`source` is the server's gRPC HOST:PORT (Triton's default port is 8001). `model` None: the one
    ready model the server holds (find_model). `dtype` None: whatever the served model's is. `signature`:
    the generator's (bench's manifest), for a conditional model's number of classes."""
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
    model = find_model(client, url, model)
    return TritonRunner(client, url, model, dtype, signature)


def probe_dtype(url: str, model: str | None) -> str | None:
    """The served model's dtype (None when the server or model cannot be read: its row says why)."""
    try:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(url=url)
        try:
            name = find_model(client, url, model)
            meta = client.get_model_metadata(name, as_json=True, client_timeout=TIMEOUT_S)
            return served_dtype(served_parameters(client, name), meta["inputs"][0]["datatype"])
        finally:
            client.close()
    except Exception:  # noqa: BLE001
        return None


# Names gantool gives its models: `gantool serve`'s, then `gantool export --format triton`'s.
KNOWN_MODELS = ("generator", "generator_onnx", "generator_torchscript", "generator_python")


def ready_models(client: Any) -> list[str]:
    """The models the server holds ready: its repository index where that is open (plain
    tritonserver), else those of gantool's own names that answer ready (gantool serve, whose
    PyTriton guards the repository endpoints with a token)."""
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=TIMEOUT_S).get("models", [])
        return sorted({m["name"] for m in index if m.get("state") == "READY"})
    except Exception:  # noqa: BLE001 - a guarded or missing repository endpoint: ask by name
        pass
    found = []
    for name in KNOWN_MODELS:
        try:
            if client.is_model_ready(name, client_timeout=TIMEOUT_S):
                found.append(name)
        except Exception:  # noqa: BLE001 - not there
            pass
    return found


def find_model(client: Any, url: str, model: str | None) -> str:
    """`model` when the server holds it ready; without one, the server's only ready model. Otherwise
    one line that lists the ready models and names --triton-model."""
    try:
        if model is not None and client.is_model_ready(model, client_timeout=TIMEOUT_S):
            return model
    except Exception:  # noqa: BLE001 - answered below with what is there
        pass
    ready = ready_models(client)
    if model is None and len(ready) == 1:
        return ready[0]
    listed = ", ".join(ready) if ready else "none"
    if model is not None:
        raise DeviceError(f"Triton server at {url} has no ready model {model!r} (ready: {listed}); "
                          "pass --triton-model NAME (gantool serve names it generator)")
    if ready:
        raise ConfigError(f"Triton server at {url} holds {len(ready)} ready models ({listed}): "
                          "pass --triton-model NAME")
    raise DeviceError(f"Triton server at {url} has no ready model: serve one (`gantool serve`, or "
                      "tritonserver with the folder `gantool export --format triton` writes)")
