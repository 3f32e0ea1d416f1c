"""Samplers: agreement with diffusers step by step, determinism, shapes and trajectories."""

import math
import re

import diffusers  # a test dependency (".[test]"): missing, these tests fail instead of all skipping
import pytest
import torch
from torch import nn

from ddpm_helpers.sampling import ddim_step, ddim_timesteps, dpm_solver_2m_step, ddpm_step, predict, sample
from ddpm_helpers.schedules import NoiseSchedule
from ddpm_helpers.unet import UNet

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
        self.modes_seen = getattr(self, "modes_seen", []) + [self.training]
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
    # eta = 0: the only randomness is the starting noise, so a fixed start gives a fixed result: a DDIM step
    # draws nothing from its generator (review, 2026-12-05: the lines above alone cannot tell)
    x_t, out = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    steps = [ddim_step(s, out, 60, 40, x_t, eta=eta, generator=torch.Generator().manual_seed(seed))[0]
             for eta in (0.0, 0.5) for seed in (1, 2)]
    assert torch.equal(steps[0], steps[1]) and not torch.equal(steps[2], steps[3])
    # DDPM draws at every step: the seed matters
    y_a = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(3))
    y_b = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(3))
    y_c = sample(model, s, 4, method="ddpm", generator=torch.Generator().manual_seed(4))
    assert torch.equal(y_a, y_b) and not torch.equal(y_a, y_c)
    assert x_a.shape == (4, 1, 28, 28)


def test_trajectory_and_model_mode_restored():
    model = FakeNet().train()
    s = NoiseSchedule.from_name("linear", 30)
    x, traj = sample(model, s, 2, image_shape=(1, 8, 8), method="ddpm", return_trajectory=True,
                     trajectory_every=10, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in traj] == [29, 19, 9, -1]
    assert torch.equal(traj[-1][1].clamp(-1, 1), x)
    assert model.training and model.modes_seen == [False] * 30   # eval while sampling, train mode given back


@pytest.mark.parametrize("clip_x0", [False, True])
def test_a_ddim_step_with_eta1_is_a_ddpm_step_with_beta_tilde(clip_x0):
    """Song et al. 2021, eq. 16: eta = 1 from t to t - 1 gives sigma^2 = beta_tilde_t, so the step is DDPM's, noise
    draw included (review, 2026-12-05: the test below could not tell beta from beta_tilde)."""
    s = NoiseSchedule.from_name("linear", 50)
    x_t, out = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in (1, 2, 10, 25, 49):
        ddim, _ = ddim_step(s, out, t, t - 1, x_t, eta=1.0, clip_x0=clip_x0, generator=torch.Generator().manual_seed(t))
        ddpm, _ = ddpm_step(s, out, t, x_t, sigma="beta_tilde", clip_x0=clip_x0,
                            generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ddim, ddpm, rtol=1e-5, atol=1e-5)
        other, _ = ddpm_step(s, out, t, x_t, sigma="beta", clip_x0=clip_x0, generator=torch.Generator().manual_seed(t))
        assert not torch.allclose(ddim, other, rtol=1e-5, atol=1e-5)


def test_ddim_with_all_steps_and_eta1_is_ddpm_sample_for_sample():
    """eta = 1 over all T steps is DDPM with sigma^2 = beta_tilde: from one seed the two whole samplers draw the same
    noise in the same order and return the same images. (It compared means and spreads of two seeds until a review
    of 2026-12-05 found that DDIM with eta = 0, or with 10 steps, passed that too.)"""
    model = FakeNet()
    s = NoiseSchedule.from_name("linear", 50)

    def draw(**kwargs):
        return sample(model, s, 200, image_shape=(1, 2, 2), generator=torch.Generator().manual_seed(0), **kwargs)

    ddpm = draw(method="ddpm")
    torch.testing.assert_close(draw(method="ddim", steps=50, eta=1.0), ddpm, rtol=0, atol=1e-5)
    for other in (dict(method="ddpm", sigma="beta"), dict(method="ddim", steps=25, eta=1.0),
                  dict(method="ddim", steps=50, eta=0.0)):
        assert (draw(**other) - ddpm).abs().max() > 0.05, other


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


