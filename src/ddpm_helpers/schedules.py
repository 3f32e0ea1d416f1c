r"""Beta schedules and the closed-form forward process of DDPM (Ho et al. 2020, arXiv 2006.11239).

Timestep convention (used everywhere in this package)
----------------------------------------------------
The paper counts diffusion steps :math:`t = 1, \dots, T`. Code counts **0-based indices**
``t = 0, ..., T-1``: index ``t`` is the paper's step ``t + 1``. So ``betas[0]`` is the paper's
:math:`\beta_1`, ``alpha_bar[t]`` is :math:`\bar\alpha_{t+1}`, the product of ``1 - betas[s]`` for ``s = 0, ..., t``, and
"``x_t``" in code is the image after ``t + 1`` noising steps. Clean data is ``x0`` and has no index.
This is also the convention of ``diffusers`` and of OpenAI's ``improved-diffusion``.

Everything is computed in float64 and stored as float32 tensors (float64 inputs are served from
float64 copies, so a float64 check keeps float64 accuracy). A :class:`NoiseSchedule` moves
with ``.to(device)``; :func:`extract` also moves indices to the schedule's device, so the seed
article's "indices should be either on cpu or on the same device" crash cannot happen.
"""

from __future__ import annotations

import math
import warnings

import torch

from ._validate import (_show, check_available_device, check_choice, check_float, check_generator, check_int,
                        check_num_timesteps, check_tensor, check_timesteps, stacklevel_outside_package)

SCHEDULES = ("linear", "cosine", "sigmoid")
PREDICTION_TYPES = ("eps", "x0", "v")


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020) linear schedule: ``beta`` rises evenly from ``beta_start`` to ``beta_end``."""
    _check_options("linear", num_timesteps, beta_start=beta_start, beta_end=beta_end)
    _warn_if_falling("linear", beta_start, beta_end)
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    r"""Nichol & Dhariwal (2021, eq. 17): :math:`f(u) = \cos^2\big(\frac{u + s}{1 + s}\cdot\frac{\pi}{2}\big)`
    and :math:`\bar\alpha(u) = f(u)/f(0)` on :math:`u = t/T`, and
    :math:`\beta_t = \min(1 - \bar\alpha(\frac{t+1}{T}) / \bar\alpha(\frac{t}{T}), \beta_\text{max})`, with
    ``max_beta`` = 0.999 as in the paper."""
    _check_options("cosine", num_timesteps, s=s, max_beta=max_beta)
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def sigmoid_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """GeoDiff's sigmoid schedule (as in ``diffusers``): ``beta`` follows a sigmoid over [-6, 6]."""
    _check_options("sigmoid", num_timesteps, beta_start=beta_start, beta_end=beta_end)
    _warn_if_falling("sigmoid", beta_start, beta_end)
    x = torch.linspace(-6, 6, num_timesteps, dtype=torch.float64)
    return torch.sigmoid(x) * (beta_end - beta_start) + beta_start


def _warn_if_falling(name: str, beta_start: float, beta_end: float) -> None:
    """Warn when ``beta_start > beta_end``: valid maths, but most often the two arguments swapped by mistake."""
    if beta_start > beta_end:
        warnings.warn(f"the {name} schedule falls: beta_start={beta_start} is larger than beta_end={beta_end}, so "
                      "the first steps add the most noise (DDPM's betas rise, from 1e-4 to 0.02); swap them unless "
                      "you meant it", UserWarning, stacklevel=stacklevel_outside_package())


_OPTIONS = {  # each schedule's options: (lowest, highest, whether the ends themselves are allowed)
    "linear": {"beta_start": (0.0, 1.0, False), "beta_end": (0.0, 1.0, False)},
    "sigmoid": {"beta_start": (0.0, 1.0, False), "beta_end": (0.0, 1.0, False)},
    "cosine": {"s": (0.0, 1.0, True), "max_beta": (0.0, 1.0, False)},
}


def _check_options(name: str, num_timesteps: int, **options: float) -> None:
    """The checks of every beta schedule: ``T`` a positive integer, each option known and inside its range."""
    check_num_timesteps(num_timesteps)
    for key, value in options.items():
        if key not in _OPTIONS[name]:
            raise TypeError(f"schedule {name!r} does not take the option {key!r}; it takes "
                            f"{', '.join(_OPTIONS[name])}")
        lo, hi, ends = _OPTIONS[name][key]
        check_float(key, value, min_value=lo, max_value=hi, min_inclusive=ends, max_inclusive=ends)


