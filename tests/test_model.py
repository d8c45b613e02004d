"""The seed's G and D: shapes, parameter counts, value range, PacGAN and minibatch-std options."""
from __future__ import annotations

import pytest
import torch

from gantool.config import ModelConfig
from gantool.model import Discriminator, Dropout, Generator, MinibatchStd, build_generator, count_params, flops_per_sample
from gantool.train.seed_loop import SeedDiscriminator, SeedGenerator


def mlp_params(*widths: int) -> int:
    """Weights and biases of Linear layers between these widths: sum of (in + 1) x out."""
    return sum((i + 1) * o for i, o in zip(widths, widths[1:]))


# The seed article's layers (docs/seed_article.md): G 100-256-512-1024-784, D 784-1024-512-256-1.
G_WIDTHS, D_WIDTHS = (100, 256, 512, 1024, 784), (784, 1024, 512, 256, 1)


def test_seed_parameter_counts():
    assert count_params(Generator()) == mlp_params(*G_WIDTHS)  # 1,486,352, as the README says
    assert count_params(Discriminator()) == mlp_params(*D_WIDTHS)  # 1,460,225
    # The faithful seed re-implementation has the same layers, so the same counts.
    assert count_params(SeedGenerator()) == mlp_params(*G_WIDTHS)
    assert count_params(SeedDiscriminator()) == mlp_params(*D_WIDTHS)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_shapes_and_range(batch):
    torch.manual_seed(0)
    g, d = Generator(), Discriminator().eval()
    x = g(torch.randn(batch, 100) * 5)  # large z pushes tanh towards its limits
    assert x.shape == (batch, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    logits = d(x)
    assert logits.shape == (batch, 1)
    assert not isinstance(d.net[-1], torch.nn.Sigmoid)


def test_discriminator_returns_logits_equal_to_seed_before_sigmoid():
    """gantool's D is the seed's D minus the Sigmoid: same weights give sigmoid(logits) == seed output."""
    torch.manual_seed(0)
    ours, seed = Discriminator().eval(), SeedDiscriminator().eval()
    seed_linears = [m for m in seed.model if isinstance(m, torch.nn.Linear)]
    our_linears = [m for m in ours.net if isinstance(m, torch.nn.Linear)]
    for a, b in zip(our_linears, seed_linears):
        a.load_state_dict(b.state_dict())
    x = torch.randn(5, 1, 28, 28)
    assert torch.allclose(torch.sigmoid(ours(x)), seed(x), atol=1e-6)


def test_generator_matches_seed_generator_with_same_weights():
    torch.manual_seed(0)
    ours, seed = Generator(), SeedGenerator()
    for a, b in zip([m for m in ours.net if isinstance(m, torch.nn.Linear)],
                    [m for m in seed.model if isinstance(m, torch.nn.Linear)]):
        a.load_state_dict(b.state_dict())
    z = torch.randn(4, 100)
    assert torch.allclose(ours(z), seed(z).reshape(4, 1, 28, 28), atol=1e-6)


@pytest.mark.parametrize("pack", [2, 4])
def test_pacgan_pack(pack):
    d = Discriminator(ModelConfig(d_pack=pack)).eval()
    assert d.net[0].in_features == 784 * pack
    assert d(torch.randn(8, 1, 28, 28)).shape == (8 // pack, 1)


def test_pack_sees_consecutive_samples_together():
    d = Discriminator(ModelConfig(d_pack=2, d_dropout=0.0)).eval()
    x = torch.randn(4, 1, 28, 28)
    out = d(x)
    changed = x.clone()
    changed[3] += 1  # only the second pack (samples 2, 3) changes
    out2 = d(changed)
    assert torch.equal(out[0], out2[0]) and not torch.equal(out[1], out2[1])


def test_minibatch_std_feature():
    m = MinibatchStd()
    x = torch.tensor([[0.0, 2.0], [2.0, 4.0]])
    y = m(x)
    assert y.shape == (2, 3) and torch.allclose(y[:, 2], torch.tensor([1.0, 1.0]))
    assert torch.all(m(torch.ones(3, 5))[:, -1] == 0)  # identical samples: zero diversity
    d = Discriminator(ModelConfig(d_minibatch_std=True))
    assert any(isinstance(mod, MinibatchStd) for mod in d.modules())
    assert count_params(d) == count_params(Discriminator()) + 256  # one more input to the last hidden layer
    assert d(torch.randn(6, 1, 28, 28)).shape == (6, 1)


def test_flops_per_sample():
    assert flops_per_sample(build_generator(ModelConfig()), 100) == 2 * (100 * 256 + 256 * 512 + 512 * 1024 + 1024 * 784)


@pytest.mark.parametrize("size,channels,widths", [(28, 1, (128, 64)), (28, 1, (16,)), (32, 3, (32, 16, 8))])
def test_dcgan_maps_z_to_images_of_the_configured_shape(size, channels, widths):
    cfg = ModelConfig(g_arch="dcgan", img_size=size, channels=channels, g_channels=widths, latent_dim=64)
    g = build_generator(cfg).eval()
    x = g(torch.randn(5, 64))
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


def test_config_without_g_arch_loads_as_the_seed_mlp():
    d = ModelConfig().to_dict()
    del d["g_arch"], d["g_channels"]  # what a checkpoint from before g_arch holds
    cfg = ModelConfig.from_dict(d)
    assert cfg.g_arch == "mlp" and type(build_generator(cfg)).__name__ == "Generator"
    d2 = ModelConfig(g_arch="dcgan", g_channels=(32, 16)).to_dict()
    assert ModelConfig.from_dict(d2).g_channels == (32, 16)


def test_config_round_trip():
    cfg = ModelConfig(g_hidden=(8, 16), d_pack=2, d_minibatch_std=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("pack", [1, 2])
def test_conv_discriminator_stacks_packed_samples_as_channels(pack):
    cfg = ModelConfig(d_arch="conv", d_channels=(8, 16), d_pack=pack, d_classes=10, d_dropout=0.0)
    d = Discriminator(cfg).eval()
    assert d.net[1].in_channels == pack  # the first conv sees the whole pack
    x = torch.randn(4, 1, 28, 28)
    logits, classes = d.forward_with_classes(x)
    assert logits.shape == (4 // pack, 1) and classes.shape == (4, 10)
    assert torch.equal(logits, d(x))
    assert d.net[-1].in_features == 16 * 7 * 7  # 28 -> 14 -> 7
    if pack == 2:  # like the MLP D: only the pack holding the changed sample moves
        changed = x.clone()
        changed[3] += 1
        out = d(changed)
        assert torch.equal(out[0], logits[0]) and not torch.equal(out[1], logits[1])


def test_conv_discriminator_minibatch_std_and_config_round_trip():
    cfg = ModelConfig(d_arch="conv", d_channels=(4, 8), d_minibatch_std=True)
    d = Discriminator(cfg)
    assert any(isinstance(mod, MinibatchStd) for mod in d.modules())
    assert d.net[-1].in_features == 8 * 7 * 7 + 1
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # Checkpoints written before d_arch existed hold no such key: they mean the MLP D.
    old = ModelConfig().to_dict()
    del old["d_arch"], old["d_channels"]
    assert ModelConfig.from_dict(old).d_arch == "mlp"


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_rescales(p):
    # nn.Dropout's distribution (15-bit draws, not bernoulli_): ~(1 - p) of the elements survive,
    # each scaled to ~1 / (1 - p), so the expectation is the input; the gradient is the mask.
    torch.manual_seed(0)
    d = Dropout(p)
    x = torch.ones(3, 200_001, requires_grad=True)  # odd size: the last 64-bit draw is part-used
    y = d(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 0.005
    # each of the four 16-bit lanes of a 64-bit draw keeps at the same rate (the sign bit is masked)
    lanes = kept.flatten()[: 4 * (kept.numel() // 4)].reshape(-1, 4).float().mean(0)
    assert (lanes - (1 - p)).abs().max().item() < 0.005, lanes
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())
    # a fresh mask on every call
    assert not torch.equal(d(x) != 0, kept)


def test_dropout_is_identity_in_eval_and_at_p0_and_zero_at_p1():
    x = torch.randn(4, 8)
    d = Dropout(0.3).eval()
    assert torch.equal(d(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))
    # off the CPU it is F.dropout (the meta device stands in for CUDA here: shapes only)
    assert Dropout(0.3)(torch.ones(4, 8, device="meta")).shape == (4, 8)


def test_discriminators_use_the_fast_dropout():
    for arch in ("mlp", "conv"):
        d = Discriminator(ModelConfig(d_arch=arch))
        drops = [m for m in d.modules() if isinstance(m, torch.nn.Dropout)]
        assert drops and all(type(m) is Dropout for m in drops)