def test_guidance_scales_0_and_1_cost_one_network_call_of_the_batch_size():
    """At scale 1 the label's prediction and at scale 0 the null class's is the answer: a second half of the batch
    would be computed only to be multiplied by zero (notebook 07's sweep at s = 0 took as long as at s = 2)."""
    from ddpm_helpers.sampling import predict

    class Counting(nn.Module):
        num_classes = 10

        def __init__(self):
            super().__init__()
            self.labels_seen = []

        def forward(self, x, t, y=None):
            self.labels_seen.append(y.tolist())
            return x + y.float()[:, None, None, None]

    x, y = torch.randn(3, 1, 2, 2), torch.tensor([1, 2, 3])
    expected = {0.0: [[10, 10, 10]], 1.0: [[1, 2, 3]], 2.5: [[1, 2, 3, 10, 10, 10]]}
    for scale, calls in expected.items():
        model = Counting()
        out = predict(model, x, 5, y, scale)
        assert model.labels_seen == calls
        assert torch.allclose(out, x + 10 + scale * (y.float() - 10)[:, None, None, None])


# ---- DPM-Solver++(2M) -----------------------------------------------------------------------------

def float64_dpm_sigmas(ref, name, T):
    """The DPM-Solver scheduler works from ``ref.sigmas = sqrt((1 - alpha_bar) / alpha_bar)`` at the chosen timesteps
    (plus the final 0), which ``set_timesteps`` always casts to float32 (and builds from float32 betas). As for
    ``float64_constants``, replace them with float64 values built from our betas, after ``set_timesteps``."""
    from ddpm_helpers.schedules import make_betas

    alpha_bar = torch.cumprod(1 - make_betas(name, T), 0)
    ref.alphas_cumprod = alpha_bar
    sigmas = ((1 - alpha_bar) / alpha_bar).sqrt()[ref.timesteps]
    ref.sigmas = torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])  # final_sigmas_type="zero": clean data
    return ref


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # diffusers' np.array(tensor)
@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("prediction,ref_prediction,clip_x0", [
    ("eps", "epsilon", False), ("eps", "epsilon", True), ("v", "v_prediction", False), ("v", "v_prediction", True),
    ("x0", "sample", False),
])
def test_dpm_solver_2m_sampling_matches_diffusers(name, steps, prediction, ref_prediction, clip_x0):
    """A whole sampling loop, every intermediate state compared with diffusers' multistep DPM-Solver++ of order 2.

    clip_x0 is emulated in diffusers by its dynamic thresholding with ``sample_max_value=1``: the threshold
    ``s = clamp(quantile(|x0|), 1, 1) = 1``, i.e. a plain clamp of x0 to [-1, 1]. steps=20 (>= 15, where
    ``lower_order_final`` no longer applies) checks that the last step is still first order, as
    ``final_sigmas_type="zero"`` forces it to be.
    """
    from ddpm_helpers.schedules import make_betas

    T = 1000
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, trained_betas=make_betas(name, T).numpy(), algorithm_type="dpmsolver++",
        solver_order=2, solver_type="midpoint", prediction_type=ref_prediction, timestep_spacing="trailing",
        final_sigmas_type="zero", lower_order_final=True, thresholding=clip_x0, sample_max_value=1.0)
    ref.set_timesteps(steps)
    float64_dpm_sigmas(ref, name, T)
    assert ref.timesteps.tolist() == ddim_timesteps(T, steps)

    model, s = FakeNet(), NoiseSchedule.from_name(name, T)
    x, traj = sample(model, s, 4, image_shape=(1, 8, 8), method="dpm++2m", steps=steps, prediction=prediction,
                     clip_x0=clip_x0, return_trajectory=True, generator=torch.Generator().manual_seed(0))
    assert [t for t, _ in traj] == ddim_timesteps(T, steps) + [-1]
    theirs = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # sample()'s starting noise
    assert torch.equal(traj[0][1], theirs)
    for i, t in enumerate(ref.timesteps.tolist()):
        with torch.no_grad():
            out = model(theirs, torch.full((4,), t))
        theirs = ref.step(out, t, theirs).prev_sample
        mine = traj[i + 1][1]
        # FakeNet is no real eps-network: x0_hat = (x - sigma eps) / alpha grows like 1/alpha (~1e2 for linear,
        # ~1e4 for cosine at t = T-1) and float32 keeps ~7 digits of it, so compare relative to the images' scale
        tol = 1e-5 * max(1.0, float(theirs.abs().max()))
        assert torch.allclose(mine.double(), theirs.double(), atol=tol, rtol=0), (t, (mine - theirs).abs().max())
    assert torch.equal(x, traj[-1][1].clamp(-1, 1) if clip_x0 else traj[-1][1])


