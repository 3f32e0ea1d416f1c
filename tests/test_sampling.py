"""Samplers: agreement with diffusers step by step, determinism, shapes and trajectories."""

import pytest
import torch
from torch import nn

from ddpm_helpers.sampling import ddim_step, ddim_timesteps, ddpm_step, sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.unet import UNet

diffusers = pytest.importorskip("diffusers")
DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def float64_constants(ref, name, T):
    """diffusers keeps alphas_cumprod in float32, so 1 - alpha_bar near t = 0 (about 1e-4) keeps only ~3 digits.
    We compute ours in float64; to compare the *formulas* at 1e-5, give diffusers float64 constants too."""
    from ddpm_helpers.schedules import make_betas

    betas = make_betas(name, T)
    ref.betas, ref.alphas = betas, 1 - betas
    ref.alphas_cumprod = torch.cumprod(1 - betas, 0)
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return ref


class FakeNet(nn.Module):
    """A deterministic stand-in for a trained network: output depends on x and t."""

    num_classes = None

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t, y=None):
        return self.w * x + 0.1 * torch.sin(t.float()[:, None, None, None] / 50 + x)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("sigma,variance_type", [("beta_tilde", "fixed_small"), ("beta", "fixed_large")])
def test_ddpm_step_matches_diffusers(name, sigma, variance_type):
    T = 1000
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name],
                                  variance_type=variance_type, clip_sample=True)
    float64_constants(ref, name, T)
    s = NoiseSchedule.from_name(name, T)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for t in [999, 500, 37, 1, 0]:
        mine, _ = ddpm_step(s, out, t, x, sigma=sigma, generator=torch.Generator().manual_seed(t))
        theirs = ref.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(mine.double(), theirs.double(), atol=1e-5, rtol=0), (t, (mine - theirs).abs().max())


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("prediction,ref_prediction", [("eps", "epsilon"), ("v", "v_prediction")])
def test_ddim_steps_match_diffusers(name, eta, prediction, ref_prediction):
    T, steps = 1000, 20
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], clip_sample=True,
                                  set_alpha_to_one=True, timestep_spacing="trailing", prediction_type=ref_prediction)
    ref.set_timesteps(steps)
    float64_constants(ref, name, T)
    mine_ts = ddim_timesteps(T, steps)
    assert mine_ts == ref.timesteps.tolist()
    s = NoiseSchedule.from_name(name, T)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for i, t in enumerate(mine_ts):
        t_prev = mine_ts[i + 1] if i + 1 < steps else -1
        mine, _ = ddim_step(s, out, t, t_prev, x, eta=eta, prediction=prediction,
                            generator=torch.Generator().manual_seed(i))
        theirs = ref.step(out, t, x, eta=eta, use_clipped_model_output=True,
                          generator=torch.Generator().manual_seed(i)).prev_sample
        assert torch.allclose(mine.double(), theirs.double(), atol=1e-5, rtol=0), (t, (mine - theirs).abs().max())


def test_unclipped_ddpm_step_is_the_seed_formula():
    """Without clipping, the posterior-mean step equals 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps)."""
    s = NoiseSchedule.from_name("linear", 300)
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in [299, 100, 5]:
        a, b, ab = s.alphas[t], s.betas[t], s.alpha_bar[t]
        seed_mean = (x - b / (1 - ab).sqrt() * eps) / a.sqrt()
        t_b = torch.full((3,), t)
        x0_hat = s.predict_x0_from_eps(x, t_b, eps)
        our_mean, _ = s.q_posterior_mean_variance(x0_hat, x, t_b)
        assert torch.allclose(our_mean, seed_mean, atol=1e-4)


def test_ddim_eta0_is_deterministic_and_generator_reproducible():
    torch.manual_seed(0)
    model = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=())
    with torch.no_grad():  # a random, non-zero network
        for p in model.parameters():
            p.normal_(0, 0.05)
    s = NoiseSchedule.from_name("cosine", 100)
    x_a = sample(model, s, 4, method="ddim", steps=10, generator=torch.Generator().manual_seed(3))
    x_b = sample(model, s, 4, method="ddim", steps=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x_a, x_b)
    # eta = 0: the only randomness is the starting noise, so a fixed start gives a fixed result
    y_a = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(3))
    y_b = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(3))
    y_c = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(4))
    assert torch.equal(y_a, y_b) and not torch.equal(y_a, y_c)
    assert x_a.shape == (4, 1, 28, 28) and x_a.min() >= -1 and x_a.max() <= 1


def test_trajectory_and_model_mode_restored():
    model = FakeNet().train()
    s = NoiseSchedule.from_name("linear", 30)
    x, traj = sample(model, s, 2, image_shape=(1, 8, 8), method="ddpm", return_trajectory=True,
                     trajectory_every=10, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in traj] == [29, 19, 9, -1]
    assert torch.equal(traj[-1][1].clamp(-1, 1), x)
    assert model.training


def test_ddim_with_all_steps_and_eta1_matches_ddpm_in_distribution():
    """eta = 1 over all T steps is DDPM with sigma^2 = beta_tilde: the two samplers agree in mean and spread."""
    model = FakeNet()
    s = NoiseSchedule.from_name("linear", 50)
    a = sample(model, s, 2000, image_shape=(1, 2, 2), method="ddpm", generator=torch.Generator().manual_seed(0))
    b = sample(model, s, 2000, image_shape=(1, 2, 2), method="ddim", steps=50, eta=1.0,
               generator=torch.Generator().manual_seed(1))
    assert abs(float(a.mean() - b.mean())) < 0.03
    assert abs(float(a.std() - b.std())) < 0.03


def test_classifier_free_guidance_combines_predictions():
    from ddpm_helpers.sampling import predict

    class Cond(nn.Module):
        num_classes = 10

        def forward(self, x, t, y=None):
            return x * 0 + (y.float()[:, None, None, None] == 10).float() * -1 + (y != 10).float()[:, None, None, None]

    x = torch.zeros(3, 1, 2, 2)
    y = torch.tensor([1, 2, 3])
    # cond = +1, uncond = -1: scale s gives -1 + s * 2
    for scale in [0.0, 1.0, 3.0]:
        assert torch.allclose(predict(Cond(), x, 5, y, scale), torch.full_like(x, -1 + 2 * scale))
