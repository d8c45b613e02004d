"""Sample quality in two classifier feature spaces: FID vs its floor, precision/recall, KID; recognisability.

    scores = evaluate_runner(load_runner("runs/demo"), "mnist-5k", "data", n=10_000, seed=0)
    evaluator = TrainingEvaluator("mnist-5k", "data", device)   # cheap, called during training
    evaluator(generator) -> {"fid": ..., "fid_floor": ..., "precision": ..., "recall": ..., ...}
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch

from gantool.quality.classifier import DIGIT_SHAPE, PRIMARY, SPACES, Classifier, _load_splits, get_classifier
from gantool.quality.manifold import FID, K_NEAREST, kid, prdc
from gantool.data import Dataset
from gantool.errors import ArtifactError, ConfigError, first_line
from gantool.noise import latent

PROB_THRESHOLD = 0.9  # a sample is "recognisable" when the classifier gives one class > 0.9
BATCH = 1000
# The bars a run is judged against live in gantool.quality.targets (bar and stretch goal); the JSON's
# `targets` / `targets_met`, kept for earlier readers, are the stretch goal's.
MANIFOLD_MAX = 10_000  # training digits in the PRDC/KID reference (mnist-5k has 4,500; MNIST 60,000)
SPACES_DISAGREE = 1.5  # FID/floor ratios of the two spaces further apart than this are reported
METRICS = ("fid", "fid_floor", "fid_over_floor", "precision", "recall", "density", "coverage", "kid", "kid_std")
# Distribution parity: a candidate must draw the same digits as the reference on the same z.
PARITY_MAX_HIST_TV = 0.02       # total-variation distance between predicted-class histograms
PARITY_MIN_AGREEMENT = 0.98     # share of z whose predicted class is the same
PARITY_MAX_FID_DELTA = 0.25     # |FID(cand) - FID(ref)| as a fraction of the real-vs-real floor
# int8 changes every value by up to a quantization step, so it is judged on what a user sees (issue 13):
INT8_MAX_FID_RATIO = 1.15       # FID(int8) <= 1.15 x FID(fp32)
INT8_MAX_RECOGNISABILITY_DROP = 0.01  # recognisability within 1 point of fp32
INT8_MIN_CLASS_SHARE = 0.07     # every digit still drawn by >= 7% of z (or as often as by fp32, if less)
# Per-z agreement: a digit on the boundary between two classes may tip over. Measured on a trained
# tuned G (9,000 steps, 2,000 z): static 97.6 %, dynamic 98.0 %; 95 % leaves room for other Gs.
INT8_MIN_AGREEMENT = 0.95


class FeatureSpace:
    """One classifier's features of real digits, and every metric measured against them.

    FID compares with the held-out digits' statistics; its floor is n training digits drawn with
    replacement. Precision, recall, density, coverage and KID compare with the manifold of the
    training digits' features (k-NN radii need many points; 500 held-out digits leave radii so wide
    that noise falls inside them); the held-out digits, never in that manifold, give their
    real-vs-real values. PRDC scores m = min(n, held-out) samples, so samples and held-out digits
    meet the same reference at the same set size (k-NN radii depend on it).
    """

    def __init__(self, classifier: Classifier, train: Dataset, test: Dataset, seed: int = 0):
        self.classifier, self.name = classifier, classifier.space
        self.train_images = train.images
        self.heldout = classifier.features(test.images)  # (R, d)
        self.fid = FID(self.heldout)
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:MANIFOLD_MAX]
        self.reference = classifier.features(train.images[pick])  # (<= MANIFOLD_MAX, d)
        self._floors: dict[tuple[int, int], float] = {}
        self._real: dict[tuple[bool, int], dict[str, Any]] = {}

    def floor(self, n: int, seed: int = 0) -> float:
        """FID of n training digits (drawn with replacement) against the held-out ones: what a generator
        that reproduced the training data exactly would score at this sample size."""
        if (n, seed) not in self._floors:
            idx = torch.randint(len(self.train_images), (n,), generator=torch.Generator().manual_seed(seed + 1))
            self._floors[(n, seed)] = self.fid(self.classifier.features(self.train_images[idx]))
        return self._floors[(n, seed)]

    def _manifold(self, fake: torch.Tensor, seed: int, with_kid: bool) -> dict[str, Any]:
        m = min(len(fake), len(self.heldout))
        out: dict[str, Any] = {**prdc(self.reference, fake[:m], K_NEAREST), "prdc_n": m, "prdc_k": K_NEAREST}
        if with_kid:
            out["kid"], out["kid_std"], out["kid_subset"] = kid(self.reference, fake, seed=seed)
        return out

    def real_vs_real(self, seed: int = 0, with_kid: bool = True) -> dict[str, Any]:
        """The held-out digits scored like samples: precision, recall, density, coverage (and KID)."""
        if (with_kid, seed) not in self._real:
            self._real[(with_kid, seed)] = self._manifold(self.heldout, seed, with_kid)
        return self._real[(with_kid, seed)]

    def score(self, images: torch.Tensor, seed: int = 0, with_kid: bool = True) -> dict[str, Any]:
        fake = self.classifier.features(images)
        fid, floor = self.fid(fake), self.floor(len(images), seed)
        return {"fid": fid, "fid_floor": floor, "fid_over_floor": fid / floor if floor > 0 else math.inf,
                **self._manifold(fake, seed, with_kid), "real_vs_real": self.real_vs_real(seed, with_kid),
                "classifier_accuracy": self.classifier.accuracy, "features": int(self.heldout.shape[1])}


def class_scores(probs: torch.Tensor) -> dict[str, Any]:
    """probs (N, K) -> recognisability, predicted-class histogram, its normalised entropy, min share."""
    n, k = probs.shape
    conf, pred = probs.max(dim=1)
    hist = torch.bincount(pred, minlength=k).double() / n
    nz = hist[hist > 0]
    entropy = float(-(nz * nz.log()).sum() / math.log(k))
    return {
        "recognisability": float((conf > PROB_THRESHOLD).double().mean()),
        "class_entropy": entropy,
        "min_class_share": float(hist.min()),
        "class_histogram": [round(float(h), 5) for h in hist],
    }


def _check_images(images: torch.Tensor, n: int, what: str, shape: tuple[int, ...] = DIGIT_SHAPE) -> torch.Tensor:
    if images.shape != (n, *shape):
        kind = "a digit generator" if shape == DIGIT_SHAPE else "the generator its contract says"
        raise ArtifactError(f"{what} is not {kind}: it returned shape {tuple(images.shape)}, "
                            f"expected ({n}, {', '.join(map(str, shape))})")
    if not torch.isfinite(images).all():
        raise ArtifactError(f"{what} returned NaN/Inf images")
    return images


class QualityReference:
    """The feature spaces (each classifier with its held-out real features) and the real-vs-real baselines."""

    def __init__(self, dataset: str, data_dir: str | Path = "data", device: torch.device | str = "cpu",
                 splits: tuple[Dataset, Dataset] | None = None, spaces: tuple[str, ...] = tuple(SPACES),
                 progress: Callable[[str], None] | None = None):
        self.device = torch.device(device)
        self.train, self.test = splits or _load_splits(dataset, data_dir)
        self.spaces: dict[str, FeatureSpace] = {}
        for name in spaces:
            c = get_classifier(dataset, data_dir, splits=(self.train, self.test), space=name, progress=progress)
            c.net.to(self.device)
            self.spaces[name] = FeatureSpace(c, self.train, self.test)
        self.classifier = self.spaces[PRIMARY].classifier  # its softmax gives recognisability

    def floor(self, n: int, seed: int = 0) -> float:
        """The primary space's FID of n training images against the held-out reference."""
        return self.spaces[PRIMARY].floor(n, seed)

    def score(self, images: torch.Tensor, seed: int = 0, with_kid: bool = True) -> dict[str, Any]:
        """images (N, 1, 28, 28) in [-1, 1] -> the primary space's metrics at the top level (fid,
        fid_floor, precision, ... and real_vs_real), class scores, and every space under feature_spaces."""
        per_space = {name: space.score(images, seed, with_kid) for name, space in self.spaces.items()}
        out = dict(per_space[PRIMARY])
        out.pop("features")
        out.update(class_scores(self.classifier.predict_proba(images)))
        out["feature_spaces"] = per_space
        ratios = [s["fid_over_floor"] for s in per_space.values()]
        out["fid_ratio_spread"] = max(ratios) / min(ratios) if min(ratios) > 0 else math.inf
        out["spaces_disagree"] = len(ratios) > 1 and out["fid_ratio_spread"] > SPACES_DISAGREE
        return out


