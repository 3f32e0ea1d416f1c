"""The maths of the forward process, checked against first principles and against diffusers."""

import math

import diffusers  # a test dependency (".[test]"): missing, these tests fail instead of all skipping
import pytest
import torch

from ddpm_helpers.schedules import NoiseSchedule, make_betas

SCHEDULES = ["linear", "cosine", "sigmoid"]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [1, 10, 300, 1000])
def test_schedule_basic_properties(name, T):
    s = NoiseSchedule.from_name(name, T)
    assert s.betas.shape == (T,) and s.betas.dtype == torch.float32
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())  # signal only ever decays
    ab = torch.cumprod(1 - make_betas(name, T), 0)  # float64 reference
    assert torch.allclose(s.alpha_bar.double(), ab, rtol=1e-6)
    assert float(s.posterior_variance[0]) == 0.0  # the last reverse step adds no noise
    assert torch.allclose(s.snr.double(), ab / (1 - ab), rtol=1e-5)
    assert torch.allclose(s.log_snr.double().exp(), ab / (1 - ab), rtol=1e-4)


def test_linear_matches_the_seed_values():
    s = NoiseSchedule.from_name("linear", 300)
    assert math.isclose(float(s.betas[0]), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(s.betas[-1]), 0.02, rel_tol=1e-6)


@pytest.mark.parametrize("name", ["linear", "sigmoid"])
def test_swapped_beta_ends_warn_but_still_give_the_falling_schedule(name):
    """Review, 2026-12-05: beta_start=0.02, beta_end=1e-4 (the arguments swapped) used to pass without a word."""
    with pytest.warns(UserWarning, match=rf"the {name} schedule falls: beta_start=0.02 is larger than beta_end=0.0001"):
        betas = make_betas(name, 50, beta_start=0.02, beta_end=1e-4)
    assert float(betas[0]) > float(betas[-1])
    with pytest.warns(UserWarning, match="beta_end=5e-05"):
        make_betas(name, 50, beta_end=5e-5)  # below the default beta_start
    make_betas(name, 50, beta_start=0.01, beta_end=0.01)  # constant: no warning (warnings are errors in the tests)
    # the warning points at the learner's line, however deep in the package it was raised
    for call in (lambda: make_betas(name, 50, beta_start=0.02, beta_end=1e-4),
                 lambda: NoiseSchedule.from_name(name, 50, beta_start=0.02, beta_end=1e-4)):
        with pytest.warns(UserWarning, match="schedule falls") as caught:
            call()
        assert [w.filename for w in caught] == [__file__]


def test_cosine_matches_nichol_dhariwal_formula():
    T, s_ = 1000, 0.008
    s = NoiseSchedule.from_name("cosine", T)
    f = lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    for t in [0, 10, 500, 900]:  # before the 0.999 cap bites, alpha_bar_t = f((t+1)/T) / f(0)
        assert math.isclose(float(s.alpha_bar[t]), f((t + 1) / T) / f(0), rel_tol=1e-5)


def test_schedule_moves_with_to():
    s = NoiseSchedule.from_name("cosine", 10).to("meta")
    assert s.alpha_bar.device.type == "meta" and s.posterior_variance.device.type == "meta"


def test_q_sample_agrees_with_iterating_the_one_step_process():
    """Closed form x_t = sqrt(ab) x0 + sqrt(1-ab) eps versus t+1 steps of q(x_t | x_{t-1}), Monte Carlo."""
    s = NoiseSchedule.from_name("linear", 200)
    gen = torch.Generator().manual_seed(0)
    n = 40000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    x = x0.clone()
    for t in range(120):
        beta = float(s.betas[t])
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        if t in (0, 30, 119):
            closed = s.q_sample(x0.float(), torch.full((n,), t), generator=gen).double()
            se_mean = math.sqrt(float(x.var()) / n)
            assert abs(float(x.mean()) - float(closed.mean())) < 5 * se_mean * math.sqrt(2)
            ab = float(s.alpha_bar[t])
            assert abs(float(x.mean()) - math.sqrt(ab) * 0.7) < 5 * se_mean
            assert abs(float(x.var()) - (1 - ab)) < 0.03 * (1 - ab) + 1e-4
            assert abs(float(closed.var()) - (1 - ab)) < 0.03 * (1 - ab) + 1e-4


