"""Triton Python-backend model (copied as generator_python/1/model.py by `gantool export --format triton
--kind python`): runs the ONNX file beside it (1/model.onnx) with onnxruntime on CPU, so a plain
tritonserver with only the Python backend serves the generator. Needs numpy<2 and onnxruntime in the
Python environment the backend stub runs in; it does not import gantool.

Each execute() call gets the requests Triton's dynamic batcher grouped; they run as one ONNX batch. A
conditional generator's class labels arrive as (N, 1) INT64 and go to the graph as (N,).
Per request: an empty batch ([0, latent]) gets an error; NaN/Inf in z are served (the generator maps
rows independently, so only that request's images are non-finite). Wrong input names, shapes,
dtypes and batches above max_batch_size are refused by Triton before execute().
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if int(np.__version__.split(".")[0]) >= 2:
            # The stub's tensor conversion is built for NumPy 1.x: under NumPy 2 inputs read wrong.
            raise pb_utils.TritonModelException(f"numpy {np.__version__}: this Triton Python backend needs numpy<2")
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.input_names = [i["name"] for i in config["input"]]  # the latent first, then labels (if any)
        self.input_name = self.input_names[0]
        self.output_name = config["output"][0]["name"]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(os.path.join(folder, params.get("onnx_file", "model.onnx")), opts,
                                            providers=["CPUExecutionProvider"])
        self.graph = [(g.name, len(g.shape)) for g in self.session.get_inputs()]  # same order as the config

    def execute(self, requests):
        zs, feeds, responses, good = [], [], [None] * len(requests), []
        for i, request in enumerate(requests):
            xs = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names]
            if xs[0].shape[0] == 0:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError("empty batch: z has 0 rows"))
                continue
            zs.append(xs[0])
            feeds.append(xs)
            good.append(i)
        if zs:
            batch = {name: np.concatenate([f[k] for f in feeds]).reshape(-1) if rank == 1
                     else np.concatenate([f[k] for f in feeds]) for k, (name, rank) in enumerate(self.graph)}
            images = self.session.run(None, batch)[0]
            start = 0
            for i, z in zip(good, zs):
                out = np.ascontiguousarray(images[start:start + z.shape[0]])
                start += z.shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, out)])
        return responses
