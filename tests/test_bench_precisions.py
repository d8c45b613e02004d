"""Which precisions bench measures by default (native only, int8 where a file exists), how rows are
labelled (bf16 native/emulated, int8 method), cpu_isa in the environment, and OpenVINO as a peer backend."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import assert_one_line_error, gantool_cli, need_extra
from gantool.bench import backends
from gantool.device import bf16_support, cpu_isa

FAST = ["--batch-sizes", "3", "--min-time", "0", "--min-repeats", "2", "--warmup", "0"]
AVX2 = {"fpu", "sse2", "avx", "avx2", "fma"}
SAPPHIRE = AVX2 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}


def _bench(*args):
    return gantool_cli("bench", *args, *FAST)


@pytest.fixture(scope="module")
def int8_exported(tmp_path_factory, checkpoint_path):
    """fp32 + dynamic int8 ONNX of the fixture checkpoint (no verify: test_export_int8 covers it)."""
    from gantool.export import export_artifacts
    from gantool.export.quantize import Quantization

    out = tmp_path_factory.mktemp("bench_int8")
    export_artifacts(checkpoint_path, ["onnx"], out, dtypes=["fp32", "int8"],
                     quantization=Quantization("dynamic"))
    return out


def test_cpu_isa_and_bf16_support_from_flags():
    assert cpu_isa(AVX2) == {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False,
                             "avx512_bf16": False, "amx": False}
    assert all(cpu_isa(SAPPHIRE)[k] for k in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"))
    assert bf16_support("cpu", AVX2) == "emulated" and bf16_support("cpu", SAPPHIRE) == "native"
    assert set(cpu_isa()) == set(cpu_isa(AVX2))  # this machine's, same keys


@pytest.mark.parametrize("flags,want", [(AVX2, ["fp32"]), (SAPPHIRE, ["fp32", "bf16"])])
def test_default_precisions_are_the_native_ones(monkeypatch, flags, want):
    import gantool.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    assert backends.default_precisions("cpu", []) == want
    int8 = [{"format": "onnx", "dtype": "int8", "device": "any"}]
    assert backends.default_precisions("cpu", int8) == [*want, "int8"]
    assert backends.precision_support("cpu", "bf16") == ("native" if "bf16" in want else "emulated")


def test_default_bench_has_int8_ort_rows_and_no_emulated_bf16(int8_exported, checkpoint_path, monkeypatch, tmp_path):
    import gantool.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: AVX2)
    r = _bench("--exported", int8_exported, "--checkpoint", checkpoint_path, "--backends", "eager,ort",
               "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["config"]["precisions"] == ["fp32", "int8"]
    rows = {(x["backend"], x["precision"]): x for x in doc["results"]}
    assert set(rows) == {("eager", "fp32"), ("ort", "fp32"), ("ort", "int8")}  # no eager int8, no bf16
    int8 = rows[("ort", "int8")]
    assert int8["status"] == "ok" and int8["runtime"]["quantization"] == "dynamic" and int8["parity"]["passed"]
    assert int8["parity"]["atol"] > rows[("ort", "fp32")]["parity"]["atol"]  # its own, looser tolerance
    assert set(doc["environment"]["cpu_isa"]) >= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"}
    assert "int8 dynamic" in r.stdout


def test_explicit_bf16_rows_say_emulated(checkpoint_path, monkeypatch, tmp_path):
    import gantool.device as device

    monkeypatch.setattr(device, "cpu_flags", lambda: AVX2)
    r = _bench("--checkpoint", checkpoint_path, "--backends", "eager", "--precisions", "bf16",
               "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    row, = json.loads((tmp_path / "b.json").read_text())["results"]
    assert row["precision_support"] == "emulated" and "bf16 emulated" in r.stdout


def test_int8_for_torch_backends_only_is_one_line(int8_exported, checkpoint_path):
    r = _bench("--exported", int8_exported, "--checkpoint", checkpoint_path, "--backends", "eager,torchscript",
               "--precisions", "int8")
    assert_one_line_error(r, "int8 runs only from a quantized ONNX artifact", progress_prefix="bench:")


def test_openvino_not_installed_is_an_unavailable_row_with_the_pip_command(int8_exported, checkpoint_path,
                                                                             monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    r = _bench("--exported", int8_exported, "--checkpoint", checkpoint_path, "--backends", "ort,openvino",
               "--precisions", "fp32", "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    ov, = [x for x in json.loads((tmp_path / "b.json").read_text())["results"] if x["backend"] == "openvino"]
    assert ov["status"] == "unavailable" and "pip install 'gantool[openvino]'" in ov["reason"]
    assert "Traceback" not in r.output


def test_openvino_runs_fp32_and_int8_through_the_same_parity(int8_exported, checkpoint_path, tmp_path):
    need_extra("openvino", "openvino extra: pip install 'gantool[openvino]'")
    from gantool.runners import load_runner
    from gantool.verify.compare import verify_runner

    eager = load_runner(checkpoint_path, "eager")
    for dtype in ("fp32", "int8"):
        ov = load_runner(int8_exported / f"generator.{dtype}.onnx", "openvino", dtype="auto")
        assert (ov.info.backend, ov.info.dtype) == ("openvino", dtype)
        assert ov.info.extra["inference_precision_hint"] == "f32"
        assert verify_runner(eager, ov, batch_sizes=(1, 5)).passed
    r = _bench("--exported", int8_exported, "--checkpoint", checkpoint_path, "--backends", "openvino", "--precisions", "fp32,int8",
               "--json", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {x["precision"] for x in rows} == {"fp32", "int8"} and all(x["status"] == "ok" for x in rows)
    assert all(x["runtime"]["inference_precision_hint"] == "f32" for x in rows)