def generate(runner, n: int, seed: int, digits: bool = True) -> torch.Tensor:
    """n images from any Runner on fixed-seed z, in batches: float32 CPU (n, *img_shape); with
    `digits` the runner must be a 28x28 digit generator (the MNIST classifiers' input)."""
    if n <= 0:
        raise ConfigError(f"--n must be > 0, got {n}")
    shape = tuple(runner.info.img_shape)
    resize = digits and shape != DIGIT_SHAPE and shape[0] == 1 and shape[1] == shape[2]  # e.g. 1x32x32 digits
    if digits and shape != DIGIT_SHAPE and not resize:
        raise ArtifactError(f"{runner.info.source or runner.name} is not a 28x28 digit generator (its image shape is "
                            f"{shape}; the classifiers read 1-channel square images at 28x28)")
    z = latent(n, seed, runner.info.latent_dim)
    try:
        # a conditional G: its default labels, row i of each batch class i mod n_classes (`batch_labels`)
        images = torch.cat([runner(z[i:i + BATCH]) for i in range(0, n, BATCH)])
        if resize:
            images = torch.nn.functional.interpolate(images, size=DIGIT_SHAPE[1:], mode="bilinear", antialias=True)
            shape = DIGIT_SHAPE
    except ArtifactError:
        raise
    except Exception as e:  # a runtime that rejects our z shape is an artifact that breaks the contract
        raise ArtifactError(f"{runner.name} failed on z of shape (B, {runner.info.latent_dim}): "
                            f"{first_line(e)}") from None
    return _check_images(images, n, runner.info.source or runner.name, shape)


