"""Argument checks shared by every public function.

Each check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, bad value)
with a message that names the parameter, repeats the value received and says what is accepted,
so that a learner sees at once what to change. Nothing is clamped silently.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch


_skip_depth = 0  # > 0 inside skip_value_checks()


@contextlib.contextmanager
def skip_value_checks():
    """Inside this block, checks that must *read* tensor values (NaN/Inf, timestep ranges) are skipped.

    Reading a value of a GPU tensor makes the CPU wait until the GPU has finished all queued work, so
    such checks on every call of a training or sampling loop stall the GPU. The package's own loops
    (``Trainer.train_step``, ``sampling.sample``) use this block for tensors they made themselves and
    checked once; shape, dtype and argument checks stay on. Outside the block, and for your own calls,
    every check runs. Value checks are also skipped while ``torch.compile`` traces a function and
    while a CUDA graph is being captured (neither may read tensor values).
    """
    global _skip_depth
    _skip_depth += 1
    try:
        yield
    finally:
        _skip_depth -= 1


def _read_values(value: torch.Tensor) -> bool:
    """Whether a check may read the values of ``value`` (see :func:`skip_value_checks`)."""
    if _skip_depth or value.is_meta or torch.compiler.is_compiling():  # a meta tensor has a shape but no values
        return False
    return not (value.is_cuda and torch.cuda.is_current_stream_capturing())


def labels_outside(y: torch.Tensor, num_classes: int) -> tuple[int, int] | None:
    """``(min, max)`` of the class labels ``y`` when one lies outside ``[0, num_classes]`` (``num_classes``: the null
    class), else None; None too where values may not be read (:func:`skip_value_checks`). Each caller words the error
    for its own parameter."""
    if not y.numel() or not _read_values(y):
        return None
    low, high = int(y.min()), int(y.max())
    return (low, high) if low < 0 or high > num_classes else None


def stacklevel_outside_package() -> int:
    """The ``stacklevel`` that makes a warning, issued by the function calling this one, point at the first line
    outside ddpm_helpers: the learner's call, however many of the package's functions lie in between."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_int(name: str, value: Any, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the accepted range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) and not (
        isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point()
        and not value.is_complex() and value.dtype != torch.bool
    ):
        raise TypeError(f"{name} must be an integer, got {_show(value)}")
    value = int(value)
    lo = "-inf" if min_value is None else str(min_value)
    hi = "inf" if max_value is None else str(max_value)
    if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value}")
    return value


MAX_CHANNELS = 65_536  # the course's widest layer has 256; 65,536 is far past any GPU's memory for a U-Net layer


def check_width(name: str, value: Any) -> int:
    """A layer's number of channels or features: an int in [1, MAX_CHANNELS] (10**12 would otherwise fail only
    inside torch's allocator, naming bytes, not the parameter)."""
    value = check_int(name, value, min_value=1)
    if value > MAX_CHANNELS:
        raise ValueError(f"{name} must be an integer in [1, {MAX_CHANNELS:,}] (a layer this wide would not fit in "
                         f"memory; the course's widest has 256 channels), got {value:,}")
    return value


MAX_TIMESTEPS = 100_000  # DDPM uses 1,000 and Improved DDPM 4,000; beyond this a schedule only costs memory and time


def check_num_timesteps(value: Any, name: str = "num_timesteps") -> int:
    """Return the number of timesteps ``T`` as an int, or raise naming ``name``: an integer in [1, MAX_TIMESTEPS]."""
    value = check_int(name, value, min_value=1)
    if value > MAX_TIMESTEPS:
        raise ValueError(f"{name} must be at most {MAX_TIMESTEPS:,} (DDPM uses 1,000 and Improved DDPM 4,000; each "
                         f"schedule table holds T numbers, and sampling takes up to T network calls), got {value:,}")
    return value