class GaussianDenoiser(nn.Module):
    r"""The exact x0-predictor for data :math:`x_0 \sim N(\mu, s^2)` per pixel, independent pixels.

    :math:`x_t = \alpha x_0 + \sigma\epsilon` is jointly Gaussian with :math:`x_0`, so
    :math:`E[x_0 | x_t] = \mu + \frac{\alpha s^2}{\alpha^2 s^2 + \sigma^2}(x_t - \alpha\mu)` (linear in x_t).
    Computed in float64 from the schedule's float64 alpha_bar.
    """

    num_classes = None

    def __init__(self, schedule, mu, std):
        super().__init__()
        self.alpha_bar = schedule._float64["alpha_bar"]
        self.mu, self.std = mu.double(), std.double()
        self.unused = nn.Parameter(torch.zeros(()))  # sample() reads the device from the parameters

    def forward(self, x, t, y=None):
        ab = self.alpha_bar[t].reshape(-1, 1, 1, 1)
        gain = ab.sqrt() * self.std**2 / (ab * self.std**2 + 1 - ab)
        return (self.mu + gain * (x.double() - ab.sqrt() * self.mu)).float()


def exact_ode_state(schedule, x_start, mu, std, t):
    r"""The probability-flow ODE's exact solution for Gaussian data, from x_{T-1} = ``x_start`` to index ``t``.

    The ODE's velocity is linear in x, so its flow is an increasing affine map carrying the marginal
    :math:`N(\alpha\mu, \alpha^2 s^2 + \sigma^2)` of one time to that of another: the standardised value
    :math:`z = (x - \alpha\mu) / \sqrt{\alpha^2 s^2 + \sigma^2}` stays constant. ``t = -1`` is clean data
    (alpha = 1, sigma = 0): the endpoint :math:`\mu + s z`.
    """
    ab_start, ab = schedule.scalar("alpha_bar", schedule.num_timesteps - 1), schedule.scalar("alpha_bar", t)
    z = (x_start.double() - math.sqrt(ab_start) * mu) / (ab_start * std**2 + 1 - ab_start).sqrt()
    return math.sqrt(ab) * mu + (ab * std**2 + 1 - ab).sqrt() * z


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_dpm_solver_2m_is_second_order_on_gaussian_data(name):
    """Against the exact ODE solution: DPM-Solver++(2M)'s error falls like 1/steps^2, DDIM's like 1/steps.

    Both samplers end with the same first-order jump from the smallest timestep to clean data (it returns
    x0_hat there), whose error does not shrink with more steps; so the order is measured at t = 99, the last
    noisy state, which the trailing timesteps of 10, 20 and 40 steps all visit. The clean endpoint is checked too.
    """
    T, n = 1000, 64
    s = NoiseSchedule.from_name(name, T)
    mu = torch.tensor([0.3, -0.5, 0.1, 0.8], dtype=torch.float64).reshape(1, 1, 2, 2)
    std = torch.tensor([0.5, 0.2, 0.8, 0.3], dtype=torch.float64).reshape(1, 1, 2, 2)
    model = GaussianDenoiser(s, mu, std)
    x_start = torch.randn(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    target_99 = exact_ode_state(s, x_start, mu, std, 99)

    def run(method, steps):
        x, traj = sample(model, s, n, image_shape=(1, 2, 2), method=method, steps=steps, prediction="x0",
                         clip_x0=False, return_trajectory=True, generator=torch.Generator().manual_seed(0))
        state_99 = dict(traj)[99].double()
        return (state_99 - target_99).pow(2).mean().sqrt().item(), x.double()

    # the closed form is right: 1000 DDIM steps (first order, so only ~1e-3 close) agree with it
    assert run("ddim", 1000)[0] < 5e-3
    err = {m: [run(m, steps)[0] for steps in (10, 20, 40)] for m in ("ddim", "dpm++2m")}
    order = {m: math.log2(e[0] / e[2]) / 2 for m, e in err.items()}  # error ~ C / steps^order
    assert 0.8 < order["ddim"] < 1.2, err
    assert order["dpm++2m"] > 1.5, err
    assert err["dpm++2m"][0] < err["ddim"][0] / 4, err
    # and at the end, after the shared final jump, 10 steps of DPM-Solver++(2M) still land closer
    endpoint = exact_ode_state(s, x_start, mu, std, -1)
    end_err = {m: (run(m, 10)[1] - endpoint).pow(2).mean().sqrt().item() for m in ("ddim", "dpm++2m")}
    assert end_err["dpm++2m"] < end_err["ddim"], end_err


def test_dpm_solver_2m_first_and_last_steps_are_ddim():
    """DPM-Solver++(1) is DDIM (eta = 0), and the first and last 2M steps are first order: with 1 or 2 steps
    the two samplers coincide; with more they differ. The default is 20 steps."""
    model, s = FakeNet(), NoiseSchedule.from_name("cosine", 100)
    kw = dict(image_shape=(1, 4, 4), clip_x0=False, return_trajectory=True)
    for steps in (1, 2, 3):
        a, ta = sample(model, s, 3, method="ddim", steps=steps, generator=torch.Generator().manual_seed(0), **kw)
        b, tb = sample(model, s, 3, method="dpm++2m", steps=steps, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.allclose(ta[1][1], tb[1][1], atol=1e-6)  # the first step
        assert torch.allclose(a, b, atol=1e-6) == (steps < 3), steps
    _, traj = sample(model, s, 1, method="dpm++2m", generator=torch.Generator().manual_seed(0), **kw)
    assert [t for t, _ in traj] == ddim_timesteps(100, 20) + [-1]


def test_dpm_solver_2m_step_final_step_returns_x0_hat():
    s = NoiseSchedule.from_name("linear", 50)
    x, out = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    x_prev, x0 = dpm_solver_2m_step(s, out, 7, -1, x, previous=(20, torch.randn(2, 1, 4, 4)), clip_x0=False)
    assert torch.equal(x_prev, x0)  # sigma = 0, alpha = 1: the second-order history is ignored
    assert torch.allclose(x0, s.predict_x0_from_eps(x, torch.full((2,), 7), out))


def test_dpm_solver_2m_guidance_reproducible_and_mode_restored():
    class Cond(nn.Module):
        num_classes = 10

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.2))
            self.modes_seen = []

        def forward(self, x, t, y=None):
            self.modes_seen.append(self.training)
            return self.w * x + 0.05 * y.float()[:, None, None, None] + 0.01 * t.float()[:, None, None, None]

    class Guided(nn.Module):  # the guided prediction written out by hand: uncond + s (cond - uncond)
        num_classes = None

        def __init__(self, net, y, scale):
            super().__init__()
            self.net, self.y, self.scale = net, y, scale

        def forward(self, x, t, y=None):
            cond, uncond = self.net(x, t, self.y), self.net(x, t, torch.full_like(self.y, 10))
            return uncond + self.scale * (cond - uncond)

    net, s, y = Cond().train(), NoiseSchedule.from_name("linear", 100), torch.tensor([1, 7])
    kw = dict(image_shape=(1, 4, 4), method="dpm++2m", steps=8, progress=True)
    a = sample(net, s, 2, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(5), **kw)
    b = sample(net, s, 2, y=y, guidance_scale=3.0, generator=torch.Generator().manual_seed(5), **kw)
    c = sample(Guided(net, y, 3.0), s, 2, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-6) and net.training
    assert net.modes_seen and not any(net.modes_seen)   # run in eval mode, given back in train mode


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(method="dpm++2m", steps=0), ValueError, r"steps must be an integer in [1, 30], got 0"),
    (dict(method="dpm++2m", steps=31), ValueError, r"steps must be an integer in [1, 30], got 31"),
    (dict(method="dpm++2m", steps=2.5), TypeError, "steps must be an integer, got 2.5"),
    (dict(method="dpm2m"), ValueError, "method must be one of 'ddpm', 'ddim', 'dpm++2m'; got 'dpm2m'"),
    (dict(method="dpm++2m", prediction="noise"), ValueError, "prediction must be one of 'eps', 'x0', 'v'"),
])
def test_dpm_solver_2m_bad_inputs(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        sample(FakeNet(), NoiseSchedule.from_name("linear", 30), 2, image_shape=(1, 4, 4), **kwargs)


def test_dpm_solver_2m_step_bad_inputs():
    s, x = NoiseSchedule.from_name("linear", 30), torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=re.escape("t_prev must be an integer in [-1, 4], got 5")):
        dpm_solver_2m_step(s, x, 5, 5, x)
    with pytest.raises(ValueError, match=re.escape("previous[0] (t_last) must be an integer in [6, 29], got 5")):
        dpm_solver_2m_step(s, x, 5, 2, x, previous=(5, x))
    with pytest.raises(ValueError, match=re.escape("previous[1] (x0_hat_last) must have the shape of x_t")):
        dpm_solver_2m_step(s, x, 5, 2, x, previous=(9, x[:1]))


