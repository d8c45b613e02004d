"""export_artifacts: the manifest, self-contained ONNX with metadata, re-export, atomic failure, refusals."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import pytest
import torch

from gantool.checkpoint import sha256_file
from gantool.errors import ArtifactError, ConfigError, ExportError, OutputError
from gantool.export import export_artifacts, get_format
from gantool.export.manifest import Manifest
from gantool.verify.artifacts import check_written


def test_manifest_describes_every_artifact(exported_dir, checkpoint_path):
    doc = Manifest.load(exported_dir).doc
    keys = {(e["format"], e["dtype"], e["device"]) for e in doc["artifacts"]}
    assert keys == {("onnx", "fp32", "any"), ("onnx", "fp16", "any"), ("torchscript", "fp32", "any"),
                    ("torchscript", "fp16", "any")}
    ckpt_sha = sha256_file(Path(checkpoint_path) / "checkpoint.pt")
    for e in doc["artifacts"]:
        assert e["sha256"] == sha256_file(exported_dir / e["file"])
        assert e["inputs"] == [{"name": "z", "shape": ["N", 100], "dtype": e["dtype"]}]
        assert e["outputs"] == [{"name": "images", "shape": ["N", 1, 28, 28], "dtype": e["dtype"]}]
        assert e["source_sha256"] == ckpt_sha and e["latent_dim"] == 100 and e["export_seconds"] > 0
        assert (e["opset"] >= 18) if e["format"] == "onnx" else e["opset"] is None
    assert doc["source_sha256"] == ckpt_sha


def test_onnx_is_one_checker_valid_file_with_metadata(exported_dir, checkpoint_path):
    assert not list(exported_dir.glob("*.data")) and not list(exported_dir.glob(".*tmp"))
    model = onnx.load(str(exported_dir / "generator.fp32.onnx"), load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert [i.name for i in model.graph.input] == ["z"] and [o.name for o in model.graph.output] == ["images"]
    dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, 28, 28]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["gantool.latent_dim"] == "100" and props["gantool.image_shape"] == "1,28,28"
    assert props["gantool.value_range"] == "-1.0,1.0" and props["torch.version"] == torch.__version__
    assert props["gantool.source_sha256"] == sha256_file(Path(checkpoint_path) / "checkpoint.pt")
    assert "gantool.version" in props


def test_reexport_replaces_and_other_checkpoint_resets(checkpoint_path, tmp_path):
    from conftest import make_checkpoint

    out = tmp_path / "exp"
    first = export_artifacts(checkpoint_path, ["torchscript"], out)
    (out / first[0]["file"]).write_bytes(b"stale")  # a later export must replace this, not keep it
    second = export_artifacts(checkpoint_path, ["torchscript"], out)
    doc = Manifest.load(out).doc
    assert len(doc["artifacts"]) == 1 and doc["artifacts"][0]["sha256"] == sha256_file(out / second[0]["file"])
    assert second[0]["parity"] is None  # export checks nothing; the caller's next step does
    report = check_written(out, checkpoint_path, second)
    assert [r.name for r in report.results] == ["generator.fp32.ts"] and report.passed
    assert Manifest.load(out).doc["artifacts"][0]["parity"]["passed"] is True
    export_artifacts(checkpoint_path, ["torchscript"], out, dtypes=["bf16"])
    assert len(Manifest.load(out).doc["artifacts"]) == 2  # keyed by format + dtype + device
    other = make_checkpoint(tmp_path / "other.pt", seed=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(OutputError, match=r"holds 2 artifact\(s\) exported from another generator.*generator.bf16.ts.*--force"):
        export_artifacts(other, ["torchscript"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # refused: nothing touched
    export_artifacts(other, ["torchscript"], out, force=True)
    doc = Manifest.load(out).doc
    assert [e["file"] for e in doc["artifacts"]] == ["generator.fp32.ts"]
    assert not (out / "generator.bf16.ts").exists() and doc["source_sha256"] == sha256_file(other)


def test_failed_export_keeps_previous_artifact_and_manifest(checkpoint_path, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export_artifacts(checkpoint_path, ["torchscript"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fmt = get_format("torchscript")

    def half_written(module, spec, path, **kw):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("exporter crashed\nsecond line")

    monkeypatch.setattr("gantool.export.torchscript.FORMAT", dataclasses.replace(fmt, export=half_written))
    with pytest.raises(ExportError, match="^torchscript fp32 export failed: RuntimeError: exporter crashed$"):
        export_artifacts(checkpoint_path, ["torchscript"], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files, nothing changed


def test_refusals_write_nothing(checkpoint_path, tmp_path):
    out = tmp_path / "exp"
    with pytest.raises(ConfigError, match="onnx bf16: ONNX Runtime's CPU provider has no bf16"):
        export_artifacts(checkpoint_path, ["onnx"], out, dtypes=["bf16"])
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export_artifacts(checkpoint_path, ["tflite"], out)
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        export_artifacts(checkpoint_path, ["onnx"], out, dtypes=["fp8"])
    with pytest.raises(ConfigError, match="torchscript int8: .*only --format onnx"):
        export_artifacts(checkpoint_path, ["torchscript"], out, dtypes=["int8"])
    with pytest.raises(ConfigError, match="opsets 18"):
        export_artifacts(checkpoint_path, ["onnx"], out, opset=9)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        export_artifacts(checkpoint_path, ["torchscript"], blocker / "sub")
    assert not out.exists()


def test_all_with_bf16_skips_only_what_cannot_hold_it():
    from gantool.export import plan

    jobs, skipped = plan(["all"], ["bf16"], torch.device("cpu"), None)
    assert [(f.name, d) for f, d in jobs] == [("torchscript", "bf16"), ("aoti", "bf16")]
    assert len(skipped) == 1 and skipped[0].startswith("onnx bf16: ")


def test_read_manifest_rejects_foreign_json(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": []}))
    with pytest.raises(ArtifactError, match="not a gantool manifest"):
        Manifest.load(tmp_path)
    with pytest.raises(ArtifactError, match="not a directory"):
        Manifest.load(tmp_path / "nope")
