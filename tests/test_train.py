"""The training loop: outputs, checkpoint payload, recipe knobs, exact resume, NaN stop, eval hook."""
from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from gantool import config as gconfig
from gantool.checkpoint import load_checkpoint, load_generator
from gantool.config import ModelConfig, Recipe
from gantool.data import load_dataset
from gantool.errors import CheckpointError, ConfigError, TrainingDiverged
from gantool.train import Trainer, resolve_configs, resume_configs, train

# A small architecture and 200 images keep every run here to a few seconds on 2 cores.
TINY = {"g_hidden": (32,), "d_hidden": (32,)}
FAST = dict(limit=200, batch_size=20, epochs=1, log_every=5)


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet(_msg: str) -> None:
    pass


def run(tmp_path, name="run", model=None, **kw):
    model_cfg, cfg = resolve_configs("seed", model={**TINY, **(model or {})}, **{**FAST, **kw})
    return train(cfg, model_cfg, out=tmp_path / name, log=quiet, progress=False)


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-5k")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("smoke"), epochs=2, ema_decay=0.9)


def test_run_writes_checkpoint_metrics_grids_and_plot(smoke_run):
    out = smoke_run.out
    assert smoke_run.step == 20 and smoke_run.epoch == 2
    for f in ("checkpoint.pt", "metrics.jsonl", "loss.png", "samples/final.png",
              "samples/step-000010.png", "samples/step-000020.png"):
        assert (out / f).is_file(), f
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for r in rows:
        assert set(r) >= {"step", "epoch", "d_loss", "g_loss", "d_x", "d_g_z", "samples_per_s"}
        assert 0 <= r["d_x"] <= 1 and 0 <= r["d_g_z"] <= 1 and r["samples_per_s"] > 0
    assert [r["epoch"] for r in rows] == [1, 1, 2, 2]


def test_checkpoint_payload_loads_weights_only(smoke_run):
    raw = torch.load(smoke_run.checkpoint, weights_only=True)
    for k in ("model_config", "train_config", "generator", "generator_ema", "discriminator", "opt_g", "opt_d",
              "step", "epoch", "data", "versions", "rng", "fixed_noise", "created"):
        assert k in raw, k
    assert raw["step"] == 20 and raw["data"]["dataset"] == "mnist-5k" and raw["data"]["fallback"] is False
    assert set(raw["versions"]) == {"gantool", "torch", "python"}
    assert {"torch", "shuffle"} <= set(raw["rng"])
    assert raw["fixed_noise"].shape == (64, 100)
    assert ModelConfig.from_dict(raw["model_config"]) == ModelConfig(**TINY)


def test_ema_copy_is_saved_and_used_by_load_generator(smoke_run):
    g_ema, _, payload = load_generator(smoke_run.out, ema=True)
    g_raw, _, _ = load_generator(smoke_run.out, ema=False)
    w_ema, w_raw = g_ema.net[0].weight, g_raw.net[0].weight
    assert torch.equal(w_ema, payload["generator_ema"]["net.0.weight"])
    assert torch.equal(w_raw, payload["generator"]["net.0.weight"])
    assert not torch.equal(w_ema, w_raw)


def test_ema_update_is_a_lerp_towards_g(data):
    model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, ema_decay=0.75)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    before = t.G_ema.net[0].weight.clone()
    t.train_step(t.images[:20])
    expected = before + 0.25 * (t.G.net[0].weight - before)
    assert torch.allclose(t.G_ema.net[0].weight, expected, atol=1e-6)
    assert not t.G_ema.net[0].weight.requires_grad


def test_two_time_scale_lr_and_betas_reach_the_optimisers(data):
    model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, lr=1e-4, d_lr=4e-4, betas=(0.5, 0.99))
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert t.opt_g.param_groups[0]["lr"] == 1e-4 and t.opt_d.param_groups[0]["lr"] == 4e-4
    assert t.opt_g.param_groups[0]["betas"] == (0.5, 0.99) == t.opt_d.param_groups[0]["betas"]


def test_label_smoothing_is_one_sided_and_changes_the_d_loss(data):
    losses = []
    for s in (0.0, 0.2):
        model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, label_smoothing=s)
        t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
        assert torch.all(t.real_target == 1.0 - s) and torch.all(t.zeros == 0) and torch.all(t.ones == 1)
        losses.append(t.train_step(t.images[:20]))
    assert losses[0][0] != losses[1][0]