def check_plain(name: str, value: object, top: bool = False) -> None:
    """Raise unless ``value`` is built from str, int, float, bool and None in lists, tuples and dicts with str keys:
    what ``config.json`` can hold and ``torch.load(weights_only=True)`` can read back from a checkpoint."""
    if top and not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of plain values (str, int, float, bool, None, and lists, tuples and "
                        f"dicts of them), got {type(value).__name__}")
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"{name} must have str keys, got the key {key!r} of type {type(key).__name__}")
            check_plain(f"{name}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(f"{name}[{i}]", item)
    elif value is not None and type(value) not in (str, int, float, bool):
        raise TypeError(f"{name} must be a plain value (str, int, float, bool or None; checkpoints and config.json "
                        f"store only these), got {type(value).__name__} {value!r}; convert it, e.g. str(path), "
                        "int(n), float(x)")


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is True or False, else raise naming ``name`` (a string "false" is truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_show(value)}")
    return value


def as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of ints: a list or tuple of ints, or one int (``attention_levels=1`` means ``(1,)``);
    NumPy's integers count as ints, and come back as plain ones."""
    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if is_int(value):
        return (int(value),)
    if isinstance(value, (list, tuple)) and all(is_int(v) for v in value):
        return tuple(int(v) for v in value)
    raise TypeError(f"{name} must be a tuple of integers (or one integer), such as (1, 2), got {_show(value)}")


def check_float(
    name: str,
    value: Any,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as a finite float in the given interval, or raise naming ``name``."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()  # a one-number tensor, e.g. torch.tensor(0.5)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numbers.Real: NumPy's scalars too
        raise TypeError(f"{name} must be a real number, got {_show(value)}")
    value = float(value)
    lo_b = "[" if min_inclusive and min_value is not None else "("  # an infinite end is never included
    hi_b = "]" if max_inclusive and max_value is not None else ")"
    interval = f"{lo_b}{'-inf' if min_value is None else min_value}, {'inf' if max_value is None else max_value}{hi_b}"
    bad = not math.isfinite(value)
    if min_value is not None:
        bad |= value < min_value if min_inclusive else value <= min_value
    if max_value is not None:
        bad |= value > max_value if max_inclusive else value >= max_value
    if bad:
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {_show(value)}")
    return value


def check_tensor(
    name: str,
    value: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool | None = None,
    finite: bool = False,
) -> torch.Tensor:
    """Check that ``value`` is a tensor with the given number of dimensions and kind of dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    if floating is False and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise TypeError(f"{name} must have an integer dtype (e.g. torch.long), got {value.dtype}")
    if finite and value.is_floating_point() and _read_values(value) and not bool(torch.isfinite(value).all()):
        n_bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or Inf values; inputs must be finite")
    return value


def check_device(name: str, value: Any) -> torch.device:
    """``value`` as a torch.device, or raise naming ``name`` and examples of what torch accepts."""
    if isinstance(value, torch.device):
        return value
    if isinstance(value, str):
        try:
            return torch.device(value)
        except RuntimeError:
            pass
    raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got {_show(value)}")


def device_available(device: torch.device) -> bool:
    """Whether tensors can be placed on ``device`` here: CUDA with that index, MPS built in and present, the CPU;
    another kind when its torch backend says so."""
    if device.type in ("cpu", "meta"):
        return True
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index is None or device.index < torch.cuda.device_count())
    if device.type == "mps":
        return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    backend = getattr(torch, device.type, None)
    return bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` name one device: ``"cuda"`` is the current card, so it equals ``"cuda:0"`` there,
    while ``torch.device("cuda") == torch.device("cuda:0")`` is False."""
    if a.type != b.type:
        return False
    if a.type != "cuda" or a.index == b.index:
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def check_available_device(name: str, value: Any) -> torch.device:
    """:func:`check_device`, and the device must exist here: torch's own error for an absent one ("Found no NVIDIA
    driver on your system") names no argument."""
    device = check_device(name, value)
    if not device_available(device):
        raise ValueError(f"{name}={str(value)!r} is not available on this machine; use 'cpu'"
                         + (" (or select_device('auto'), which takes the best device there is)"
                            if device.type in ("cuda", "mps") else ""))
    return device


def check_module(name: str, value: Any) -> Any:
    """``value`` if it is a ``torch.nn.Module``, else raise naming ``name``."""
    if not isinstance(value, torch.nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module (a network, such as a UNet), got {_show(value)}")
    return value


def check_path(name: str, value: Any, what: str = "a file", *, optional: bool = False) -> Path | None:
    """``value`` as a ``pathlib.Path`` if it is a str or path-like (None too when ``optional``), else raise naming
    ``name``: pathlib's own error ("expected str, bytes or os.PathLike object, not int") names no argument."""
    if optional and value is None:
        return None
    if isinstance(value, str) and not value.strip():  # Path("") is the current folder: an unset variable, likely
        raise ValueError(f"{name} must be {what}, got an empty or blank string {value!r} (for the current folder, "
                         "pass '.')")
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    accepted = ("None or " if optional else "") + f"{what} (a str or a pathlib.Path)"
    raise TypeError(f"{name} must be {accepted}, got {_show(value)}")


def check_generator(name: str, value: Any) -> torch.Generator | None:
    """``value`` if it is None or a ``torch.Generator``, else raise naming ``name`` (a seed is not a generator)."""
    if value is None or isinstance(value, torch.Generator):
        return value
    hint = f"; for the seed {value}, pass torch.Generator().manual_seed({value})" if isinstance(value, int) else ""
    raise TypeError(f"{name} must be a torch.Generator or None, got {_show(value)}{hint}")


def check_input_like_weights(name: str, x: torch.Tensor, module: Any) -> None:
    """Raise if ``x`` is on another device than ``module``'s weights, or float64 while they are not, or (outside
    autocast) of any other dtype than the weights: torch's own errors ("Input type (torch.cuda.FloatTensor) and weight
    type (torch.FloatTensor) should be the same", "mat1 and mat2 must have the same dtype") do not say which argument
    to fix, or how."""
    weight = next(module.parameters(), None)
    if weight is None:
        return
    if not same_device(x.device, weight.device):
        raise ValueError(f"{name} is on {x.device}, but the model's weights are on {weight.device}; move one of them: "
                         f"{name}.to({str(weight.device)!r}) or model.to({str(x.device)!r})")
    if x.dtype == weight.dtype:
        return
    if x.dtype == torch.float64:
        raise TypeError(f"{name} is float64 (double), but the model's weights are {weight.dtype}; convert the input "
                        f"with {name}.float() (tensors made from NumPy arrays are float64)")
    if not _autocast_enabled(x.device.type):  # under autocast, mixed dtypes are the point
        raise TypeError(f"{name} is {x.dtype}, but the model's weights are {weight.dtype}; give both one dtype "
                        f"({name}.to({weight.dtype}), or model.to({x.dtype})), or run the model under torch.autocast")


def _autocast_enabled(device_type: str) -> bool:
    """torch.is_autocast_enabled(device_type), which torch 2.3 lacks (it had one function per device type)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def check_pixel_range(name: str, images: torch.Tensor, only_unsigned: bool = False) -> torch.Tensor:
    """Raise if ``images`` leave [-1, 1] (the scale of the noise) by more than rounding; warn if they look like
    images in [0, 1] (no value below 0, which real digits in [-1, 1] always have: the background is -1).

    ``only_unsigned``: check only images with no value below 0 and some above it (bytes 0..255, or [0, 1]); signed
    values, such as a test's Gaussian stand-in for images, pass."""
    if images.numel() == 0 or not _read_values(images):
        return images
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if only_unsigned and not (lo >= 0 and hi > 0):
        return images
    if lo < -1.001 or hi > 1.001:
        raise ValueError(f"{name} must hold pixels in [-1, 1], the scale of the noise, got values from {lo:.4g} to "
                         f"{hi:.4g}; from [0, 1] use x * 2 - 1, from bytes 0..255 use x / 127.5 - 1")
    if lo >= 0:
        warnings.warn(f"{name} has no value below 0 (range {lo:.3g} to {hi:.3g}): images in [0, 1]? The course "
                      "works in [-1, 1], where the background is -1; use x * 2 - 1", stacklevel=3)
    return images


def refuse_byte_pixels(name: str, images: torch.Tensor) -> None:
    """Raise if ``images`` look like bytes 0..255 (no value below 0, some above 2): drawn or converted as the course's
    [-1, 1], they would come out white without a word. Samples a little outside [-1, 1] pass, and so do images in
    [0, 1], which cannot be told from bright digits in [-1, 1]."""
    if images.numel() == 0 or not _read_values(images):
        return
    lo, hi = (float(v) for v in torch.aminmax(images.detach()))
    if lo >= 0 and hi > 2:
        raise ValueError(f"{name} must hold pixels in [-1, 1], got values from {lo:.4g} to {hi:.4g}, which look like "
                         "bytes 0..255: use x / 127.5 - 1")


def check_timesteps(name: str, t: Any, num_timesteps: int, batch: int | None = None) -> torch.Tensor:
    """Check a batch of 0-based timestep indices, integers in [0, num_timesteps - 1], and return them as a
    ``(B,)`` long tensor (an index tensor of another integer dtype, uint8 in particular, would not index a
    table as expected: PyTorch reads a uint8 or bool index as a mask)."""
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        t = torch.tensor([int(t)])
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an integer or a torch.Tensor of integer timestep indices (shape (B,)), "
                        f"got {_show(t)}")
    check_tensor(name, t, ndim=(0, 1), floating=False)
    t = t.reshape(-1).long()
    if t.numel() and _read_values(t) and (int(t.min()) < 0 or int(t.max()) >= num_timesteps):
        raise ValueError(
            f"{name} must hold 0-based timestep indices in [0, {num_timesteps - 1}] "
            f"(T = {num_timesteps}); got values in [{int(t.min())}, {int(t.max())}]"
        )
    if batch is not None and t.numel() not in (1, batch):
        raise ValueError(f"{name} must have 1 or {batch} entries (one per image), got {t.numel()}")
    return t