def test_posterior_matches_the_gaussian_product():
    """q(x_{t-1} | x_t, x0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x0): multiply the two Gaussians by hand."""
    s = NoiseSchedule.from_name("cosine", 100)
    betas = make_betas("cosine", 100)  # float64
    ab = torch.cumprod(1 - betas, 0)
    x0, xt = torch.randn(5, 1, 2, 2, dtype=torch.float64), torch.randn(5, 1, 2, 2, dtype=torch.float64)
    for t in [1, 2, 50, 99]:
        a_t, ab_prev = 1 - betas[t], ab[t - 1]
        precision = a_t / betas[t] + 1 / (1 - ab_prev)
        mean = (a_t.sqrt() / betas[t] * xt + ab_prev.sqrt() / (1 - ab_prev) * x0) / precision
        got_mean, got_var = s.q_posterior_mean_variance(x0.float(), xt.float(), torch.full((5,), t))
        assert torch.allclose(got_mean.double(), mean, atol=1e-5)
        assert torch.allclose(got_var.double().flatten(), (1 / precision).expand(5), rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_parameterisations_round_trip(prediction):
    s = NoiseSchedule.from_name("cosine", 1000)
    x0, eps = torch.randn(6, 1, 4, 4, dtype=torch.float64).float(), torch.randn(6, 1, 4, 4)
    t = torch.tensor([0, 1, 10, 500, 900, 998])
    xt = s.q_sample(x0, t, eps)
    x0_hat, eps_hat = s.to_x0_and_eps(s.target(x0, t, eps, prediction), xt, t, prediction)
    assert torch.allclose(x0_hat, x0, atol=2e-3 if prediction == "eps" else 1e-4)
    assert torch.allclose(eps_hat, eps, atol=2e-3 if prediction == "x0" else 1e-4)


def test_steps_until_noise():
    s = NoiseSchedule.from_name("linear", 1000)
    t = s.steps_until_noise(0.05)
    assert float(s.sqrt_alpha_bar[t]) < 0.05 <= float(s.sqrt_alpha_bar[t - 1])


# ---- agreement with diffusers ----------------------------------------------------------------
DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2", "sigmoid": "sigmoid"}


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [300, 1000])
def test_schedule_matches_diffusers(name, T):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name])
    s = NoiseSchedule.from_name(name, T)
    assert torch.allclose(s.betas, ref.betas, atol=1e-5, rtol=0)
    assert torch.allclose(s.alpha_bar, ref.alphas_cumprod, atol=1e-5, rtol=0)
    x0, noise = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    t = torch.randint(0, T, (8,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(s.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=1e-5, rtol=0)
    ref_var = torch.stack([ref._get_variance(int(k)) for k in range(1, T)])
    assert torch.allclose(s.posterior_variance[1:], ref_var, atol=1e-5, rtol=0)


def test_noise_is_drawn_where_the_generator_lives(monkeypatch):
    """torch.randn refuses a CPU generator for a CUDA tensor: noise_like draws on the generator's device, then moves.

    No GPU here, so the 'meta' device stands in for CUDA, and a spy on torch.randn enforces CUDA's rule.
    """
    from ddpm_helpers.schedules import noise_like

    real_randn, calls = torch.randn, []

    def strict_randn(*args, generator=None, device=None, **kwargs):
        calls.append(torch.device(device or "cpu"))
        if generator is not None and torch.device(device or "cpu") != generator.device:
            raise RuntimeError(f"a {generator.device} generator cannot draw on {device}")
        return real_randn(*args, generator=generator, device=device, **kwargs)

    monkeypatch.setattr(torch, "randn", strict_randn)
    x = torch.zeros(2, 1, 4, 4, device="meta")
    noise = noise_like(x, torch.Generator().manual_seed(0))
    assert noise.device.type == "meta" and noise.shape == x.shape and calls == [torch.device("cpu")]
    assert noise_like(x).device.type == "meta"  # no generator: drawn on x's device
    # q_sample's own noise is noise_like's: the same draw from the same seed
    s = NoiseSchedule.from_name("linear", 10)
    x0, t = torch.zeros(3, 1, 2, 2), torch.tensor([9, 9, 9])
    torch.testing.assert_close(
        s.q_sample(x0, t, generator=torch.Generator().manual_seed(1)),
        s.sqrt_one_minus_alpha_bar[9] * noise_like(x0, torch.Generator().manual_seed(1)),
    )


def test_float64_inputs_keep_float64_accuracy():
    """A float64 check must not be limited to float32 by the float32 tables (review, 2026-12-04): near t = T-1
    the cosine schedule's sqrt(alpha_bar) is tiny, and dividing by its float32 value gave errors of 1e-4."""
    sched = NoiseSchedule.from_name("cosine", 1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([999, 990, 500])
    x_t = sched.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float64
    assert (sched.predict_x0_from_eps(x_t, t, eps) - x0).abs().max() < 1e-9
    x0_hat, eps_hat = sched.to_x0_and_eps(sched.velocity(x0, t, eps), x_t, t, "v")
    assert (x0_hat - x0).abs().max() < 1e-9 and (eps_hat - eps).abs().max() < 1e-9
    x32 = sched.q_sample(x0.float(), t, eps.float())  # float32 inputs stay float32
    assert x32.dtype == torch.float32 and torch.allclose(x32.double(), x_t, atol=1e-6)
