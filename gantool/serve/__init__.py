"""Serving on a real Triton Inference Server (the `nvidia-pytriton` wheel's tritonserver 2.51):
`gantool serve` (PyTriton, gantool's own Runner per batch), the plain tritonserver launcher for
`export --format triton --kind python` repositories, and the load test behind `bench --concurrency`.

Every module imports pytriton/tritonclient/torch inside functions, so `gantool --help` stays fast.
"""