def batch_labels(sig: Any, n: int) -> torch.Tensor | None:
    """The labels `generate` fed a conditional G (each batch of BATCH rows: row i gets class i mod n_classes)."""
    if sig.label is None:
        return None
    return torch.cat([sig.labels(min(BATCH, n - i)) for i in range(0, n, BATCH)])


def conditional_accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Share of G(z, k) the classifier reads as k: overall, and per class (the mix is class-balanced)."""
    pred = probs.argmax(1)
    per = [float((pred[labels == k] == k).float().mean()) for k in range(probs.shape[1]) if (labels == k).any()]
    return {"overall": float((pred == labels).float().mean()), "per_class": [round(a, 4) for a in per],
            "worst_class": int(min(range(len(per)), key=per.__getitem__)), "n": int(labels.numel())}


def evaluate_runner(runner, dataset: str, data_dir: str | Path = "data", n: int = 10_000, seed: int = 0,
                    reference: QualityReference | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score n samples of `runner` (checkpoint or any exported artifact) against `dataset`; for a conditional
    G over the digit classes, also its conditional accuracy on that class-balanced mix."""
    images = generate(runner, n, seed)
    ref = reference or QualityReference(dataset, data_dir, progress=progress)
    out = {"source": runner.info.source, "backend": runner.info.backend, "dtype": runner.info.dtype,
           "dataset": ref.train.name, "n": n, "seed": seed,
           "classifier_accuracy": ref.classifier.accuracy, "n_reference": len(ref.test)}
    out.update(ref.score(images, seed))
    sig = runner.info.signature
    if sig.label is not None:
        if sig.n_classes == out_classes(out):
            out["conditional_accuracy"] = conditional_accuracy(ref.classifier.predict_proba(images),
                                                               batch_labels(sig, n))
        else:
            out["conditional_accuracy"] = {"not_applicable": f"the generator has {sig.n_classes} classes, the "
                                                             f"classifier reads {out_classes(out)} digits"}
    return _with_bars(out)


def out_classes(scores: dict[str, Any]) -> int:
    return len(scores["class_histogram"])


def _with_bars(out: dict[str, Any]) -> dict[str, Any]:
    """`bars`: each quality bar's thresholds, per-metric verdicts and line (gantool.quality.targets)."""
    from gantool.quality.targets import judge

    out["bars"] = judge(out)
    out["targets"], out["targets_met"] = out["bars"]["stretch"]["thresholds"], out["bars"]["stretch"]["met"]
    return out