@pytest.mark.parametrize("pack", [2, 4])
def test_pacgan_packs_samples_into_d(data, pack):
    model_cfg, cfg = resolve_configs("seed", model={**TINY, "d_pack": pack}, **FAST)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert t.D.net[0].in_features == 784 * pack
    assert t.real_target.shape == (20 // pack, 1)
    assert torch.isfinite(t.train_step(t.images[:20])).all()
    with pytest.raises(ConfigError, match="divisible"):
        resolve_configs("seed", model={"d_pack": 3}, batch_size=100)


def test_minibatch_std_runs_real_and_fake_through_d_apart(data):
    model_cfg, cfg = resolve_configs("seed", model={**TINY, "d_minibatch_std": True}, **FAST)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert not t.concat_d and any(type(m).__name__ == "MinibatchStd" for m in t.D.modules())
    assert torch.isfinite(t.train_step(t.images[:20])).all()


def test_one_concatenated_d_forward_is_the_same_objective(data):
    """With dropout off, D(cat(real, fake)) gives exactly the losses of two separate forwards."""
    stats = []
    for concat in (True, False):
        model_cfg, cfg = resolve_configs("seed", model={**TINY, "d_dropout": 0.0}, **FAST)
        t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
        t.concat_d = concat
        torch.manual_seed(3)
        stats.append(torch.stack([t.train_step(t.images[i * 20:(i + 1) * 20]) for i in range(3)]))
    assert torch.allclose(stats[0], stats[1], atol=1e-5)


def test_recipe_overrides_apply_and_explicit_flags_win(monkeypatch):
    monkeypatch.setitem(gconfig.RECIPES, "test-recipe", Recipe(
        name="test-recipe", description="t", epochs=7, model={"d_pack": 2, "d_minibatch_std": True},
        train={"lr": 1e-3, "d_lr": 5e-4, "label_smoothing": 0.1, "ema_decay": 0.99, "betas": (0.5, 0.9)}))
    m, c = resolve_configs("test-recipe")
    assert (m.d_pack, m.d_minibatch_std) == (2, True)
    assert (c.epochs, c.lr, c.d_lr, c.label_smoothing, c.ema_decay, c.betas) == (7, 1e-3, 5e-4, 0.1, 0.99, (0.5, 0.9))
    assert c.recipe == "test-recipe"
    m, c = resolve_configs("test-recipe", epochs=3, lr=2e-4)
    assert (c.epochs, c.lr, c.d_lr) == (3, 2e-4, 5e-4)


def test_seed_recipe_is_the_original():
    m, c = resolve_configs("seed")
    assert m == ModelConfig()
    assert (c.epochs, c.batch_size, c.lr, c.d_lr, c.betas) == (200, 100, 2e-4, None, (0.9, 0.999))
    assert (c.label_smoothing, c.ema_decay, c.precision) == (0.0, 0.0, "fp32")


def test_nameability_loss_prefers_confident_and_diverse_samples():
    from gantool.train.trainer import nameability_loss

    confident_diverse = torch.eye(10).repeat(2, 1) * 20  # each sample sure, all classes present
    uniform = torch.zeros(20, 10)  # no sample nameable
    collapsed = torch.zeros(20, 10)
    collapsed[:, 3] = 20  # every sample sure of the same digit
    scores = [float(nameability_loss(x)) for x in (confident_diverse, uniform, collapsed)]
    assert scores[0] == pytest.approx(-torch.log(torch.tensor(10.0)).item(), abs=1e-4)
    assert scores[0] < scores[1] and scores[0] < scores[2]
    assert scores[1] == pytest.approx(0.0, abs=1e-5) and scores[2] == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("pack", [1, 2])
def test_class_head_names_each_packed_sample_and_learns_labels(data, pack):
    model_cfg, cfg = resolve_configs("seed", model={**TINY, "d_pack": pack, "d_classes": 10}, **FAST,
                                     class_weight=1.0, d_lr=1e-3)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    logits, classes = t.D.forward_with_classes(t.images[:20])
    assert logits.shape == (20 // pack, 1) and classes.shape == (20, 10)
    x, y = t.images[:20], t.labels[:20]

    @torch.no_grad()
    def ce() -> float:  # D's label loss on the batch, dropout off
        t.D.eval()
        logits, classes = t.D.forward_with_classes(x)
        assert torch.allclose(logits, t.D(x))  # the real/fake path is forward's
        t.D.train()
        return float(torch.nn.functional.cross_entropy(classes, y))

    # A few steps on one fixed batch: D's head must start naming those digits.
    before = ce()
    for _ in range(15):
        assert torch.isfinite(t.train_step(x, y)).all()
    assert ce() < before
    with pytest.raises(ValueError, match="labels"):
        t.train_step(x)


def test_class_head_options_must_come_together_and_fit_the_labels(tmp_path):
    for model, kw in [({"d_classes": 10}, {}), ({}, {"class_weight": 1.0}), ({"d_classes": -1}, {"class_weight": 1.0})]:
        with pytest.raises(ConfigError, match="class"):
            resolve_configs("seed", model=model, **kw)
    with pytest.raises(ConfigError, match="labels up to 9"):
        run(tmp_path, model={"d_classes": 5}, class_weight=1.0)


def test_lr_decay_is_flat_then_linear_to_zero_and_reaches_both_optimisers(data):
    model_cfg, cfg = resolve_configs("seed", model=TINY, **{**FAST, "epochs": 2}, d_lr=4e-4, lr_decay=0.5)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert t.total_steps == 20  # 2 epochs x 200 // 20
    scales = []
    for step in range(20):
        t.step = step
        scales.append(t.lr_scale())
    assert scales[:10] == [1.0] * 10 and scales[10:] == [pytest.approx(k / 10) for k in range(10, 0, -1)]
    t.step = 15
    t.train_step(t.images[:20])
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5)
    assert t.opt_d.param_groups[0]["lr"] == pytest.approx(4e-4 * 0.5)
    off = Trainer(*resolve_configs("seed", model=TINY, **FAST), data, torch.device("cpu"))
    off.step = 9
    assert off.lr_scale() == 1.0
    with pytest.raises(ConfigError, match="lr_decay"):
        resolve_configs("seed", lr_decay=1.5)


def test_top_k_share_shrinks_per_epoch_to_its_floor_and_limits_g_loss(data, monkeypatch):
    model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, top_k=0.5, top_k_gamma=0.8)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    counts = []
    for epoch in range(5):
        t.epoch = epoch
        counts.append(t.top_k_count(20))
    assert counts == [20, 16, 13, 10, 10]  # 0.8 ** epoch, floored at 0.5
    # G's loss uses only the k fakes D rates most real: with k = 1 it is BCE(max logit, 1).
    t.epoch, cfg.top_k, cfg.top_k_gamma = 3, 0.05, 0.05
    seen = []
    orig = torch.nn.functional.binary_cross_entropy_with_logits
    monkeypatch.setattr(torch.nn.functional, "binary_cross_entropy_with_logits",
                        lambda a, b: seen.append(a.shape[0]) or orig(a, b))
    t.train_step(t.images[:20])
    assert seen == [20, 20, 1]  # D: real and fake batches in full; G: the single top fake
    assert Trainer(*resolve_configs("seed", model=TINY, **FAST), data, torch.device("cpu")).top_k_count(20) == 20
    for bad in ({"top_k": 0.0}, {"top_k": 1.5}, {"top_k_gamma": 0.0}):
        with pytest.raises(ConfigError, match="top_k"):
            resolve_configs("seed", **bad)


