"""The U-Net: shapes for several sizes, clear errors, conditioning, and the seed network's receptive field."""

import pytest
import torch

from ddpm_helpers.unet import (ResBlock, SimpleUNet, UNet, UNetConfig, count_parameters, receptive_field,
                               sinusoidal_embedding)


@pytest.mark.parametrize("mults,size", [((1, 2, 2), 28), ((1, 2, 2), 32), ((1, 2), 14), ((1, 2), 30), ((1,), 9),
                                        ((1, 2, 2, 2), 16)])
def test_output_shape_matches_input(mults, size):
    model = UNet(base_channels=8, channel_mults=mults, num_res_blocks=1, attention_levels=(len(mults) - 1,))
    x = torch.randn(2, 1, size, size + model.downsample_factor)
    assert model(x, torch.tensor([0, 7])).shape == x.shape


def test_bad_size_gives_clear_error():
    model = UNet(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=1)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.randn(1, 1, 30, 30), torch.tensor([1]))


def random_conditional_unet():
    """A small class-conditional UNet with random weights everywhere (a fresh one's output layer is zero)."""
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, num_classes=10).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


def test_class_conditional_model_uses_labels_and_null_class():
    model = random_conditional_unet()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([5, 5])
    out_3 = model(x, t, torch.tensor([3, 3]))
    out_7 = model(x, t, torch.tensor([7, 7]))
    out_null = model(x, t, torch.tensor([10, 10]))
    assert not torch.allclose(out_3, out_7)
    assert torch.allclose(model(x, t), out_null)  # no label = the null class
    with pytest.raises(ValueError, match="y must hold"):
        model(x, t, torch.tensor([11, 0]))


def test_labels_of_any_integer_dtype_and_inputs_on_the_cpu_are_accepted():
    """nn.Embedding takes only int32 and int64 labels, but MNIST's own label file is uint8; and a learner's
    t = torch.randint(0, T, (B,)) is on the CPU while the images are on the GPU. The UNet converts and moves both."""
    model = random_conditional_unet()
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([5, 50, 500])
    expected = model(x, t, torch.tensor([3, 7, 10]))
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        torch.testing.assert_close(model(x, t, torch.tensor([3, 7, 10], dtype=dtype)), expected, rtol=0, atol=0)
    # the meta device stands in for a GPU: model and images there, t and y on the CPU
    out = model.to("meta")(x.to("meta"), t, torch.tensor([3, 7, 10], dtype=torch.uint8))
    assert out.device.type == "meta" and out.shape == x.shape


def test_unet_runs_in_float64_and_agrees_with_float32():
    """A UNet made .double() runs (its time embedding follows the input's dtype), e.g. to check gradients exactly."""
    model = random_conditional_unet()
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([3, 40]), torch.tensor([1, 10])
    out32 = model(x, t, y)
    out64 = model.double()(x.double(), t, y)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-4)
    # outside autocast another input dtype is an error naming x (test_validation); under autocast it is the point
    model = model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out16 = model(x.bfloat16(), t, y)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32, rtol=0.05, atol=0.05)


def test_fresh_unet_predicts_zero_and_counts_parameters():
    model = UNet()  # zero-initialised output layer: the untrained model predicts eps = 0
    assert torch.equal(model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])), torch.zeros(2, 1, 28, 28))
    assert 1_000_000 < count_parameters(model) < 3_000_000
    assert UNetConfig().to_dict()["channel_mults"] == (1, 2, 2)


def test_sinusoidal_embedding_properties():
    e = sinusoidal_embedding(torch.arange(1000), 64)
    assert e.shape == (1000, 64)
    assert torch.allclose(e[:, :32] ** 2 + e[:, 32:] ** 2, torch.ones(1000, 32), atol=1e-5)  # sin^2 + cos^2 = 1
    assert torch.equal(e[0, :32], torch.zeros(32))
    # nearby steps are similar, distant ones are not
    cos = torch.nn.functional.cosine_similarity
    assert cos(e[500:501], e[501:502]) > cos(e[500:501], e[900:901])


def test_receptive_fields():
    """The seed's SimpleUNet sees a 9x9 patch (four 3x3 convs); the U-Net sees the whole 28x28 digit."""
    simple = receptive_field(SimpleUNet(num_timesteps=300))
    assert int(simple.sum()) == 81
    rows, cols = simple.nonzero().T
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (10, 18, 10, 18)
    assert bool(receptive_field(UNet(base_channels=8)).all())  # norms stripped (the default): still the whole image
    assert torch.equal(receptive_field(SimpleUNet(), strip_norms=False), simple)  # no norms: the flag changes nothing


class _OneResBlock(torch.nn.Module):
    """One ResBlock(1, 8, 8) with the (x, t) signature receptive_field expects (a fixed time vector)."""

    def __init__(self):
        super().__init__()
        self.block = ResBlock(1, 8, emb_dim=8)

    def forward(self, x, t):
        return self.block(x, torch.zeros(x.shape[0], 8))


def test_receptive_field_strips_group_norms():
    """A GroupNorm's statistics span every pixel, so with norms one ResBlock "sees" all 784; without, its 5x5."""
    block = _OneResBlock()
    local = receptive_field(block)
    assert int(local.sum()) == 25  # two 3x3 convolutions (+ a 1x1 skip): a 5x5 patch
    rows, cols = local.nonzero().T
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (12, 16, 12, 16)
    assert int(receptive_field(block, strip_norms=False).sum()) == 784
    assert isinstance(block.block.norm1, torch.nn.GroupNorm)  # measured on a copy: the model is untouched
    with pytest.raises(TypeError, match="strip_norms must be True or False"):
        receptive_field(block, strip_norms="yes")


def test_simple_unet_accepts_other_sizes():
    model = SimpleUNet(num_timesteps=300)
    assert model(torch.randn(3, 1, 20, 24), torch.tensor([1, 2, 3])).shape == (3, 1, 20, 24)
