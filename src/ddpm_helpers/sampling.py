r"""Samplers: DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), DDIM (Song et al. 2021) and
DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Algorithm 2).

A sampler starts from pure noise ``x_{T-1} ~ N(0, I)`` (0-based, see :mod:`ddpm_helpers.schedules`)
and repeatedly asks the network for its prediction, turns it into an estimate ``x0_hat`` of the
clean image, and steps to a less noisy ``x_{t-1}``. Steps are written as numbered stages citing
the papers. Every random draw comes from the ``generator`` passed in, so a fixed generator gives the
same images on the same device.

Classifier-free guidance (Ho & Salimans 2022): with labels ``y`` and ``guidance_scale`` s, the
prediction is ``uncond + s * (cond - uncond)``; s = 1 is the plain conditional model, s = 0 the
unconditional one, s > 1 trades diversity for fidelity to the label.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._validate import (_show, check_available_device, check_bool, check_choice, check_float, check_generator,
                        check_int, check_num_timesteps, check_tensor, labels_outside, same_device, skip_value_checks)
from .schedules import (PREDICTION_TYPES, NoiseSchedule, check_model_callable, check_model_fits_schedule,
                        check_model_output, check_schedule, noise_like)

SIGMA_CHOICES = ("beta_tilde", "beta")
METHODS = ("ddpm", "ddim", "dpm++2m")
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # not in torch 2.3 (a CUDA one there)
DEFAULT_STEPS = {"ddim": 50, "dpm++2m": 20}  # when ``steps`` is None (capped at T)


def _x0_eps(schedule, model_output, x_t, t: int, prediction: str, clip_x0: bool):
    """Stage 1-2 of every step: from the network's output to (x0_hat, eps_hat)."""
    check_tensor("x_t", x_t, ndim=(2, 3, 4, 5), floating=True)  # before x_t.shape below, which names no argument
    t_batch = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    x0, eps = schedule.to_x0_and_eps(model_output, x_t, t_batch, prediction)
    if clip_x0:  # pixels live in [-1, 1]; keep the estimate there and make eps agree with it
        x0 = x0.clamp(-1, 1)
        eps = schedule.predict_eps_from_x0(x_t, t_batch, x0)
    return x0, eps


def ddpm_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    *,
    prediction: str = "eps",
    sigma: str = "beta_tilde",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One ancestral step :math:`x_t \to x_{t-1}` at 0-based index ``t``; returns ``(x_prev, x0_hat)``.

    1. predict :math:`\hat x_0` (eq. 15), clipped to [-1, 1] if ``clip_x0``;
    2. posterior mean :math:`\tilde\mu_t(x_t, \hat x_0)` (eq. 7). Without clipping this equals the
       seed article's :math:`\frac{1}{\sqrt{\alpha_t}}(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\hat\epsilon)` (eq. 11);
    3. add :math:`\sigma_t z` with :math:`\sigma_t^2 = \tilde\beta_t` (``"beta_tilde"``) or :math:`\beta_t`
       (``"beta"``), both from section 3.2 of Ho et al. 2020; no noise at the last step (``t = 0``).
    """
    check_schedule("schedule", schedule)
    check_bool("clip_x0", clip_x0)
    check_choice("sigma", sigma, SIGMA_CHOICES)
    t = check_int("t", t, min_value=0, max_value=schedule.num_timesteps - 1)
    x0, _ = _x0_eps(schedule, model_output, x_t, t, prediction, clip_x0)
    mean = schedule.scalar("posterior_mean_coef_x0", t) * x0 + schedule.scalar("posterior_mean_coef_xt", t) * x_t
    if t == 0:
        return mean, x0
    variance = schedule.scalar("posterior_variance" if sigma == "beta_tilde" else "betas", t)
    return mean + math.sqrt(variance) * noise_like(x_t, generator), x0


def ddim_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    x_t: torch.Tensor,
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One DDIM step from index ``t`` to ``t_prev < t`` (``-1`` means "to clean data"); returns ``(x_prev, x0_hat)``.

    Song et al. 2021, eq. 12, with :math:`\bar\alpha_{-1} = 1`:
    1. predict :math:`\hat x_0` and :math:`\hat\epsilon`;
    2. :math:`\sigma = \eta\sqrt{(1-\bar\alpha_{prev})/(1-\bar\alpha_t)}\sqrt{1-\bar\alpha_t/\bar\alpha_{prev}}` (eq. 16);
    3. :math:`x_{prev} = \sqrt{\bar\alpha_{prev}}\hat x_0 + \sqrt{1-\bar\alpha_{prev}-\sigma^2}\,\hat\epsilon + \sigma z`.
    ``eta = 0`` is deterministic; ``eta = 1`` with every step matches DDPM with :math:`\sigma^2 = \tilde\beta_t`.
    """
    T = check_schedule("schedule", schedule).num_timesteps
    check_bool("clip_x0", clip_x0)
    t = check_int("t", t, min_value=0, max_value=T - 1)
    t_prev = check_int("t_prev", t_prev, min_value=-1, max_value=t - 1)
    check_float("eta", eta, min_value=0.0, max_value=1.0)
    x0, eps = _x0_eps(schedule, model_output, x_t, t, prediction, clip_x0)
    # per-step scalars in float64: 1 - ab_prev - sigma^2 cancels badly in float32 near t = T-1
    ab_t, ab_prev = schedule.scalar("alpha_bar", t), schedule.scalar("alpha_bar", t_prev)
    sigma = eta * math.sqrt(max(0.0, (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)))
    x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
    if eta > 0 and t_prev >= 0:
        x_prev = x_prev + sigma * noise_like(x_t, generator)
    return x_prev, x0