def make_betas(name: str, num_timesteps: int, **kwargs: float) -> torch.Tensor:
    """Return the float64 betas of the schedule ``name`` (one of :data:`SCHEDULES`) for ``T`` steps.

    Options: ``beta_start`` and ``beta_end`` (linear, sigmoid), each in (0, 1); ``s`` in [0, 1] and ``max_beta``
    in (0, 1) (cosine)."""
    check_choice("schedule", name, SCHEDULES)
    _check_options(name, num_timesteps, **kwargs)
    fn = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}[name]
    return fn(num_timesteps, **kwargs)


def extract(a: torch.Tensor, t: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Pick ``a[t]`` for each sample and reshape to ``(B, 1, 1, ...)`` so it broadcasts over ``shape``.

    ``t`` may live on any device: it is moved to ``a``'s device for the lookup. The result keeps ``a``'s dtype.
    ``t`` must hold 0-based indices into ``a``: a negative one would silently count from the end (``a[-1]``).
    """
    check_tensor("a", a, ndim=1)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 1:
        raise TypeError(f"shape must be the shape of the tensor to broadcast over, such as x.shape, got {_show(shape)}")
    # a fraction t / T by mistake would otherwise be truncated to index 0; a uint8 or bool index read as a mask
    return _lookup(a, check_timesteps("t", t, a.shape[0]), len(shape))


def _lookup(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """``a[t]`` shaped ``(B, 1, ...)`` with ``ndim`` dimensions, for indices ``t`` already checked (no GPU sync)."""
    t = t.reshape(-1).to(a.device, torch.long)
    return a[t].reshape(t.shape[0], *([1] * (ndim - 1)))


def noise_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn on ``generator``'s device.

    A generator lives on one device, and ``torch.randn`` refuses a CPU generator for a CUDA tensor: so draw
    where the generator is, then move. (A CPU generator also gives the same noise on every machine.)
    """
    check_tensor("x", x, floating=True)  # torch's "normal_kernel_cpu not implemented for 'Long'" names nothing
    check_generator("generator", generator)
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def check_model_fits_schedule(model: object, schedule: "NoiseSchedule") -> None:
    """Raise if ``model`` was built for another number of timesteps (``model.num_timesteps``, e.g. SimpleUNet's,
    which divides t by it) than ``schedule`` has: it would train or sample on a wrong time scale without a word."""
    model_T = getattr(model, "num_timesteps", None)
    if isinstance(model_T, int) and model_T != schedule.num_timesteps:
        raise ValueError(f"the model was built for T={model_T} timesteps (model.num_timesteps) but the schedule "
                         f"has T={schedule.num_timesteps}; use the schedule the model is trained with, or build the "
                         f"model with num_timesteps={schedule.num_timesteps}")


def check_model_callable(model: object) -> None:
    """Raise naming ``model`` unless it can be called like a network (Python's own error names no argument)."""
    if not callable(model) or isinstance(model, type):  # a class is callable, but calling it builds a network
        what = f"the class {model.__name__} (build one first, e.g. UNet(UNetConfig()))" if isinstance(model, type) \
            else _show(model)
        raise TypeError(f"model must be a network that maps (x_t, t) to its prediction, such as a UNet, got {what}")


def check_model_output(output: object, shape: torch.Size, prediction: str | None = None) -> torch.Tensor:
    """``output`` if the network returned a tensor of the input's ``shape``, else raise naming ``model`` (a tuple,
    or a (B, C) output, would fail later with an error about something else)."""
    if not isinstance(output, torch.Tensor) or output.shape != shape:
        got = f"shape {tuple(output.shape)}" if isinstance(output, torch.Tensor) else _show(output)
        what = f"of {prediction} " if prediction else ""
        raise ValueError(f"model must return a tensor of the input's shape {tuple(shape)} (its prediction {what}for "
                         f"every pixel), got {got}")
    return output


def check_schedule(name: str, value: object) -> "NoiseSchedule":
    """``value`` if it is a :class:`NoiseSchedule`, else raise naming ``name`` and how to make one."""
    if not isinstance(value, NoiseSchedule):
        raise TypeError(f"{name} must be a NoiseSchedule, such as NoiseSchedule.from_name('linear', 1000), "
                        f"got {_show(value)}")
    return value


class NoiseSchedule:
    r"""Every per-step constant of DDPM, computed once in float64 from ``betas``.

    Attributes (all float32 tensors of shape ``(T,)``, indexed by 0-based ``t``; the subscripts below are that
    code index, so :math:`\bar\alpha_t` here is the paper's :math:`\bar\alpha_{t+1}`, as the module docstring says):
        betas, alphas (:math:`1-\beta_t`), alpha_bar (:math:`\bar\alpha_t`), alpha_bar_prev
        (:math:`\bar\alpha_{t-1}`, with 1 at ``t = 0``), sqrt_alpha_bar, sqrt_one_minus_alpha_bar,
        posterior_mean_coef_x0, posterior_mean_coef_xt and posterior_variance (eq. 7), snr
        (:math:`\bar\alpha_t / (1-\bar\alpha_t)`) and log_snr.
    """

    _FIELDS = (
        "betas", "alphas", "alpha_bar", "alpha_bar_prev", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar",
        "posterior_mean_coef_x0", "posterior_mean_coef_xt", "posterior_variance", "snr", "log_snr",
    )

    def __init__(self, betas: torch.Tensor, name: str = "custom"):
        check_tensor("betas", betas, ndim=1, floating=True, finite=True)
        if betas.numel() < 1:
            raise ValueError("betas must hold at least one value (T >= 1), got an empty tensor")
        check_num_timesteps(betas.numel(), "len(betas)")  # the same T as every named schedule allows
        if betas.is_meta:  # a shape without values: the tables below are computed from the values
            raise ValueError("betas is on the meta device (a shape without values); a schedule's tables are "
                             "computed from its betas: give real values, e.g. make_betas('linear', T)")
        if bool((betas <= 0).any()) or bool((betas >= 1).any()):
            raise ValueError(
                f"betas must lie strictly inside (0, 1); got values in [{float(betas.min())}, {float(betas.max())}]"
            )
        b = betas.detach().to("cpu", torch.float64)
        alphas = 1 - b
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        values = {
            "betas": b,
            "alphas": alphas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            # Ho et al. eq. 7: mu~_t = coef_x0 * x0 + coef_xt * x_t,  beta~_t = posterior_variance
            "posterior_mean_coef_x0": b * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            "posterior_mean_coef_xt": (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
            "posterior_variance": b * (1 - alpha_bar_prev) / (1 - alpha_bar),
            "snr": alpha_bar / (1 - alpha_bar),
            "log_snr": alpha_bar.log() - (1 - alpha_bar).log(),
        }
        for key in self._FIELDS:
            setattr(self, key, values[key].float())
        self._float64 = values  # CPU float64 copies, for per-step scalars in the samplers
        self.name = name

    @classmethod
    def from_name(cls, name: str = "linear", num_timesteps: int = 1000, **kwargs: float) -> "NoiseSchedule":
        """Build a schedule by name: ``NoiseSchedule.from_name("cosine", 1000)``."""
        return cls(make_betas(name, num_timesteps, **kwargs), name=name)

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """Return a copy whose tensors live on ``device`` (the schedule itself is unchanged)."""
        device = check_available_device("device", device)
        new = object.__new__(NoiseSchedule)
        for key in self._FIELDS:
            setattr(new, key, getattr(self, key).to(device))
        new._float64 = self._float64
        new.name = self.name
        return new

    def scalar(self, name: str, t: int) -> float:
        """``name[t]`` as a Python float computed in float64 on the CPU (no device sync), e.g.
        ``schedule.scalar("alpha_bar", 10)``. Index ``-1`` of ``alpha_bar`` is 1 (clean data)."""
        if not isinstance(name, str) or name not in self._float64:
            raise ValueError(f"name must be one of {', '.join(self._FIELDS)}; got {name!r}")
        # no negative indices from the end: alpha_bar[-1] meaning "the last entry" is the pitfall of notebook 01
        t = check_int("t", t, min_value=-1 if name == "alpha_bar" else 0, max_value=self.num_timesteps - 1)
        if name == "alpha_bar" and t == -1:
            return 1.0
        return float(self._float64[name][t])

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, T={self.num_timesteps}, device={self.device})"

    # ---- the forward process ------------------------------------------------------------
    def _check(self, x: torch.Tensor, t: torch.Tensor, x_name: str = "x0") -> torch.Tensor:
        check_tensor(x_name, x, ndim=(2, 3, 4, 5), floating=True, finite=True)
        t = check_timesteps("t", t, self.num_timesteps, batch=x.shape[0])
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    @staticmethod
    def _check_like(name: str, value: torch.Tensor, like_name: str, like: torch.Tensor) -> None:
        check_tensor(name, value, floating=True, finite=True)  # a diverged network's NaN output, named at once
        if value.shape != like.shape:
            raise ValueError(f"{name} must have the shape of {like_name} {tuple(like.shape)}, got {tuple(value.shape)}")

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``name[t]`` shaped to broadcast over ``x``, in ``x``'s dtype and on its device; float64 inputs are
        served from the float64 tables (the float32 ones would limit them to float32 accuracy)."""
        table = self._float64[name] if x.dtype == torch.float64 else getattr(self, name)
        return _lookup(table, t, x.ndim).to(x)  # t was checked by the caller (_check): not again, each a GPU sync

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Sample :math:`x_t \sim q(x_t|x_0)` in one shot (eq. 4):
        :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon`.

        Args: ``x0`` (B, C, H, W) clean images; ``t`` (B,) long indices in [0, T-1];
        ``noise`` optional, same shape as ``x0`` (drawn from ``generator`` otherwise).
        """
        t = self._check(x0, t)
        if noise is None:
            noise = noise_like(x0, generator)
        else:
            self._check_like("noise", noise, "x0", x0)
            if noise.device != x0.device:
                raise ValueError(f"noise must be on x0's device ({x0.device}), got {noise.device}; move it with "
                                 f"noise.to(x0.device)")
            if torch.promote_types(x0.dtype, noise.dtype) != x0.dtype:
                raise TypeError(f"noise is {noise.dtype} but x0 is {x0.dtype}, so x_t would be {noise.dtype}; "
                                f"make the noise with x0's dtype (torch.randn_like(x0), or noise.to(x0.dtype))")
        return self._coef("sqrt_alpha_bar", t, x0) * x0 + self._coef("sqrt_one_minus_alpha_bar", t, x0) * noise

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Mean and variance of :math:`q(x_{t-1} | x_t, x_0)` (eq. 6-7); the variance is :math:`\tilde\beta_t`."""
        t = self._check(x_t, t, "x_t")
        self._check_like("x0", x0, "x_t", x_t)
        mean = self._coef("posterior_mean_coef_x0", t, x_t) * x0 + self._coef("posterior_mean_coef_xt", t, x_t) * x_t
        return mean, self._coef("posterior_variance", t, x_t)

    # ---- conversions between what a network may predict ----------------------------------
    def _coefs(self, x: torch.Tensor, t: torch.Tensor, x_name: str = "x_t") -> tuple[torch.Tensor, torch.Tensor]:
        t = self._check(x, t, x_name)
        return self._coef("sqrt_alpha_bar", t, x), self._coef("sqrt_one_minus_alpha_bar", t, x)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon) / \sqrt{\bar\alpha_t}` (eq. 15)."""
        a, s = self._coefs(x_t, t)
        self._check_like("eps", eps, "x_t", x_t)
        return (x_t - s * eps) / a

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat\epsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0) / \sqrt{1-\bar\alpha_t}`."""
        a, s = self._coefs(x_t, t)
        self._check_like("x0", x0, "x_t", x_t)
        return (x_t - a * x0) / s

    def velocity(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        r"""The v-target of Salimans & Ho (2022): :math:`v = \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0`."""
        a, s = self._coefs(x0, t, "x0")
        self._check_like("eps", eps, "x0", x0)
        return a * eps - s * x0

    def to_x0_and_eps(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str = "eps"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network's output (``prediction`` in ``"eps"``, ``"x0"``, ``"v"``) into (x0_hat, eps_hat)."""
        check_choice("prediction", prediction, PREDICTION_TYPES)
        a, s = self._coefs(x_t, t)
        self._check_like("model_output", model_output, "x_t", x_t)
        if prediction == "eps":
            return (x_t - s * model_output) / a, model_output
        if prediction == "x0":
            return model_output, (x_t - a * model_output) / s
        # v: x0 = a x_t - s v,  eps = s x_t + a v   (a^2 + s^2 = 1)
        return a * x_t - s * model_output, s * x_t + a * model_output

    def target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, prediction: str = "eps") -> torch.Tensor:
        """The regression target for ``prediction``: the noise, the clean image or the velocity."""
        check_choice("prediction", prediction, PREDICTION_TYPES)
        if prediction == "v":
            return self.velocity(x0, t, eps)  # checks its arguments
        self._check(x0, t)
        self._check_like("eps", eps, "x0", x0)
        return eps if prediction == "eps" else x0

    def steps_until_noise(self, threshold: float = 0.05) -> int:
        r"""First 0-based index at which :math:`\sqrt{\bar\alpha_t}` (the signal's weight) drops below ``threshold``;
        ``T`` if it never does (the schedule leaves signal behind: a problem for sampling)."""
        check_float("threshold", threshold, min_value=0.0, max_value=1.0, min_inclusive=False)
        below = (self.sqrt_alpha_bar < threshold).nonzero()
        return int(below[0]) if below.numel() else self.num_timesteps