def test_digits_in_turn_is_guided_prediction_with_labels_in_turn():
    from ddpm_helpers.sampling import DigitsInTurn
    from ddpm_helpers.unet import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
                            num_classes=10)).eval()
    for p in model.parameters():  # the last layer starts at zero: make the output depend on the label
        p.data.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(12, 1, 8, 8), torch.full((12,), 7)
    wrapped = DigitsInTurn(model, guidance_scale=2.5)
    assert wrapped.num_classes is None
    expected = predict(model, x, 7, torch.arange(12) % 10, 2.5)
    torch.testing.assert_close(wrapped(x, t), expected)
    torch.testing.assert_close(DigitsInTurn(model, 1.0)(x, t), model(x, t, torch.arange(12) % 10))
    assert not torch.allclose(wrapped(x, t), model(x, t))  # differs from the unconditional (null-label) output
    # like the UNet, the wrapper takes one t for the whole batch, as a 0-d or a one-entry tensor
    torch.testing.assert_close(wrapped(x, torch.tensor(7)), expected)
    torch.testing.assert_close(wrapped(x, torch.tensor([7])), expected)
    with pytest.raises(ValueError, match="model must be class-conditional"):
        DigitsInTurn(UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=())))
    with pytest.raises(ValueError, match="guidance_scale"):
        DigitsInTurn(model, -1.0)