def distribution_parity(reference, candidate, n: int = 2000, seed: int = 0, dataset: str = "mnist-5k",
                        data_dir: str | Path = "data", quality: QualityReference | None = None) -> dict[str, Any]:
    """Do two runners draw the same digits on the same z? FID delta, class histograms, agreement.

    Element-wise tolerances cannot say whether an fp16 artifact still draws a 7 where eager does;
    the classifier can.
    """
    q = quality or QualityReference(dataset, data_dir)
    a, b = generate(reference, n, seed), generate(candidate, n, seed)
    pa, pb = q.classifier.predict_proba(a), q.classifier.predict_proba(b)
    sa, sb = q.score(a, seed, with_kid=False), q.score(b, seed, with_kid=False)
    tv = 0.5 * sum(abs(x - y) for x, y in zip(sa["class_histogram"], sb["class_histogram"]))
    agreement = float((pa.argmax(1) == pb.argmax(1)).double().mean())
    delta = abs(sb["fid"] - sa["fid"])
    failures = []
    if tv > PARITY_MAX_HIST_TV:
        failures.append(f"class histogram differs (TV {tv:.3f} > {PARITY_MAX_HIST_TV})")
    min_agreement = INT8_MIN_AGREEMENT if candidate.info.dtype == "int8" else PARITY_MIN_AGREEMENT
    if agreement < min_agreement:
        failures.append(f"only {agreement:.1%} of z give the same digit (< {min_agreement:.0%})")
    if delta > PARITY_MAX_FID_DELTA * sa["fid_floor"]:
        failures.append(f"FID moved by {delta:.3g} (> {PARITY_MAX_FID_DELTA} x floor {sa['fid_floor']:.3g})")
    ratio = sb["fid"] / sa["fid"] if sa["fid"] > 0 else math.inf
    drop = sa["recognisability"] - sb["recognisability"]
    if candidate.info.dtype == "int8":
        if ratio > INT8_MAX_FID_RATIO:
            failures.append(f"FID {ratio:.3f}x the reference's (> {INT8_MAX_FID_RATIO}x)")
        if drop > INT8_MAX_RECOGNISABILITY_DROP:
            failures.append(f"recognisability {sb['recognisability']:.1%} vs {sa['recognisability']:.1%} "
                            f"(drops more than {INT8_MAX_RECOGNISABILITY_DROP:.0%})")
        floor = min(INT8_MIN_CLASS_SHARE, sa["min_class_share"])
        if sb["min_class_share"] < floor:
            failures.append(f"its rarest digit is drawn by {sb['min_class_share']:.1%} of z (< {floor:.1%})")
    return {
        "reference": reference.name, "candidate": candidate.name, "n": n, "seed": seed,
        "fid_reference": sa["fid"], "fid_candidate": sb["fid"], "fid_delta": delta, "fid_floor": sa["fid_floor"],
        "hist_reference": sa["class_histogram"], "hist_candidate": sb["class_histogram"], "hist_tv": tv,
        "label_agreement": agreement, "fid_ratio": ratio, "recognisability_reference": sa["recognisability"],
        "recognisability_candidate": sb["recognisability"], "min_class_share_candidate": sb["min_class_share"],
        "passed": not failures, "failures": failures,
    }


class TrainingEvaluator:
    """Cheap in-training quality: `evaluator(G) -> dict` on 2,000 fixed z, for metrics.jsonl."""

    def __init__(self, dataset: str, data_dir: str | Path = "data", device: torch.device | str = "cpu",
                 n: int = 2000, seed: int = 0):
        self.ref = QualityReference(dataset, data_dir, device)
        self.n, self.seed = n, seed
        self._z: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, generator: torch.nn.Module) -> dict[str, float]:
        was_training = generator.training
        generator.eval()
        try:
            p = next(generator.parameters())
            if self._z is None:
                self._z = latent(self.n, self.seed, generator.cfg.latent_dim if hasattr(generator, "cfg") else 100)
            z = self._z.to(p.device, p.dtype)
            images = torch.cat([generator(z[i:i + BATCH]).float().cpu() for i in range(0, self.n, BATCH)])
        finally:
            generator.train(was_training)
        # KID's 100 kernel subsets would add seconds to every eval; eval reports it at the end.
        return flat_scores(self.ref.score(_check_images(images, self.n, "generator"), self.seed, with_kid=False))


