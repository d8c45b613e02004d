"""`gantool eval` through the CLI: checkpoint and ONNX agree; bad input is one line, no traceback."""
from __future__ import annotations

import json

import pytest

from conftest import gantool_cli, make_checkpoint

N = "600"


def _run(*args: str):
    return gantool_cli("eval", *args)


def _bad(result, *fragments: str) -> None:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in err


@pytest.fixture(scope="module")
def checkpoint_scores(checkpoint_path, quality_reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    r = _run("--checkpoint", str(checkpoint_path), "--n", N, "--json", str(out))
    assert r.exit_code == 0, r.output
    return r, json.loads(out.read_text())


def test_eval_checkpoint_prints_and_writes_json(checkpoint_scores):
    r, s = checkpoint_scores
    assert "FID" in r.stdout and "recognisability" in r.stdout and "floor" in r.stdout
    last = json.loads(r.stdout.strip().splitlines()[-1])  # compact JSON summary as the last line
    assert last["fid"] == s["fid"]
    assert s["n"] == int(N) and len(s["class_histogram"]) == 10
    # The fixture checkpoint is untrained: it must not pass the quality targets.
    assert s["fid_over_floor"] > 10 and not s["targets_met"]["fid_over_floor"]


def test_onnx_artifact_scores_like_its_checkpoint(checkpoint_scores, exported_dir, tmp_path):
    onnx = next(p for p in exported_dir.glob("*.onnx") if "fp32" in p.name or "16" not in p.name)
    out = tmp_path / "onnx.json"
    r = _run("--artifact", str(onnx), "--n", N, "--json", str(out))
    assert r.exit_code == 0, r.output
    a, c = json.loads(out.read_text()), checkpoint_scores[1]
    assert a["backend"] == "ort"
    assert a["fid"] == pytest.approx(c["fid"], rel=1e-3)  # same z, fp32 both: equal within float noise
    assert a["class_histogram"] == pytest.approx(c["class_histogram"], abs=2 / int(N))
    assert a["recognisability"] == pytest.approx(c["recognisability"], abs=2 / int(N))


def test_n_must_be_positive(checkpoint_path):
    _bad(_run("--checkpoint", str(checkpoint_path), "--n", "0"), "--n must be > 0")
    _bad(_run("--checkpoint", str(checkpoint_path), "--n", "-5"), "--n must be > 0")


def test_exactly_one_source(checkpoint_path, exported_dir):
    _bad(_run("--n", "10"), "exactly one of")
    onnx = next(exported_dir.glob("*.onnx"))
    _bad(_run("--checkpoint", str(checkpoint_path), "--artifact", str(onnx)), "exactly one of")


def test_not_a_digit_generator(tmp_path):
    small = make_checkpoint(tmp_path / "small.pt", img_size=14)  # G draws 14x14 images
    _bad(_run("--checkpoint", str(small), "--n", "10"), "makes 1x14x14 images", "do not apply", "--real")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not an onnx model")
    r = _run("--artifact", str(junk), "--n", "10")
    assert r.exit_code != 0 and r.stderr.startswith("error:") and "Traceback" not in r.output
    _bad(_run("--artifact", str(tmp_path / "missing.onnx")), "not found")


def test_dataset_without_data_or_cached_classifier(checkpoint_path, tmp_path, monkeypatch):
    import gantool.data as data

    monkeypatch.setenv("GANTOOL_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "absent")

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(data, "_torchvision", offline)
    r = _run("--checkpoint", str(checkpoint_path), "--n", "10", "--dataset", "fashion-mnist",
             "--data-dir", str(tmp_path))
    _bad(r, "cannot be trained")


def _verify(*args: str):
    return gantool_cli("verify", *args)


def test_verify_distribution_passes_on_faithful_artifacts(exported_dir, checkpoint_path, quality_reference, tmp_path):
    out = tmp_path / "verify.json"
    r = _verify("--exported", str(exported_dir), "--checkpoint", str(checkpoint_path),
                "--distribution", "300", "--json", str(out))
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("distribution ")]
    assert len(lines) == len(json.loads(out.read_text())["distribution"]) >= 2
    assert all(ln.endswith(": ok") for ln in lines), lines


def test_verify_distribution_fails_an_onnx_whose_last_layer_rows_are_permuted(exported_dir, checkpoint_path,
                                                                              quality_reference, tmp_path):
    """A real wrong artifact, at the default thresholds: the fp32 ONNX with its last Gemm's 784 output
    rows (weights and bias) in a seeded random order, re-hashed into the manifest so that only its
    values can tell. Element-wise parity fails it and is reported; distribution parity fails it too."""
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    from gantool.checkpoint import sha256_file

    name = "generator.fp32.onnx"
    out = tmp_path / "exp"
    out.mkdir()
    shutil.copy(exported_dir / name, out / name)
    doc = json.loads((exported_dir / "manifest.json").read_text())
    doc["artifacts"] = [e for e in doc["artifacts"] if e["file"] == name]
    model = onnx.load(str(out / name))
    last = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    trans_b = next((a.i for a in last.attribute if a.name == "transB"), 0)
    perm = np.random.default_rng(0).permutation(784)
    inits = {i.name: i for i in model.graph.initializer}
    for arg, axis in ((last.input[1], 0 if trans_b else 1), (last.input[2], 0)):  # B (784 output rows), bias
        arr = numpy_helper.to_array(inits[arg])
        inits[arg].CopyFrom(numpy_helper.from_array(np.take(arr, perm, axis=axis), arg))
    onnx.save(model, str(out / name))
    doc["artifacts"][0]["sha256"] = sha256_file(out / name)
    (out / "manifest.json").write_text(json.dumps(doc))

    r = _verify("--exported", str(out), "--checkpoint", str(checkpoint_path), "--distribution", "300",
                "--json", str(tmp_path / "v.json"))
    _bad(r, "distribution parity failed for generator.fp32.onnx")
    assert r.exit_code == 1
    assert f"{name}: FAIL (tolerance)" in r.stdout  # element-wise parity, reported beside it
    v = json.loads((tmp_path / "v.json").read_text())
    (d,) = v["distribution"]
    assert d["passed"] is False and d["label_agreement"] < 0.98, d  # default: >= 98% of z keep their digit
    assert not v["results"][0]["passed"]


def test_eval_reports_precision_recall_kid_in_two_feature_spaces(checkpoint_scores):
    r, s = checkpoint_scores
    assert set(s["feature_spaces"]) == {"cnn", "mlp"}
    for name, sp in s["feature_spaces"].items():
        for key in ("fid", "fid_floor", "fid_over_floor", "precision", "recall", "density", "coverage", "kid", "kid_std"):
            assert isinstance(sp[key], float), (name, key)
        real = sp["real_vs_real"]
        assert {"precision", "recall", "density", "coverage", "kid", "kid_std"} <= set(real)
        # The fixture G is untrained: blobs with next to no recall, far below real digits'.
        assert real["recall"] > 0.7 and sp["recall"] < 0.2 * real["recall"], (name, sp["recall"], real["recall"])
    primary = s["feature_spaces"]["cnn"]
    assert (s["fid"], s["precision"], s["recall"], s["kid"]) == (primary["fid"], primary["precision"],
                                                                primary["recall"], primary["kid"])
    assert not s["targets_met"]["recall_over_real"]
    for text in ("cnn features", "mlp features", "precision", "recall", "density", "coverage", "KID", "real"):
        assert text in r.stdout, text
    assert ("feature spaces disagree" in r.stdout) == s["spaces_disagree"]
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["recall"] == s["recall"] and last["real_vs_real"] == s["real_vs_real"]


def test_first_eval_shows_classifier_training_progress(checkpoint_path, quality_reference, tmp_path, monkeypatch):
    import shutil

    from gantool.quality import classifier as clf

    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(quality_reference.spaces["cnn"].classifier.path, cache)  # the CNN is cached, the MLP is not
    monkeypatch.setenv("GANTOOL_CACHE", str(cache))
    train = clf.train_classifier
    monkeypatch.setattr(clf, "train_classifier", lambda *a, **k: train(*a, **{**k, "epochs": 1}))  # keep it short
    r = _run("--checkpoint", str(checkpoint_path), "--n", "300")
    assert r.exit_code == 0, r.output
    err = r.stderr.strip().splitlines()
    assert err[0].startswith("classifier: training the mlp classifier for mnist-5k once"), err
    assert err[-1].startswith("classifier: mlp trained in") and "held-out accuracy" in err[-1], err
    assert all(ln.startswith("classifier: mlp") or "training the mlp" in ln for ln in err)  # the CNN came from the cache
    assert (cache / quality_reference.spaces["mlp"].classifier.path.name).is_file()


def test_kid_is_printed_as_mean_plus_minus_std_with_columns_apart():
    """Issue 36.4: a user generator's KID cells ran together (`0.3057+-0.000578-4.128e-06+-2.35e-05`): each
    KID is `mean ± std`, and every cell of the table stands apart from its neighbours."""
    import re

    from gantool.cli.eval_cmd import _metric_table

    def space(kid, kid_std, real_kid, real_std):
        m = dict(fid=12.5, precision=0.5, recall=0.25, density=0.75, coverage=0.5)
        return dict(m, features=128, fid_floor=1.5, kid=kid, kid_std=kid_std,
                    real_vs_real=dict(m, kid=real_kid, kid_std=real_std))
    lines = _metric_table({"random-conv": space(0.3057, 0.000578, -4.128e-06, 2.35e-05)}, untrained=True)
    kid = next(line for line in lines if line.strip().startswith("KID"))
    cells = [c for c in re.split(r"\s{2,}", kid.strip())[1:]]
    assert cells == ["0.306 ± 0.00058", "-4.13e-06 ± 2.3e-05"], kid
    for line in lines[2:]:  # every row: label, then one cell a column, two spaces apart at least
        assert len(re.split(r"\s{2,}", line.strip())) == 3, line
