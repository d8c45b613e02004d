"""Draw images through any checkpoint or artifact: a sample grid, and the side-by-side parity picture."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from gantool.runners import Runner, backend_for_path, load_runner
from gantool.errors import first_line
from gantool.noise import latent


def open_runner(source: "str | Path | object", backend: str | None = None, device: str = "cpu") -> Runner:
    """A checkpoint runs in eager fp32; an artifact runs in the dtype it was exported in."""
    backend = backend or backend_for_path(source)
    dtype = "fp32" if backend.startswith(("eager", "compile")) else "auto"
    return load_runner(source, backend, device=device, dtype=dtype)


def _grid(images: torch.Tensor, nrow: int, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """(N, C, H, W) in value_range -> (C, H', W') in [0, 1], 2-pixel padding; C is 1 (grey) or 3 (RGB),
    any other channel count shows its first channel."""
    from torchvision.utils import make_grid

    lo, hi = value_range
    if images.shape[1] not in (1, 3):
        images = images[:, :1]
    return make_grid(images.clamp(lo, hi), nrow=nrow, padding=2, normalize=True, value_range=(lo, hi))


def _image(grid: torch.Tensor):
    """(C, H, W) grid -> what imshow takes: (H, W) for grey, (H, W, 3) for RGB."""
    return grid[0].numpy() if grid.shape[0] == 1 else grid.permute(1, 2, 0).numpy()


def _mosaic(x: torch.Tensor, cols: int) -> torch.Tensor:
    """(N, C, H, W) raw values -> (rows*(H+2), cols*(W+2)) tiles with a zero border, no rescaling;
    several channels show their largest value per pixel."""
    tiles = torch.nn.functional.pad(x.amax(1), (1, 1, 1, 1), value=0)
    blank = (-tiles.shape[0]) % cols
    tiles = torch.cat([tiles, tiles.new_zeros(blank, *tiles.shape[1:])])
    h, w = tiles.shape[-2:]
    return tiles.reshape(-1, cols, h, w).permute(0, 2, 1, 3).reshape(-1, cols * w)


def sample_grid(source: "str | Path | object", out: str | Path, n: int = 64, seed: int = 0,
                backend: str | None = None, device: str = "cpu", classes: list[int] | None = None) -> tuple[Path, int]:
    """Generate images from fixed-seed z and write them as one PNG grid (atomically); returns (path, count).

    An unconditional G: n images in a square grid. A conditional G: one row per class (`classes`, default
    all of them), labelled, the same ceil(n / rows) z's in every row, so a column shows one z drawn as
    each class; `classes` of one class: n images of it."""
    from gantool.checkpoint import atomic_write
    from gantool.errors import ConfigError

    if n <= 0:
        raise ConfigError(f"--n {n}: must be > 0")
    runner = open_runner(source, backend, device)
    sig = runner.info.signature
    if classes and sig.label is None:
        raise ConfigError(f"--class: {source} takes no class label (an unconditional generator)")
    if classes and not all(0 <= k < int(sig.n_classes) for k in classes):
        bad = next(k for k in classes if not 0 <= k < int(sig.n_classes))
        raise ConfigError(f"--class {bad}: the generator has {sig.n_classes} classes (0..{int(sig.n_classes) - 1})")
    rows: list[str] = []
    if sig.label is None:
        images, nrow = runner(latent(n, seed, sig.latent_dim)), math.ceil(math.sqrt(n))
    elif classes is not None and len(classes) == 1:
        images = runner(latent(n, seed, sig.latent_dim), torch.full((n,), classes[0]))
        nrow, rows = math.ceil(math.sqrt(n)), [f"class {classes[0]}"]
    else:
        ks = list(classes if classes is not None else range(int(sig.n_classes)))
        nrow = math.ceil(n / len(ks))
        z = latent(nrow, seed, sig.latent_dim).repeat(len(ks), 1)
        images = runner(z, torch.tensor(ks).repeat_interleave(nrow))
        rows = [f"class {k}" for k in ks]
    grid = _grid(images, nrow=nrow, value_range=runner.info.value_range)
    picture = _labelled(grid, rows, per_row=len(rows) > 1)
    return atomic_write(out, lambda tmp: picture.save(tmp, format="png")), images.shape[0]


def _labelled(grid: torch.Tensor, labels: list[str], per_row: bool):
    """The grid as a PIL image; with labels, a margin left of each row (per_row) or above the grid."""
    from PIL import Image, ImageDraw

    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8)
    img = Image.fromarray(arr.permute(1, 2, 0).numpy() if arr.shape[0] == 3 else arr[0].numpy())
    if not labels:
        return img
    img = img.convert("RGB")
    margin = (56, 0) if per_row else (0, 14)
    out = Image.new("RGB", (img.width + margin[0], img.height + margin[1]), "white")
    out.paste(img, margin)
    draw = ImageDraw.Draw(out)
    if per_row:
        step = (img.height - 2) / len(labels)  # rows of (H + 2) px under a 2 px top padding
        for i, text in enumerate(labels):
            draw.text((4, 2 + i * step + step / 2 - 5), text, fill="black")
    else:
        draw.text((4, 1), labels[0], fill="black")
    return out


def comparison_image(reference: Runner, candidates: list[tuple[str, Runner]], out: str | Path,
                     n: int = 16, seed: int = 0) -> Path:
    """One row an artifact: its images for the same z as eager, and a heat map of |artifact - eager|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gantool.checkpoint import atomic_write

    z = latent(n, seed, reference.info.latent_dim)
    ref = reference(z)
    nrow = math.ceil(math.sqrt(n))
    rows = [("eager fp32 (reference)", ref, None)]
    for label, runner in candidates:
        try:
            y = runner(z)
            diff = (y - ref).abs() if y.shape == ref.shape else f"output shape {tuple(y.shape)} is off the contract"
        except Exception as e:  # a broken artifact still gets its row, with the reason
            y, diff = None, first_line(e, 80)
        rows.append((label, y, diff))
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 3.2 * len(rows)), squeeze=False)
    for (label, y, diff), (ax_img, ax_diff) in zip(rows, axes):
        for ax in (ax_img, ax_diff):
            ax.set_xticks([]), ax.set_yticks([])
        if y is not None:
            ax_img.imshow(_image(_grid(y, nrow, reference.info.value_range)), cmap="gray", vmin=0, vmax=1)
        ax_img.set_title(label, fontsize=9)
        if isinstance(diff, torch.Tensor):
            # |difference| in the generator's own units; NaN shows as the colormap's "bad" colour
            mosaic = _mosaic(diff, nrow)
            top = float(mosaic.nan_to_num(0.0).max())
            # an exact match is all black (matplotlib would centre a constant image on the colormap)
            im = ax_diff.imshow(mosaic.numpy(), cmap="magma", vmin=0, vmax=top if top > 0 else 1e-12)
            fig.colorbar(im, ax=ax_diff, fraction=0.046, pad=0.04)
            # these n samples only: verify's max |err| is over its whole parity batch, so it can be larger
            ax_diff.set_title(f"|diff| max on these {n} z: {float(diff.nan_to_num(float('inf')).max()):.1e}",
                              fontsize=9)
        elif isinstance(diff, str):
            ax_diff.text(0.5, 0.5, f"failed:\n{diff}", ha="center", va="center", fontsize=7, wrap=True)
        else:  # the reference row has no difference to show: say what the rows below are, not an empty box
            ax_diff.axis("off")
            ax_diff.text(0.5, 0.5, f"reference: each row below shows\nan artifact on the same {n} z\nand "
                         "|artifact - eager| per pixel\n(black = equal)", ha="center", va="center", fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(fig)


def exported_comparison(out_dir: str | Path, checkpoint: "str | Path | object", path: str | Path) -> Path:
    """comparison_image for every artifact in a manifest that can run here (eager fp32 is the reference)."""
    from gantool.errors import GantoolError
    from gantool.export.manifest import Manifest

    doc = Manifest.load(out_dir)
    reference = load_runner(checkpoint, "eager", dtype="fp32")
    rows = []
    for e in doc.entries:
        try:
            rows.append((f"{e['file']} ({e['format']}, {e['dtype']})", open_runner(Path(out_dir) / e["file"])))
        except GantoolError:
            continue  # unloadable or other-device artifacts are reported by verify itself
    return comparison_image(reference, rows, path)