def test_r1_penalty_is_the_squared_input_gradient_and_enters_only_d_loss(data):
    from gantool.train.trainer import r1_penalty
    w = torch.randn(784, requires_grad=True)
    x = torch.randn(3, 1, 28, 28, requires_grad=True)
    logits = (x.reshape(3, -1) @ w).unsqueeze(1)  # a linear D: grad_x = w for every image
    pen = r1_penalty(logits, x)
    assert pen.item() == pytest.approx(float(w.detach().pow(2).sum()), rel=1e-5)
    pen.backward()  # differentiable in D's weights: d||w||^2/dw = 2w
    assert torch.allclose(w.grad, 2 * w.detach())
    # In training it is added to D's loss only: same seeds, same first D loss except the penalty.
    losses = {}
    for gamma in (0.0, 10.0):
        model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, r1_gamma=gamma)
        t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
        losses[gamma] = t.train_step(t.images[:20])
    assert losses[10.0][0] > losses[0.0][0]
    assert torch.equal(losses[10.0][2:], losses[0.0][2:])  # D(x), D(G(z)) before the update: unchanged
    with pytest.raises(ConfigError, match="r1_gamma"):
        resolve_configs("seed", r1_gamma=-1.0)


def test_conv_discriminator_options_are_checked():
    with pytest.raises(ConfigError, match="d_arch"):
        resolve_configs("seed", model={"d_arch": "transformer"})
    with pytest.raises(ConfigError, match="d_channels"):
        resolve_configs("seed", model={"d_arch": "conv", "d_channels": (8, 8, 8)})  # 28 / 8 is not whole
    with pytest.raises(ConfigError, match="d_channels"):
        resolve_configs("seed", model={"d_arch": "conv", "d_channels": (0, 8)})


