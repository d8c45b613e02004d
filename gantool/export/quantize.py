"""int8 ONNX through ONNX Runtime's quantizer: static QDQ calibrated on gantool's seeded z, or dynamic."""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gantool.errors import ConfigError

METHODS = ("static", "dynamic")
DEFAULT_CALIBRATION_SAMPLES = 1024
# Not 0: verify, eval and bench draw their z from seed 0, and latent(n)'s first rows are latent(k)'s,
# so a seed-0 calibration set would be part of what the int8 file is then judged on.
CALIBRATION_SEED = 20_000
CALIBRATION_BATCH = 256
# keep_float_inputs: the ops that read z's signs, and the slicing between them and z
COMPARISONS = {"Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Equal", "Sign"}
PASS_THROUGH = {"Slice", "Gather", "Identity", "Reshape", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Quantization:
    """How an int8 artifact is made; its record() goes into the manifest entry and the file's metadata."""

    method: str = "static"
    calibration_samples: int | None = None  # static only; None = DEFAULT_CALIBRATION_SAMPLES
    calibration_seed: int = CALIBRATION_SEED

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown --quantization {self.method!r}; choose static or dynamic")
        n = self.calibration_samples
        if n is not None and n <= 0:
            raise ConfigError(f"--calibration-samples {n}: must be > 0 (static int8 sets its activation "
                              "ranges from that many calibration z)")
        if n is not None and self.method == "dynamic":
            raise ConfigError("--calibration-samples applies to --quantization static; dynamic int8 measures "
                              "activation ranges on each batch at run time and uses no calibration data")

    @property
    def samples(self) -> int:
        return 0 if self.method == "dynamic" else (self.calibration_samples or DEFAULT_CALIBRATION_SAMPLES)

    def record(self) -> dict[str, Any]:
        import onnxruntime as ort

        if self.method == "static":
            how = {"format": "QDQ", "weights": "int8 symmetric, per output channel",
                   "activations": "int8 per tensor, ranges from calibration (MinMax)",
                   "calibration_samples": self.samples, "calibration_seed": self.calibration_seed,
                   "calibration_z": "gantool.noise.latent(calibration_samples, calibration_seed)"}
        else:
            how = {"format": "QOperator (DynamicQuantizeLinear + MatMulInteger)",
                   "weights": "int8 symmetric, per output channel",
                   "activations": "uint8 per tensor, range measured on each batch at run time",
                   "calibration_samples": 0, "calibration_seed": None}
        return {"method": self.method, **how, "tool": f"onnxruntime.quantization {ort.__version__}"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer warns 'consider pre-processing' through the root logger; gantool's graph needs none."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def quantize_onnx(fp32_path: Path, out_path: Path, q: Quantization, signature: Any) -> None:
    """Write the int8 version of the fp32 ONNX file at fp32_path to out_path (weights inside the file)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)

    if q.method == "dynamic":
        with _quiet():
            quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8)
        return

    # every input forward() takes: seeded z, and for a conditional G labels covering every class (they stay int64)
    feeds = [t.numpy() for t in signature.example(q.samples, q.calibration_seed)]
    names = [i.name for i in signature.inputs]

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{n: a[i:i + CALIBRATION_BATCH] for n, a in zip(names, feeds)}
                                 for i in range(0, q.samples, CALIBRATION_BATCH)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    with _quiet():
        quantize_static(str(fp32_path), str(out_path), Calibration(), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=False)
    keep_float_inputs(out_path)


def keep_float_inputs(path: Path) -> int:
    """Give the float consumers of a quantized graph input the input itself again.

    The QDQ quantizer puts one QuantizeLinear -> DequantizeLinear pair on z and hands its output to
    every consumer of z, also to those that stay in float: a G that reads a class off the signs of z
    (gantool.model.ClassCode) then compares z rounded to the int8 grid, where every coordinate within
    half a step of 0 reads as 0 (>= 0): ~7 % of z drew another digit (p99.9 error 1.95 on a trained
    G). Only comparisons get z back, directly or through a slice: compute nodes (Conv, MatMul, Concat
    feeding them) keep their DequantizeLinear input, which is what makes them int8 kernels. Returns
    how many inputs were given back; rewrites the file only then."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    inputs = {i.name for i in g.input}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    compares = lambda n: n.op_type in COMPARISONS  # noqa: E731
    to_compare = lambda n: compares(n) or (n.op_type in PASS_THROUGH and all(  # noqa: E731
        compares(c) for o in n.output for c in consumers.get(o, [])) and any(consumers.get(o) for o in n.output))
    original = {}  # DequantizeLinear output -> the graph input it stands for
    for n in g.node:
        if n.op_type == "DequantizeLinear" and (q := producer.get(n.input[0])) is not None \
                and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
            original[n.output[0]] = q.input[0]
    changed = 0
    for n in g.node:
        if not to_compare(n):
            continue
        for k, name in enumerate(n.input):
            if name in original:
                n.input[k] = original[name]
                changed += 1
    if changed:
        onnx.save_model(model, str(path), save_as_external_data=False)
    return changed