def test_sample_reads_the_prediction_the_model_was_trained_for_and_refuses_a_contradiction(tmp_path):
    """sample() used to read every network as an eps-predictor unless told otherwise: the shipped v-model, sampled
    with sample(model, schedule, n), drew worse digits without a word. The Trainer and the loaders now record the
    config's prediction on the model, sample() reads it when ``prediction`` is left out, and refuses one that
    contradicts it."""
    from ddpm_helpers.checkpoint import list_checkpoints
    from ddpm_helpers.pretrained import load_pretrained
    from ddpm_helpers.train import Trainer, TrainConfig

    model, schedule, config = load_pretrained("mnist-cpu")
    assert config.prediction == "v" and model.prediction == "v"

    def draw(**kwargs):
        return sample(model, schedule, 2, method="ddim", steps=3, generator=torch.Generator().manual_seed(0),
                      y=torch.tensor([3, 7]), **kwargs)

    recorded = draw()
    assert torch.equal(recorded, draw(prediction="v"))
    with pytest.raises(ValueError, match=r"prediction='eps', but this model was trained to predict 'v'"):
        draw(prediction="eps")
    model.prediction = None   # on purpose: read the v-model as another kind (the old default, eps)
    as_eps = draw()
    assert torch.equal(as_eps, draw(prediction="eps")) and (as_eps - recorded).abs().max() > 0.1
    model.prediction = "score"
    with pytest.raises(ValueError, match="model.prediction must be one of 'eps', 'x0', 'v'"):
        draw()

    cfg = TrainConfig(num_timesteps=10, base_channels=8, channel_mults=(1,), num_res_blocks=1, attention_levels=(),
                      prediction="x0", steps=1, batch_size=2, progress=False)
    trainer = Trainer(cfg, torch.rand(4, 1, 8, 8) * 2 - 1, out_dir=tmp_path)
    assert trainer.model.prediction == trainer.ema_model.prediction == "x0"
    trainer.fit()
    loaded, _, _ = Trainer.load_model(list_checkpoints(tmp_path)[-1])
    assert loaded.prediction == "x0"
    with pytest.raises(ValueError, match="trained to predict 'x0'"):
        sample(trainer.ema_model, trainer.schedule, 1, image_shape=(1, 8, 8), method="ddim", steps=2,
               prediction="v")
    sample(trainer.ema_model, trainer.schedule, 1, image_shape=(1, 8, 8), method="ddim", steps=2)  # x0, read


