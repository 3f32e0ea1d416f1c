r"""The DDPM training objective (Ho et al. 2020, Algorithm 1 and eq. 14), for three targets.

Draw a 0-based timestep ``t ~ U{0, ..., T-1}`` and noise ``eps ~ N(0, I)``, build
:math:`x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`, and regress the network's
output on the target by mean squared error. The target is the noise ``eps`` (the paper's "simple"
loss), the clean image ``x0``, or the velocity ``v`` (Salimans & Ho 2022). Optional min-SNR-gamma
weighting (Hang et al. 2023) caps the weight of the easy, low-noise steps.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import (check_choice, check_float, check_generator, check_input_like_weights, check_int,
                        check_pixel_range, check_tensor, check_timesteps, labels_outside)
from .schedules import (PREDICTION_TYPES, NoiseSchedule, check_model_callable, check_model_fits_schedule,
                        check_model_output, check_schedule, noise_like)


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    r"""Per-sample loss weight :math:`\min(\mathrm{SNR}_t, \gamma)` expressed for the chosen target:
    divided by SNR for eps, by SNR + 1 for v, unchanged for x0. Shape (B,)."""
    check_float("gamma", gamma, min_value=0.0, min_inclusive=False)
    check_choice("prediction", prediction, PREDICTION_TYPES)
    t = check_timesteps("t", t, check_schedule("schedule", schedule).num_timesteps)
    snr = schedule.snr[t.to(schedule.device)]
    clipped = snr.clamp(max=gamma)
    if prediction == "eps":  # min(SNR, gamma) / SNR, written so that an SNR that underflowed to 0 gives 1, not 0 / 0
        return (gamma / snr).clamp(max=1.0)
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped


def drop_labels(y: torch.Tensor, num_classes: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of ``y`` with each label replaced by the null class ``num_classes`` with probability ``p`` (for
    classifier-free guidance); ``y`` itself is left unchanged.

    ``y`` holds labels in ``[0, num_classes]`` (``num_classes`` itself: already the null class); others are refused,
    as ``nn.Embedding`` would refuse them later without naming ``y``.
    """
    check_tensor("y", y, floating=False)
    check_int("num_classes", num_classes, min_value=1)
    outside = labels_outside(y, num_classes)
    if outside:
        raise ValueError(f"y must hold labels in [0, {num_classes}] ({num_classes}: the null class), got values in "
                         f"[{outside[0]}, {outside[1]}]")
    check_float("p", p, min_value=0.0, max_value=1.0)
    check_generator("generator", generator)
    if p == 0:
        return y.clone()  # a copy whatever p is (notebook 07's exercise asks for one)
    drop = torch.rand(y.shape, generator=generator, device=y.device if generator is None else generator.device)
    return torch.where(drop.to(y.device) < p, torch.full_like(y, num_classes), y)


def diffusion_loss(
    model: nn.Module,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    prediction: str = "eps",
    min_snr_gamma: float | None = None,
    label_drop_prob: float = 0.0,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Scalar training loss on a batch ``x0`` (B, C, H, W) in [-1, 1].

    ``t`` and ``noise`` are drawn when not given (from ``generator``, else torch's global RNG).
    ``y`` (B,) are class labels for a conditional model; each is replaced by the null class with
    probability ``label_drop_prob`` so that the same network also learns the unconditional model.
    """
    check_choice("prediction", prediction, PREDICTION_TYPES)
    check_float("label_drop_prob", label_drop_prob, min_value=0.0, max_value=1.0)
    if y is None and label_drop_prob > 0:
        raise ValueError(f"label_drop_prob={label_drop_prob} drops class labels, but no labels were given (y=None); "
                         "pass y, the batch's labels, or leave label_drop_prob at 0 for an unconditional model")
    if min_snr_gamma is not None:
        check_float("min_snr_gamma", min_snr_gamma, min_value=0.0, min_inclusive=False)
    check_model_callable(model)
    check_tensor("x0", x0, ndim=4, floating=True, finite=True)
    if x0.shape[0] == 0:  # the mean of no losses is NaN
        raise ValueError(f"x0 must hold at least one image, got shape {tuple(x0.shape)}")
    if isinstance(model, nn.Module):  # named here as x0: the network would see (and name) only x_t
        check_input_like_weights("x0", x0, model)
        network = getattr(model, "module", model)  # .module: a DDP wrapper
        if hasattr(network, "check_image_shape"):  # channels and size, as the caller knows them
            network.check_image_shape(tuple(x0.shape), "x0")
    # images (not notebook 02's points, shaped (N, 2, 1, 1)) with no value below 0: bytes 0..255 or [0, 1], not the
    # course's [-1, 1], which would train a network for the wrong scale without a word
    if x0.shape[2] * x0.shape[3] > 1:
        check_pixel_range("x0", x0, only_unsigned=True)
    check_schedule("schedule", schedule)
    check_model_fits_schedule(getattr(model, "module", model), schedule)
    check_generator("generator", generator)
    batch, T = x0.shape[0], schedule.num_timesteps
    gen_device = x0.device if generator is None else generator.device
    if t is None:
        t = torch.randint(0, T, (batch,), generator=generator, device=gen_device).to(x0.device)
    else:
        t = check_timesteps("t", t, T, batch=batch).expand(batch).to(x0.device)  # the model gets t on x0's device
    if noise is None:
        noise = noise_like(x0, generator)
    if y is not None:
        num_classes = getattr(getattr(model, "module", model), "num_classes", None)  # .module: a DDP wrapper
        if num_classes is None:
            raise ValueError("y (class labels) was given, but the model has no num_classes (it is unconditional)")
        y = drop_labels(y, num_classes, label_drop_prob, generator)
    x_t = schedule.q_sample(x0, t, noise)
    output = check_model_output(model(x_t, t, y) if y is not None else model(x_t, t), x0.shape, prediction)
    target = schedule.target(x0, t, noise, prediction)
    per_sample = (output.float() - target.float()).pow(2).mean(dim=tuple(range(1, x0.ndim)))
    if min_snr_gamma is not None:
        per_sample = per_sample * min_snr_weight(schedule, t, min_snr_gamma, prediction).to(per_sample)
    return per_sample.mean()

