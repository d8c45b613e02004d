"""The quality classifier: accuracy, the cache (safe load, keyed by data), and no-data errors."""
from __future__ import annotations

import pytest
import torch

from gantool.quality import classifier as clf
from gantool.data import Dataset
from gantool.errors import DataError


def test_reaches_its_accuracy_and_is_cached(quality_reference):
    c = quality_reference.classifier
    assert c.accuracy >= clf.SPACES["cnn"].min_accuracy
    # Measured again on the held-out split, not just read back from the cache.
    assert clf.accuracy(c.net.cpu(), quality_reference.test) == pytest.approx(c.accuracy)
    assert c.path is not None and c.path.exists() and c.path.parent == clf.cache_dir()
    payload = torch.load(c.path, weights_only=True)  # plain tensors and builtins only
    assert payload["format"] == clf.FORMAT and payload["accuracy"] == c.accuracy


def test_second_load_comes_from_the_cache(quality_reference, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(clf, "train_classifier", no_training)
    again = clf.get_classifier("mnist-5k", splits=(quality_reference.train, quality_reference.test))
    assert again.path == quality_reference.classifier.path and again.accuracy == quality_reference.classifier.accuracy


def test_cache_key_follows_the_data(quality_reference):
    tr, te = quality_reference.train, quality_reference.test
    changed = Dataset(tr.name, tr.images.clone(), tr.labels.clone())
    changed.images[0, 0, 0, 0] = 1.0
    assert clf.data_hash(changed, te) != clf.data_hash(tr, te)


def test_features_have_the_fid_shape(quality_reference):
    fx = quality_reference.classifier.feature_extractor()
    out = fx(quality_reference.test.images[:5])
    assert out.shape == (5, fx.num_features) and out.dtype == torch.float32


def test_shift_augmentation_moves_digits_and_keeps_background():
    x = torch.full((6, 1, 28, 28), -1.0)
    x[:, :, 10:18, 10:18] = 1.0
    y = clf.shift(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    assert (y.sum(dim=(1, 2, 3)) == x.sum(dim=(1, 2, 3))).all()  # a 2-px shift keeps a central blob whole
    assert not torch.equal(y, x)


def test_no_data_and_no_cache_is_a_data_error(monkeypatch, tmp_path):
    import gantool.data as data

    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "absent")

    def offline(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(data, "_torchvision", offline)
    with pytest.raises(DataError, match="cannot be trained"):
        clf.get_classifier("fashion-mnist", tmp_path)


def test_second_space_is_another_classifier_cached_apart(quality_reference):
    a, b = quality_reference.spaces["cnn"].classifier, quality_reference.spaces["mlp"].classifier
    assert b.accuracy >= clf.SPACES["mlp"].min_accuracy
    assert a.accuracy >= clf.SPACES["cnn"].min_accuracy
    assert b.path is not None and b.path != a.path and b.path.parent == a.path.parent
    assert torch.load(b.path, weights_only=True)["space"] == "mlp"
    assert not any(isinstance(m, torch.nn.Conv2d) for m in b.net.modules())  # another architecture
    test = quality_reference.test.images[:50]
    assert b.features(test).shape == (50, 64) and a.features(test).shape == (50, 128)
    # Same digits, different opinions: the two nets do not make the same mistakes.
    pa, pb = a.predict_proba(quality_reference.test.images), b.predict_proba(quality_reference.test.images)
    assert not torch.equal(pa.argmax(1), pb.argmax(1))


def test_training_reports_progress_with_an_extrapolated_estimate(quality_reference, monkeypatch):
    """A fake clock: 1 s a batch. The estimate must be elapsed * (steps left / steps done)."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(clf.time, "perf_counter", lambda: float(next(ticks)))
    tr = quality_reference.train
    small = Dataset(tr.name, tr.images[:640], tr.labels[:640])  # 5 batches of 128 an epoch
    lines: list[str] = []
    net, acc = clf.train_classifier(small, quality_reference.test, "mlp", epochs=3, progress=lines.append)
    assert lines[0].startswith("classifier: training the mlp classifier") and "3 epochs on 576 digits" in lines[0]
    estimates = [ln for ln in lines if "s left" in ln]
    assert estimates, lines
    import re
    for ln in estimates:
        pct, elapsed, left = map(int, re.search(r"(\d+)% in (\d+) s, about (\d+) s left", ln).groups())
        # 1 s a batch: left / elapsed == steps left / steps done, up to the rounding of the numbers shown
        assert left == pytest.approx(elapsed * (100 - pct) / pct, rel=0.2, abs=2), ln
    assert lines[-1].startswith("classifier: mlp trained in") and f"{acc:.1%}" in lines[-1]