def flat_scores(s: dict[str, Any]) -> dict[str, float]:
    """One flat dict of floats for metrics.jsonl: the primary space's metrics, their real-vs-real
    values as real_<name>, class scores, and each other space's as <space>_<name>."""
    out = {k: float(v) for k, v in s.items() if isinstance(v, (int, float))}
    out.update({f"real_{k}": float(v) for k, v in s["real_vs_real"].items() if k in METRICS})
    for name, sp in s["feature_spaces"].items():
        if name != PRIMARY:
            out.update({f"{name}_{k}": float(sp[k]) for k in METRICS if k in sp})
            out.update({f"{name}_real_{k}": float(v) for k, v in sp["real_vs_real"].items() if k in METRICS})
    return out



def dataset_of(checkpoint: str | Path) -> str | None:
    """The dataset a run was trained on, from its checkpoint (None when it does not say)."""
    from gantool.checkpoint import load_checkpoint
    from gantool.data import DATASETS

    payload = load_checkpoint(checkpoint)
    for d in (payload.get("data") or {}, payload.get("train_config") or {}):
        if isinstance(d, dict) and d.get("dataset") in DATASETS:
            return d["dataset"]
    return None


# --- any image shape: the seeded random-conv feature space (gantool.quality.random_features) ---

NOT_APPLICABLE = ("recognisability, class entropy and the cnn/mlp feature spaces do not apply: they are MNIST digit "
                  "classifiers, trained on 1x28x28 images")
RANDOM_HELDOUT = 0.2  # share of the real images held out for FID's statistics (the rest: floor and manifold)


def evaluate_images(runner, real: torch.Tensor, real_name: str, n: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """Score n samples of a generator of any image shape against `real` images (N, C, H, W) in its value
    range, in the random-conv space: FID beside its floor, precision/recall/density/coverage, KID."""
    from gantool.quality.random_features import SPACE, RandomConvSpace

    images = generate(runner, n, seed, digits=False)
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    held = max(50, int(len(real) * RANDOM_HELDOUT))
    empty = torch.zeros(0, dtype=torch.long)
    test, train = (Dataset(real_name, real[idx], empty) for idx in (perm[:held], perm[held:]))
    space = RandomConvSpace(real.shape[1], runner.info.value_range)
    s = FeatureSpace(space, train, test, seed).score(images, seed)  # type: ignore[arg-type]
    out = {"source": runner.info.source, "backend": runner.info.backend, "dtype": runner.info.dtype,
           "dataset": real_name, "n": n, "seed": seed, "n_reference": len(test), "img_shape": list(real.shape[1:]),
           "not_applicable": NOT_APPLICABLE, **{k: v for k, v in s.items() if k != "features"},
           "feature_spaces": {SPACE: s}}
    return _with_bars(out)


def nearest_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of rows i whose nearest row of `a` (features of the reference on z_i) is row i itself,
    seen from b_i (the candidate on the same z_i): 1.0 when the candidate draws the same image per z."""
    return float((torch.cdist(b, a).argmin(dim=1) == torch.arange(len(b))).double().mean())


def distribution_parity_images(reference, candidate, n: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Distribution parity for any image shape, with no real data: in the random-conv space, the
    candidate's FID against the reference's own statistics (same z) must stay within a quarter of the
    sampling floor (the reference on other z against the same statistics), and each z's image must be
    nearest to the reference's image of the same z."""
    from gantool.quality.random_features import SPACE, RandomConvSpace

    space = RandomConvSpace(reference.info.img_shape[0], reference.info.value_range)
    fa = space.features(generate(reference, n, seed, digits=False))
    fb = space.features(generate(candidate, n, seed, digits=False))
    fid = FID(fa)
    floor, cand = fid(space.features(generate(reference, n, seed + 1, digits=False))), fid(fb)
    agreement = nearest_agreement(fa, fb)
    min_agreement = INT8_MIN_AGREEMENT if candidate.info.dtype == "int8" else PARITY_MIN_AGREEMENT
    failures = []
    if cand > PARITY_MAX_FID_DELTA * floor:
        failures.append(f"FID to eager's samples {cand:.3g} (> {PARITY_MAX_FID_DELTA} x floor {floor:.3g})")
    if agreement < min_agreement:
        failures.append(f"only {agreement:.1%} of z give an image nearest to eager's for the same z (< {min_agreement:.0%})")
    return {"reference": reference.name, "candidate": candidate.name, "n": n, "seed": seed, "space": SPACE,
            "fid_candidate": cand, "fid_floor": floor, "nn_agreement": agreement,
            "passed": not failures, "failures": failures}
