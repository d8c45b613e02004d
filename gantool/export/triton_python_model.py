"""Triton Python-backend model (copied as generator_python/1/model.py by `gantool export --format triton
--kind python`): runs the ONNX file beside it (1/model.onnx) with onnxruntime on CPU, so a plain
tritonserver with only the Python backend serves the generator. Needs numpy<2 and onnxruntime in the
Python environment the backend stub runs in; it does not import gantool.

Each execute() call gets the requests Triton's dynamic batcher grouped; they run as one ONNX batch.
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
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(os.path.join(folder, params.get("onnx_file", "model.onnx")), opts,
                                            providers=["CPUExecutionProvider"])
        self.graph_input = self.session.get_inputs()[0].name

    def execute(self, requests):
        zs, responses, good = [], [None] * len(requests), []
        for i, request in enumerate(requests):
            z = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if z.shape[0] == 0:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError("empty batch: z has 0 rows"))
                continue
            zs.append(z)
            good.append(i)
        if zs:
            images = self.session.run(None, {self.graph_input: np.concatenate(zs)})[0]
            start = 0
            for i, z in zip(good, zs):
                out = np.ascontiguousarray(images[start:start + z.shape[0]])
                start += z.shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, out)])
        return responses