def _alpha_sigma_lambda(schedule: NoiseSchedule, t: int) -> tuple[float, float, float]:
    r""":math:`(\alpha_t, \sigma_t, \lambda_t)` in float64 at index ``t``; ``t = -1`` is clean data (1, 0, +inf)."""
    if t == -1:
        return 1.0, 0.0, math.inf
    ab = schedule.scalar("alpha_bar", t)
    # lambda = log(alpha / sigma) = log(SNR) / 2; log_snr is stored in float64, so 1 - alpha_bar keeps its digits
    return math.sqrt(ab), math.sqrt(1 - ab), 0.5 * schedule.scalar("log_snr", t)


def dpm_solver_2m_step(
    schedule: NoiseSchedule,
    model_output: torch.Tensor,
    t: int,
    t_prev: int,
    x_t: torch.Tensor,
    *,
    previous: tuple[int, torch.Tensor] | None = None,
    prediction: str = "eps",
    clip_x0: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""One DPM-Solver++(2M) step from index ``t`` to ``t_prev < t`` (``-1``: clean data); returns ``(x_prev, x0_hat)``.

    Lu et al. 2022 (arXiv 2211.01095) write the probability-flow ODE in the half log-SNR
    :math:`\lambda_t = \log(\alpha_t / \sigma_t)`, with :math:`\alpha_t = \sqrt{\bar\alpha_t}` and
    :math:`\sigma_t = \sqrt{1 - \bar\alpha_t}`, and solve its linear part exactly:

    .. math:: x_{prev} = \frac{\sigma_{prev}}{\sigma_t} x_t
              + \sigma_{prev} \int_{\lambda_t}^{\lambda_{prev}} e^{\lambda} \hat x_0(x_\lambda, \lambda)\,d\lambda .

    Only the integral of the data prediction :math:`\hat x_0` is approximated. With
    :math:`h = \lambda_{prev} - \lambda_t > 0`:

    1. predict :math:`\hat x_0` at ``t`` (clipped to [-1, 1] if ``clip_x0``, as in DDIM);
    2. first order (``previous=None``, :math:`\hat x_0` constant over the step; this *is* DDIM with eta = 0):
       :math:`D = \hat x_0^{(t)}`;
       second order ("2M", Algorithm 2): ``previous = (t_last, x0_hat_last)`` is the prediction kept from the
       step before, at :math:`t_{last} > t`. With :math:`r = (\lambda_t - \lambda_{t_{last}}) / h`, a linear
       extrapolation in :math:`\lambda` gives
       :math:`D = (1 + \frac{1}{2r})\,\hat x_0^{(t)} - \frac{1}{2r}\,\hat x_0^{(t_{last})}`;
    3. :math:`x_{prev} = \frac{\sigma_{prev}}{\sigma_t} x_t - \alpha_{prev}\,(e^{-h} - 1)\,D`.

    The last step (``t_prev = -1``) lands on clean data: :math:`\bar\alpha = 1`, :math:`\sigma_{prev} = 0`,
    :math:`\lambda_{prev} = +\infty`, so :math:`e^{-h} = 0` and :math:`x_{prev} = D`. A second-order
    correction is undefined there (:math:`h = \infty` gives :math:`r = 0` and a :math:`1/(2r)` weight), so
    that step is always first order and returns :math:`\hat x_0` at ``t``, exactly like diffusers'
    ``DPMSolverMultistepScheduler`` with ``final_sigmas_type="zero"`` (which forces its last step to first
    order whatever ``lower_order_final`` says). Scalars are computed in float64.
    """
    T = check_schedule("schedule", schedule).num_timesteps
    check_bool("clip_x0", clip_x0)
    t = check_int("t", t, min_value=0, max_value=T - 1)
    t_prev = check_int("t_prev", t_prev, min_value=-1, max_value=t - 1)
    x0, _ = _x0_eps(schedule, model_output, x_t, t, prediction, clip_x0)
    _, sigma_t, lam_t = _alpha_sigma_lambda(schedule, t)
    alpha_prev, sigma_prev, lam_prev = _alpha_sigma_lambda(schedule, t_prev)
    h = lam_prev - lam_t
    d = x0
    if previous is not None and not (isinstance(previous, (tuple, list)) and len(previous) == 2):
        raise TypeError(f"previous must be None or a pair (t_last, x0_hat_last) from the step before, got {_show(previous)}")
    if previous is not None and t_prev >= 0:
        t_last, x0_last = previous
        check_int("previous[0] (t_last)", t_last, min_value=t + 1, max_value=T - 1)
        check_tensor("previous[1] (x0_hat_last)", x0_last, floating=True)
        if x0_last.shape != x0.shape:
            raise ValueError(f"previous[1] (x0_hat_last) must have the shape of x_t {tuple(x_t.shape)}, "
                             f"got {tuple(x0_last.shape)}")
        r = (lam_t - _alpha_sigma_lambda(schedule, t_last)[2]) / h
        d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_last.to(x0)
    # -(e^{-h} - 1) = -expm1(-h): accurate for small h, and exactly 1 when h = inf (the final step)
    x_prev = (sigma_prev / sigma_t) * x_t + (-alpha_prev * math.expm1(-h)) * d
    return x_prev, x0


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` evenly spaced indices from ``T-1`` downwards ("trailing" spacing, Lin et al. 2024):
    the first step always starts from pure noise. E.g. T=1000, steps=4 -> [999, 749, 499, 249]."""
    check_num_timesteps(num_timesteps)
    check_int("steps", steps, min_value=1, max_value=num_timesteps)
    ratio = num_timesteps / steps
    return [int(round(num_timesteps - i * ratio)) - 1 for i in range(steps)]


def _prediction_of(model: nn.Module, prediction: str | None) -> str:
    """``prediction``, or the model's recorded one (``model.prediction``) when it is None; "eps" when neither says."""
    recorded = getattr(model, "prediction", None)
    if recorded is not None:
        check_choice("model.prediction", recorded, PREDICTION_TYPES)
    if prediction is None:
        return recorded or "eps"
    check_choice("prediction", prediction, PREDICTION_TYPES)
    if recorded is not None and prediction != recorded:
        raise ValueError(f"prediction={prediction!r}, but this model was trained to predict {recorded!r} "
                         "(model.prediction, recorded by the Trainer or the loader from its config); leave "
                         f"prediction out or pass {recorded!r} (set model.prediction = None to read it otherwise "
                         "on purpose)")
    return prediction


def _check_labels(y: torch.Tensor, model: nn.Module, batch: int) -> None:
    """``y`` must be one integer label per image, in [0, num_classes] (num_classes itself: the null label, which
    asks for an unconditional prediction), for a class-conditional ``model``."""
    check_tensor("y", y, ndim=1, floating=False)
    if getattr(model, "num_classes", None) is None:
        raise ValueError("y (class labels) was given, but the model is unconditional (num_classes=None)")
    if y.shape[0] != batch:
        raise ValueError(f"y must hold one label per sample ({batch}), got {y.shape[0]}")
    outside = labels_outside(y, model.num_classes)
    if outside:
        raise ValueError(f"y must hold labels in [0, {model.num_classes}] ({model.num_classes}: the null label, "
                         f"unconditional), got values in [{outside[0]}, {outside[1]}]")


@torch.no_grad()
def predict(
    model: nn.Module,
    x_t: torch.Tensor,
    t: int,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The network's output at index ``t``, with classifier-free guidance when ``y`` is given and the scale is not 1.

    Scale 1 is the conditional prediction and scale 0 the unconditional one (the null class), each one network call;
    any other scale mixes the two, computed as one batch of twice the size."""
    t = check_int("t", t, min_value=0)  # predict() is not told T: sample() and the step functions check the top
    check_float("guidance_scale", guidance_scale, min_value=0.0)
    check_tensor("x_t", x_t, floating=True)
    check_model_callable(model)
    if hasattr(model, "check_image_shape"):  # a U-Net's channels and size, named as the caller knows them
        check_tensor("x_t", x_t, ndim=4)
        model.check_image_shape(tuple(x_t.shape), "x_t")
    t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
    if y is None:
        if guidance_scale != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale} needs class labels y (one per image) and a "
                             "class-conditional model; without y there is nothing to guide towards: leave "
                             "guidance_scale at 1.0")
        return check_model_output(model(x_t, t_batch), x_t.shape)
    _check_labels(y, model, x_t.shape[0])
    null = torch.full_like(y, model.num_classes)
    if guidance_scale in (0.0, 1.0):  # one prediction alone: a doubled batch would be mixed with weights 1 and 0
        return check_model_output(model(x_t, t_batch, y if guidance_scale == 1.0 else null), x_t.shape)
    both = check_model_output(model(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), torch.cat([y, null])),
                              (2 * x_t.shape[0], *x_t.shape[1:]))
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


class DigitsInTurn(nn.Module):
    """A class-conditional denoiser seen as an unconditional one, called as ``model(x_t, t)``.

    Image ``i`` of every batch is asked for class ``i % num_classes`` (so a batch of 10 draws 0, 1, ..., 9),
    with classifier-free guidance ``guidance_scale`` (see :func:`predict`). Code written for unconditional
    models (the sampling loops of notebook 06) can then draw digits from the shipped class-conditional model.
    """

    def __init__(self, model: nn.Module, guidance_scale: float = 2.0):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a class-conditional torch.nn.Module, got {_show(model)}")
        classes = getattr(model, "num_classes", None)
        if classes is None:
            raise ValueError("model must be class-conditional (num_classes set); this one is unconditional")
        self.model = model
        self.classes = classes
        self.guidance_scale = check_float("guidance_scale", guidance_scale, min_value=0.0)
        self.num_classes = None  # to callers it is unconditional

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_tensor("x_t", x_t, ndim=4, floating=True)
        check_tensor("t", t, ndim=(0, 1), floating=False)
        if t.numel() not in (1, x_t.shape[0]):
            raise ValueError(f"t must have 1 or {x_t.shape[0]} entries (one per image), got {t.numel()}")
        t = t.reshape(-1).expand(x_t.shape[0])  # like the UNet, accept one t for the whole batch
        y = torch.arange(x_t.shape[0], device=x_t.device) % self.classes
        if self.guidance_scale == 1.0:
            return self.model(x_t, t, y)
        null = torch.full_like(y, self.classes)
        cond, uncond = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)


@torch.no_grad()
def sample(
    model: nn.Module,
    schedule: NoiseSchedule,
    num_samples: int,
    *,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    method: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    sigma: str = "beta_tilde",
    prediction: str | None = None,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    return_trajectory: bool = False,
    trajectory_every: int = 1,
    progress: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    r"""Draw ``num_samples`` images in [-1, 1] of shape (N, *image_shape) (not clamped when ``clip_x0=False``).

    ``method="ddpm"`` runs all T ancestral steps (``steps`` must be None or T); ``"ddim"`` runs
    ``steps`` (default 50, at most T) with noise level ``eta``; ``"dpm++2m"`` runs the deterministic
    DPM-Solver++(2M) (:func:`dpm_solver_2m_step`, ``steps`` default 20) on
    the same timesteps as DDIM: the first step is first order (= DDIM), the middle ones second order,
    and the last one is a first-order jump to clean data, i.e. the image is :math:`\hat x_0` predicted at
    the smallest timestep, as in diffusers' ``DPMSolverMultistepScheduler(final_sigmas_type="zero")``.
    With ``return_trajectory``, also returns ``[(t, x_t on CPU), ...]`` every ``trajectory_every``
    steps, for animations: ``t`` is the 0-based index of the state (``T-1`` is the starting noise,
    ``-1`` the finished image). The model is put in eval mode for sampling and given back in the mode
    it came in. It runs on ``device``, by default its own (the CPU for a model without parameters).
    ``sigma`` (DDPM's step variance) is accepted only with ``"ddpm"``, ``eta`` only with ``"ddim"``: an option
    that would have no effect is an error, not silently ignored.

    ``prediction`` is what the network outputs (``"eps"``, ``"x0"`` or ``"v"``). Left at None, it is the
    model's own ``model.prediction``, which the ``Trainer`` and the loaders (``Trainer.load_model``,
    ``load_pretrained``) record from the config it was trained with, and ``"eps"`` for a model that records
    none. Read as the wrong kind, a network still draws something, only worse (the shipped v-model read as
    eps, 200 digits of 10-step DDIM: Frechet distance 6.0 instead of 0.4), so a ``prediction`` that contradicts
    the model's is an error.

    All ``num_samples`` images are drawn as one batch: more than the device's memory holds raises a MemoryError
    that names ``num_samples`` (draw in batches from one generator, as ``python -m ddpm_helpers sample`` does).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module called as model(x_t, t) or model(x_t, t, y), got {_show(model)}")
    check_choice("method", method, METHODS)
    prediction = _prediction_of(model, prediction)
    check_choice("sigma", sigma, SIGMA_CHOICES)
    check_int("num_samples", num_samples, min_value=1)
    check_int("trajectory_every", trajectory_every, min_value=1)
    check_float("guidance_scale", guidance_scale, min_value=0.0)
    check_float("eta", eta, min_value=0.0, max_value=1.0)
    check_schedule("schedule", schedule)
    check_generator("generator", generator)
    for name, flag in (("clip_x0", clip_x0), ("return_trajectory", return_trajectory), ("progress", progress)):
        check_bool(name, flag)
    if sigma != "beta_tilde" and method != "ddpm":
        raise ValueError(f"sigma={sigma!r} chooses the variance of DDPM's steps and has no effect with "
                         f"method={method!r} (DDIM's noise is set by eta); use method='ddpm' or leave sigma at "
                         "'beta_tilde'")
    if eta != 0.0 and method != "ddim":
        raise ValueError(f"eta={eta} is DDIM's noise level and has no effect with method={method!r}; "
                         "use method='ddim' or leave eta at 0.0")
    check_model_fits_schedule(model, schedule)  # e.g. SimpleUNet, which is told T
    if (not isinstance(image_shape, (tuple, list, torch.Size)) or len(image_shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in image_shape)):
        raise ValueError(f"image_shape must be (C, H, W) with positive ints, got {image_shape}")
    image_shape = tuple(int(s) for s in image_shape)  # NumPy's integers too
    if hasattr(model, "check_image_shape"):  # the U-Net's channels and down-sampling, named as the caller knows them
        model.check_image_shape(image_shape, "image_shape")
    T = schedule.num_timesteps
    if steps is not None:
        check_int("steps", steps, min_value=1, max_value=T)
    if method == "ddpm":
        if steps not in (None, T):
            raise ValueError(f"steps must be None or T={T} for method='ddpm' (use method='ddim' for fewer), got {steps}")
        timesteps = list(range(T - 1, -1, -1))
    else:
        timesteps = ddim_timesteps(T, min(DEFAULT_STEPS[method], T) if steps is None else steps)
    if device is None:  # the model's device; a model without parameters (an oracle, say) runs on the CPU
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    else:
        device = check_available_device("device", device)
        first = next(model.parameters(), None)
        if first is not None and not same_device(first.device, device):
            raise ValueError(f"device={str(device)!r}, but the model's weights are on {first.device}; move the model "
                             f"first (model.to({str(device)!r})), or leave device=None to sample where the model is")
    if y is not None:
        _check_labels(y, model, num_samples)
        y = y.to(device)
    schedule = schedule.to(device)

    was_training = model.training
    model.eval()
    try:
        # the loop feeds the model only tensors it made itself: no value checks (each would stall a GPU)
        with skip_value_checks():
            x = torch.randn((num_samples, *image_shape), generator=generator,
                            device=device if generator is None else generator.device).to(device)
            trajectory = [(T - 1, x.cpu())] if return_trajectory else []
            previous = None  # dpm++2m: (t, x0_hat) of the step before
            iterator = timesteps
            if progress:
                from tqdm.auto import tqdm

                iterator = tqdm(timesteps, desc=f"{method} sampling", leave=False)
            for i, t in enumerate(iterator):
                out = predict(model, x, t, y, guidance_scale).float()
                t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                if method == "ddpm":
                    x, _ = ddpm_step(schedule, out, t, x, prediction=prediction, sigma=sigma, clip_x0=clip_x0,
                                     generator=generator)
                elif method == "ddim":
                    x, _ = ddim_step(schedule, out, t, t_prev, x, eta=eta, prediction=prediction, clip_x0=clip_x0,
                                     generator=generator)
                else:
                    x, x0 = dpm_solver_2m_step(schedule, out, t, t_prev, x, previous=previous, prediction=prediction,
                                               clip_x0=clip_x0)
                    previous = (t, x0)
                if return_trajectory and ((i + 1) % trajectory_every == 0 or i + 1 == len(timesteps)):
                    trajectory.append((t_prev, x.cpu()))
    except RuntimeError as err:  # an out-of-memory error on a GPU; "can't allocate memory" on a CPU
        if not (isinstance(err, _OUT_OF_MEMORY) or "can't allocate memory" in str(err)):
            raise
        raise MemoryError(
            f"num_samples={num_samples:,} images of shape {image_shape} do not fit in the memory of {device} at once "
            f"({str(err).splitlines()[0][:160]}); draw them in batches, e.g. torch.cat([sample(model, schedule, 500, "
            "...) for _ in range(k)]) with one generator, as `python -m ddpm_helpers sample` does") from err
    finally:
        model.train(was_training)
    bad = int((~torch.isfinite(x)).sum())  # one check at the end instead of one per step
    if bad:
        raise FloatingPointError(
            f"sampling produced {bad} NaN or Inf values out of {x.numel()}: the model's output was not finite "
            "(a diverged training run, or a model given inputs it cannot handle); check the model on one batch first"
        )
    if clip_x0:  # images: pixels live in [-1, 1] (the seed showed unclamped outputs); other data is left alone
        x = x.clamp(-1, 1)
    return (x, trajectory) if return_trajectory else x