@pytest.mark.parametrize("oom", ["gpu", "cpu"])
def test_sample_names_an_out_of_memory_error_on_a_torch_without_torch_outofmemoryerror(monkeypatch, oom):
    """A GPU's out-of-memory error (torch.cuda's class, the only one torch 2.3 has) and a CPU's "can't allocate
    memory" become a MemoryError naming num_samples, also where torch has no top-level OutOfMemoryError
    (torch 2.3, the lowest supported): looking that name up inside the handler failed there with an AttributeError."""
    class OutOfMemory(nn.Module):
        def forward(self, x, t):
            if oom == "gpu":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 3 PB")

    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    with pytest.raises(MemoryError, match=r"num_samples=4 images of shape \(1, 28, 28\) do not fit"):
        sample(OutOfMemory(), NoiseSchedule.from_name("linear", 10), 4, method="ddim", steps=2)


@pytest.mark.parametrize("T, steps", [(10, 4), (1000, 3), (1000, 7), (300, 7), (500, 30), (100, 40), (1000, 1)])
def test_ddim_timesteps_match_diffusers_trailing_spacing_where_steps_do_not_divide_T(T, steps):
    """Rounded, not cut down, as diffusers' "trailing" spacing does (np.round, ties to even like Python's round):
    T = 10 in 4 steps is [9, 7, 4, 1], where cutting 7.5 down would give [9, 6, 4, 1]. The step counts of the
    other tests divide T, where both agree. diffusers builds its list with np.arange(T, 0, -T / steps), whose float
    step can leave one point too many (300 in 7 steps: an 8th point of 1.7e-13, index -1 after its "- 1", seen with
    diffusers 0.42.1); that extra index is not a step of noisy data and is left out of the comparison."""
    ref = diffusers.DDIMScheduler(num_train_timesteps=T, timestep_spacing="trailing")
    ref.set_timesteps(steps)
    expected = ref.timesteps.tolist()
    if len(expected) == steps + 1 and expected[-1] == -1:
        expected = expected[:-1]
    assert ddim_timesteps(T, steps) == expected and len(expected) == steps
    if (T, steps) == (10, 4):
        assert ddim_timesteps(T, steps) == [9, 7, 4, 1]
