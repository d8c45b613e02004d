"""The quality classifier: accuracy, the cache (safe load, keyed by data), and no-data errors."""
from __future__ import annotations

import pytest
import torch

from gantool.quality import classifier as clf
from gantool.data import Dataset
from gantool.errors import DataError


def test_reaches_its_accuracy_and_is_cached(quality_reference):
    c = quality_reference.classifier
    assert c.accuracy >= clf.MIN_ACCURACY["mnist-5k"]
    # Measured again on the held-out split, not just read back from the cache.
    assert clf.accuracy(c.cnn.cpu(), quality_reference.test) == pytest.approx(c.accuracy)
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
