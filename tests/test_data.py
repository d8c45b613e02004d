"""Data sources: normalisation to [-1, 1], the IDX reader on synthetic files, fallbacks, seed dataset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gantool import data as gdata
from gantool.data import load_dataset, load_idx_dir, normalize, read_idx, write_idx
from gantool.errors import DataError


def test_normalize_maps_pixels_to_minus_one_one():
    x = normalize(np.array([[[0, 255], [51, 204]]], dtype=np.uint8).repeat(14, 1).repeat(14, 2))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.isclose(x[0, 0, 14, 0], torch.tensor(51 / 255 * 2 - 1))


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist-5k")


def test_bundled_subset_split_and_range(mnist5k):
    test = load_dataset("mnist-5k", split="test")
    assert len(mnist5k) == 4500 and len(test) == 500
    assert mnist5k.images.shape == (4500, 1, 28, 28)
    assert mnist5k.images.min() == -1.0 and mnist5k.images.max() == 1.0
    assert torch.bincount(test.labels, minlength=10).tolist() == [50] * 10
    assert mnist5k.provenance["fallback"] is False and mnist5k.provenance["n"] == 4500


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(p, arr)
    assert np.array_equal(read_idx(p), arr)


def test_idx_rejects_bad_magic_and_truncation(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)
    good = tmp_path / "good"
    write_idx(good, arr)
    raw = good.read_bytes()
    (tmp_path / "magic").write_bytes(b"\x00\x00\x0d" + raw[3:])  # float type code, not uint8
    (tmp_path / "short").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "magic")
    with pytest.raises(DataError, match="expected"):
        read_idx(tmp_path / "short")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "absent")


def _write_mnist_dir(root, n=30, split="train"):
    rng = np.random.default_rng(1)
    prefix = "train" if split == "train" else "t10k"
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"{prefix}-images-idx3-ubyte.gz", x)
    write_idx(root / f"{prefix}-labels-idx1-ubyte", y)
    return x, y


def test_mnist_and_fashion_from_idx_dirs(tmp_path):
    x, y = _write_mnist_dir(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", tmp_path, download=False)
    assert len(ds) == 30 and ds.provenance["fallback"] is False
    assert torch.equal(ds.labels, torch.from_numpy(y.astype(np.int64)))
    assert torch.equal(ds.images, normalize(x))
    _write_mnist_dir(tmp_path / "fashion", n=12)
    assert len(load_dataset("fashion-mnist", tmp_path / "fashion", download=False)) == 12
    assert load_idx_dir(tmp_path / "nowhere") is None


def test_idx_dir_with_wrong_shapes(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 10, 10), dtype=np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((4,), dtype=np.uint8))
    with pytest.raises(DataError, match="not 28x28"):
        load_dataset("mnist", tmp_path, download=False)


def test_mnist_falls_back_loudly_when_offline(tmp_path, monkeypatch, caplog):
    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(gdata, "_torchvision", offline)
    with caplog.at_level("WARNING"):
        ds = load_dataset("mnist", tmp_path)
    assert ds.provenance["fallback"] is True and ds.name == "mnist-5k" and len(ds) == 4500
    assert "ConnectionError" in ds.provenance["fallback_reason"]
    assert "FALLING BACK" in caplog.text


def test_fashion_without_data_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(gdata, "_torchvision", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    monkeypatch.setattr(gdata, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    with pytest.raises(DataError, match="fashion-mnist not found"):
        load_dataset("fashion-mnist", tmp_path)


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_seed_reference_dataset_reproduces_the_same_tensors(mnist5k):
    """The seed loop's per-sample ToTensor+Normalize gives exactly gantool's resident tensor."""
    from gantool.train.seed_loop import seed_dataset

    ds = seed_dataset(mnist5k.images[:20], mnist5k.labels[:20])
    for i in (0, 7, 19):
        img, label = ds[i]
        assert img.shape == (1, 28, 28) and label == int(mnist5k.labels[i])
        assert torch.allclose(img, mnist5k.images[i], atol=1e-6)