def _state(path):
    p = load_checkpoint(path)
    return p


# Mid-epoch and on the epoch boundary; with the MLP and the conv D (the default recipe's).
@pytest.mark.parametrize("split,d_arch", [(7, "mlp"), (10, "conv")])
def test_resume_continues_exactly(tmp_path, split, d_arch):
    kw = dict(epochs=2, ema_decay=0.9, label_smoothing=0.1, lr_decay=0.5, class_weight=1.0, top_k=0.5,
              top_k_gamma=0.5,  # the default recipe's class head, labels and top-k resume too
              model={"d_classes": 10, "d_arch": d_arch, "d_channels": (4, 8)})
    straight = run(tmp_path, "straight", **kw)
    run(tmp_path, "split", **kw, max_steps=split)
    assert load_checkpoint(tmp_path / "split")["step"] == split
    model_cfg, cfg = resume_configs(tmp_path / "split")
    assert cfg.max_steps == 0
    resumed = train(cfg, model_cfg, resume=tmp_path / "split", log=quiet, progress=False)
    assert resumed.out == tmp_path / "split" and resumed.step == straight.step == 20
    a, b = load_checkpoint(straight.out), load_checkpoint(resumed.out)
    for key in ("generator", "generator_ema", "discriminator"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for key in ("opt_g", "opt_d"):
        for i, st in a[key]["state"].items():
            assert torch.equal(st["exp_avg"], b[key]["state"][i]["exp_avg"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    steps = [json.loads(x)["step"] for x in (resumed.out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 20


def test_resume_refuses_changed_hyper_parameters_and_other_architecture(tmp_path, monkeypatch):
    run(tmp_path, "r", max_steps=3)
    with pytest.raises(ConfigError, match="--lr cannot change"):
        resume_configs(tmp_path / "r", lr=1.0)
    monkeypatch.setitem(gconfig.RECIPES, "packed", Recipe(name="packed", description="", epochs=1, model={"d_pack": 2}))
    with pytest.raises(CheckpointError, match="another architecture"):
        resume_configs(tmp_path / "r", recipe="packed")


def test_nan_loss_stops_names_the_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = Trainer.train_step

    def poisoned(self, real, labels=None):
        if self.step == 13:  # the 14th step sees NaN weights in G
            with torch.no_grad():
                self.G.net[0].weight.fill_(float("nan"))
        return original(self, real, labels)

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="at step 14") as err:
        run(tmp_path, "nan", epochs=3)
    assert "step 10" in str(err.value)
    good = load_checkpoint(tmp_path / "nan")
    assert good["step"] == 10 and all(torch.isfinite(v).all() for v in good["generator"].values())


def test_eval_hook_calls_training_evaluator_and_logs_scores(tmp_path, monkeypatch):
    calls = []

    class FakeEvaluator:
        def __init__(self, dataset, data_dir, device):
            calls.append(("init", dataset, str(device)))

        def __call__(self, generator):
            calls.append(("call", generator.training))
            with torch.no_grad():
                x = generator(torch.zeros(2, 100))
            return {"fid": float(len(calls)), "recognisability": float(x.shape[0])}

    monkeypatch.setitem(sys.modules, "gantool.quality.metrics", types.SimpleNamespace(TrainingEvaluator=FakeEvaluator))
    result = run(tmp_path, "eval", epochs=2, eval_every=1)
    assert calls[0] == ("init", "mnist-5k", "cpu") and calls[1:] == [("call", False), ("call", False)]
    evals = [r for r in map(json.loads, (result.out / "metrics.jsonl").read_text().splitlines()) if "eval" in r]
    assert [(e["step"], e["epoch"]) for e in evals] == [(10, 1), (20, 2)]
    assert evals[0]["eval"] == {"fid": 2.0, "recognisability": 2.0}
    assert (result.out / "fid.png").is_file()


def test_bad_options_are_config_errors():
    for kw, msg in [({"epochs": 0}, "epochs"), ({"batch_size": -1}, "batch-size"), ({"lr": 0.0}, "lr"),
                    ({"precision": "fp8"}, "precision"), ({"label_smoothing": 1.0}, "label_smoothing"),
                    ({"ema_decay": 1.0}, "ema_decay")]:
        with pytest.raises(ConfigError, match=msg):
            resolve_configs("seed", **kw)
    with pytest.raises(ConfigError, match="unknown recipe"):
        resolve_configs("nope")


def test_ctrl_c_saves_a_resumable_checkpoint_and_stops(tmp_path, monkeypatch):
    import signal

    original = Trainer.train_step

    def interrupt(self, real, labels=None):
        out = original(self, real, labels)
        if self.step == 5:  # the step in progress is step 6; it completes, then the loop stops
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "train_step", interrupt)
    result = run(tmp_path, "ctrlc", epochs=2)
    assert result.interrupted and result.step == 6
    saved = load_checkpoint(tmp_path / "ctrlc")
    assert saved["step"] == 6 and saved["epoch"] == 0 and saved["epoch_step"] == 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(Trainer, "train_step", original)
    model_cfg, cfg = resume_configs(tmp_path / "ctrlc")
    assert train(cfg, model_cfg, resume=tmp_path / "ctrlc", log=quiet, progress=False).step == 20


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_precisions_train_and_fp16_uses_a_grad_scaler(data, precision):
    model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, precision=precision)
    t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
    assert t.use_amp and t.amp_dtype == getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[precision])
    assert t.scaler.is_enabled() == (precision == "fp16")
    before = t.G.net[0].weight.clone()
    stats = torch.stack([t.train_step(t.images[i * 20:(i + 1) * 20]) for i in range(2)])
    assert torch.isfinite(stats).all() and not torch.equal(before, t.G.net[0].weight)
    assert t.G.net[0].weight.dtype == torch.float32  # master weights stay fp32


def test_precision_auto_is_bf16_only_where_the_device_multiplies_it_natively(data, monkeypatch):
    from gantool import device as dev
    from gantool.device import train_precision

    assert train_precision("auto", "cpu", {"avx2", "fma"}) == "fp32"  # this AVX2 machine: bf16 is emulated
    assert train_precision("auto", "cpu", {"avx512f", "avx512_bf16"}) == "bf16"
    assert train_precision("auto", "cpu", {"amx_bf16"}) == "bf16" and train_precision("fp16", "cpu", set()) == "fp16"
    for flags, want in (({"avx2"}, torch.float32), ({"avx512_bf16"}, torch.bfloat16)):
        monkeypatch.setattr(dev, "cpu_flags", lambda flags=flags: set(flags))
        model_cfg, cfg = resolve_configs("seed", model=TINY, **FAST, precision="auto")
        t = Trainer(model_cfg, cfg, data, torch.device("cpu"))
        assert t.amp_dtype == want and t.use_amp == (want != torch.float32) and cfg.precision == "auto"


def test_resume_into_another_run_directory_is_refused(tmp_path):
    run(tmp_path, "a", max_steps=3)
    run(tmp_path, "b", max_steps=3)
    model_cfg, cfg = resume_configs(tmp_path / "a")
    from gantool.errors import OutputError

    with pytest.raises(OutputError, match="already holds a run"):
        train(cfg, model_cfg, resume=tmp_path / "a", out=tmp_path / "b", log=quiet, progress=False)
    fresh = train(cfg, model_cfg, resume=tmp_path / "a" / "checkpoint.pt", out=tmp_path / "c", log=quiet, progress=False)
    assert fresh.step == 10 and load_checkpoint(tmp_path / "a")["step"] == 3


def test_offline_mnist_falls_back_loudly_into_log_and_checkpoint(tmp_path, monkeypatch):
    from gantool import data as gdata

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(gdata, "_torchvision", offline)
    lines: list[str] = []
    model_cfg, cfg = resolve_configs("seed", model=TINY, **{**FAST, "max_steps": 2}, dataset="mnist",
                                     data_dir=str(tmp_path / "empty"))
    train(cfg, model_cfg, out=tmp_path / "fb", log=lines.append, progress=False)
    assert any(line.startswith("WARNING") and "mnist-5k" in line for line in lines)
    assert any("FALLBACK" in line for line in lines)
    prov = load_checkpoint(tmp_path / "fb")["data"]
    assert prov["fallback"] is True and prov["dataset"] == "mnist-5k" and "ConnectionError" in prov["fallback_reason"]
