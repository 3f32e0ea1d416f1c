"""Training: AdamW, EMA, bf16 autocast on CUDA, gradient clipping, checkpoints and exact resume.

Use it from a notebook::

    cfg = TrainConfig(steps=2000, batch_size=128)
    trainer = Trainer(cfg, images, labels, out_dir="runs/mnist")   # resumes if out_dir has a checkpoint
    trainer.fit()                                                    # Ctrl-C saves a checkpoint first
    samples = sample(trainer.ema_model, trainer.schedule, 16)

The whole data set stays on the device and batches are drawn by index (no DataLoader), with a
dedicated CPU generator, so a run resumed from a checkpoint on CPU repeats the uninterrupted run's
losses exactly: the checkpoint holds the model, the EMA, the optimizer, the learning-rate schedule,
the step, every RNG state and the loss history.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import numbers
import os
import random
import signal
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, distributed
from ._validate import (
    _show,
    as_int_tuple,
    check_bool,
    check_choice,
    check_available_device,
    check_device,
    check_module,
    check_plain,
    check_float,
    check_int,
    check_num_timesteps,
    check_path,
    check_pixel_range,
    check_tensor,
    device_available,
    skip_value_checks,
)
from .checkpoint import (
    CheckpointError,
    check_same_config,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from .losses import diffusion_loss, drop_labels
from .schedules import PREDICTION_TYPES, SCHEDULES, NoiseSchedule
from .unet import UNet, UNetConfig

DEVICES = ("auto", "cuda", "mps", "cpu")
# Settings that may change between a run and its resumption: bookkeeping, which leaves the maths alone, and
# ``steps``, which does not: the resumed run re-fits the cosine learning rate (TrainConfig.lr_at) to the new length.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "keep_last", "log_every", "on_nan", "progress", "memory_format")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a CPU ``torch.Generator`` seeded the same."""
    check_int("seed", seed, min_value=0, max_value=2**63 - 1)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def dropout_seed(seed: int, step: int, rank: int) -> int:
    """The seed of rank ``rank``'s dropout masks at ``step`` of a data-parallel run (see :meth:`Trainer.train_step`).

    A function of these three numbers only, so every rank draws masks of its own, and a resumed run draws the
    masks of the run that was never stopped. Mixed by NumPy's ``SeedSequence``; always below 2**63.
    """
    check_int("seed", seed, min_value=0)
    check_int("step", step, min_value=0)
    check_int("rank", rank, min_value=0)
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1


def model_has_dropout(model: nn.Module) -> bool:
    """Whether ``model`` holds a dropout layer (any ``nn.Dropout`` kind) with a probability above 0."""
    check_module("model", model)
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def select_device(preference: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple's MPS, then the CPU; a named device (``"cuda"``, ``"cuda:1"``, a
    ``torch.device``) must be available."""
    has = {name: device_available(torch.device(name)) for name in ("cuda", "mps", "cpu")}
    if isinstance(preference, torch.device) or isinstance(preference, str) and ":" in preference:
        device = check_device("device", preference)
        if device.type not in has:
            raise ValueError(f"device must be a CUDA, MPS or CPU device, got {str(device)!r}")
        if not device_available(device):
            raise ValueError(f"device {str(device)!r} was requested but is not available here; use 'auto' or 'cpu'")
        return device
    check_choice("device", preference, DEVICES)
    if preference == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if has[d]))
    if not has[preference]:
        raise ValueError(f"device {preference!r} was requested but is not available here; use 'auto' or 'cpu'")
    return torch.device(preference)


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether ``amp="auto"`` trains in bf16 on ``device``: CUDA cards of compute capability 8.0 or newer.

    Older cards (Volta, Turing: Colab's free T4 is 7.5) have no bf16 arithmetic; PyTorch emulates it there,
    which is slower than plain fp32, so ``"auto"`` keeps fp32 on them (and on CPUs and Apple's MPS).
    """
    device = check_device("device", device)
    if device.type != "cuda":
        return False
    check_available_device("device", device)
    return torch.cuda.get_device_capability(device) >= (8, 0)


MEMORY_FORMATS = ("auto", "channels_last", "contiguous")


def uses_channels_last(memory_format: str, device: torch.device | str, bf16: bool = False) -> bool:
    """Whether the Trainer stores its network's 4-D weights (and so its activations) channels-last (NHWC); the
    model loaders (:meth:`Trainer.load_model`, :func:`~ddpm_helpers.pretrained.load_pretrained`) follow the same rule.

    ``"auto"`` does so on a CPU only. There oneDNN's convolutions are faster in NHWC: the Trainer ran the ``cpu``
    preset at 373 images/s against 271 in the contiguous layout, 1.37 times faster (median of 8 interleaved rounds
    of ``benchmarks/levers.py``; Intel Xeon with AVX-512, 2 cores, 2026-12-04), and a whole run of the preset's 2,300
    steps trained in 437 s, against 730 s for a run in the contiguous layout earlier that day (two single runs on a
    shared machine whose speed varied by up to 1.4 times: ``benchmarks/RESULTS.md``). On a GPU it was slower: 65
    against 56 ms for the ``gpu`` preset's forward and backward in bf16 (one H200, 2026-11-28,
    ``benchmarks/results/gpu-probe-20261128.json``), so ``"auto"`` keeps the default layout there. The layout
    changes where numbers sit in memory, not what is computed: the losses agree up to float rounding.

    ``bf16``: whether the network runs under bf16 autocast (a Trainer with ``amp="bf16"``). ``"auto"`` keeps the
    contiguous layout then, on a CPU too: there bf16 ran faster contiguous and slower channels-last. The ``cpu``
    preset's Trainer step made 585 images/s in bf16 contiguous, 481 in fp32 channels-last and 322 in bf16
    channels-last (medians of 5 interleaved rounds of ``benchmarks/levers.py``; a 2-core Intel Xeon with AVX-512
    and AMX, 2026-12-06), and whole runs of the preset from the command line trained in 253 s, 311 s and 452 s.
    """
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    device = check_device("device", device)
    if not isinstance(bf16, bool):
        raise TypeError(f"bf16 must be True or False, got {type(bf16).__name__}")
    if memory_format == "auto":
        return device.type == "cpu" and not bf16
    return memory_format == "channels_last"


def apply_memory_format(model: nn.Module, memory_format: str, device: torch.device | str,
                        bf16: bool = False) -> nn.Module:
    """Store ``model``'s 4-D weights in the layout ``memory_format`` chooses on ``device`` (in place); returns it.

    The rule is :func:`uses_channels_last`'s (``bf16``: the model runs under bf16 autocast). Sampling gains too: on a
    CPU the forward pass of the course's networks ran 1.18 to 1.76 times faster channels-last (batches of 64 to
    1,024), and the shipped ``mnist-cpu`` model drew 256 digits (DDIM 20, guidance 2) in 8.4 s against 11.5 s, 1.37
    times faster, with images equal up to 2.6e-5 (``benchmarks/sampling_layout.py``; Intel Xeon with AVX-512, 2
    cores, 2026-12-04). ``"contiguous"`` turns a channels-last model back; ``"auto"`` off a CPU (or under bf16)
    leaves the model as it is.
    Channels-last is a layout of 4-D tensors: ``"auto"`` leaves a model with 5-D weights (Conv3d) in its own
    layout, and an explicit ``"channels_last"`` raises a ValueError for it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if uses_channels_last(memory_format, check_device("device", device), bf16):
        if not any(t.dim() == 5 for t in (*model.parameters(), *model.buffers())):
            model.to(memory_format=torch.channels_last)
        elif memory_format == "channels_last":
            raise ValueError("memory_format='channels_last' needs a model without 5-D weights (channels-last is "
                             "a layout of 4-D tensors; Conv3d has 5-D ones); use 'auto' or 'contiguous'")
    elif memory_format == "contiguous":
        model.to(memory_format=torch.contiguous_format)
    return model


@dataclass
class TrainConfig:
    # diffusion
    schedule: str = "cosine"            # linear | cosine | sigmoid
    num_timesteps: int = 1000           # T
    prediction: str = "eps"             # what the network predicts: eps | x0 | v (presets: v; notebook 03 §6 says why)
    min_snr_gamma: float | None = None  # e.g. 5.0 for min-SNR weighting; None = the plain loss
    # network (see UNetConfig)
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] | None = None  # None = attention at the lowest resolution only
    dropout: float = 0.1
    pixel_unshuffle: int = 1            # 2 = work on 14x14x4 instead of 28x28x1 (about 3x faster a step on a CPU)
    class_conditional: bool = False     # learn p(x | digit) as well, for classifier-free guidance
    label_drop_prob: float = 0.1        # how often the label is hidden in training (the null class)
    # optimisation
    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200             # linear warm-up of the lr (a run shorter than this never reaches lr)
    lr_schedule: str = "cosine"         # constant | cosine (decay to 10% after the warm-up)
    weight_decay: float = 0.0
    grad_clip: float = 1.0              # max global gradient norm; 0 disables
    ema_decay: float = 0.999
    amp: str = "auto"                   # auto (bf16 on CUDA cards with bf16 arithmetic, fp32 elsewhere) | bf16 | off
    memory_format: str = "auto"         # auto (channels_last on a CPU in fp32, else contiguous) | channels_last | contiguous
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 50
    on_nan: str = "raise"               # raise | skip (skip the update of a step whose loss is NaN/Inf)
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channel_mults = as_int_tuple("channel_mults", self.channel_mults)
        if self.attention_levels is None:
            self.attention_levels = (len(self.channel_mults) - 1,)
        self.attention_levels = as_int_tuple("attention_levels", self.attention_levels)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("prediction", self.prediction, PREDICTION_TYPES)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        check_choice("amp", self.amp, ("auto", "bf16", "off"))
        check_choice("memory_format", self.memory_format, MEMORY_FORMATS)
        check_choice("on_nan", self.on_nan, ("raise", "skip"))
        check_bool("class_conditional", self.class_conditional)
        check_bool("progress", self.progress)
        check_num_timesteps(self.num_timesteps)
        check_int("steps", self.steps, min_value=0)
        check_int("batch_size", self.batch_size, min_value=1)
        check_int("warmup_steps", self.warmup_steps, min_value=0)
        check_int("seed", self.seed, min_value=0)
        check_int("checkpoint_every", self.checkpoint_every, min_value=1)
        check_int("keep_last", self.keep_last, min_value=1)
        check_int("log_every", self.log_every, min_value=1)
        check_float("lr", self.lr, min_value=0.0, min_inclusive=False)
        check_float("weight_decay", self.weight_decay, min_value=0.0)
        check_float("grad_clip", self.grad_clip, min_value=0.0)
        check_float("ema_decay", self.ema_decay, min_value=0.0, max_value=1.0, max_inclusive=False)
        check_float("label_drop_prob", self.label_drop_prob, min_value=0.0, max_value=1.0)
        if self.min_snr_gamma is not None:
            check_float("min_snr_gamma", self.min_snr_gamma, min_value=0.0, min_inclusive=False)
        self.unet_config()  # validates the network fields
        check_plain("extra", self.extra, top=True)  # before the loop below reads a tensor's .item()
        # Store plain Python values: a NumPy number (np.int64(20)) or a 0-d tensor passes the checks above, but it
        # would travel into every checkpoint, which torch.load(weights_only=True) then refuses to read.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, str):
                value = str(value)
            elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
                value = int(value)
            elif isinstance(value, numbers.Real) and not isinstance(value, bool):
                value = float(value)
            setattr(self, f.name, value)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict of settings (e.g. json.loads(text) of a saved config), got "
                            f"{type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig setting(s) {unknown}; accepted: {sorted(names)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(
            base_channels=self.base_channels, channel_mults=self.channel_mults, num_res_blocks=self.num_res_blocks,
            attention_levels=self.attention_levels, dropout=self.dropout, pixel_unshuffle=self.pixel_unshuffle,
            num_classes=10 if self.class_conditional else None,
        )

    def make_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_name(self.schedule, self.num_timesteps)

    def lr_at(self, step: int) -> float:
        """Learning-rate multiplier at ``step``: linear warm-up, then constant or cosine decay to 0.1."""
        step = check_int("step", step, min_value=0)
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant" or self.steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.steps - self.warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay_at(decay: float, step: int) -> float:
    """The decay the EMA uses at ``step``: ``min(decay, (1 + step) / (10 + step))``.

    The warm-up lets the early average forget the random initial weights; it is 0.1 at step 0 and reaches
    ``decay`` only at step ``(10 * decay - 1) / (1 - decay)``: 890 for 0.99, 8,990 for 0.999.
    """
    decay = check_float("decay", decay, min_value=0.0, max_value=1.0, max_inclusive=False)
    step = check_int("step", step, min_value=0)
    return min(decay, (1 + step) / (10 + step))


class EMA:
    """Exponential moving average of a model's weights (with the usual warm-up of the decay, :func:`ema_decay_at`)."""

    def __init__(self, model: nn.Module, decay: float):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (the network whose weights are averaged), "
                            f"got {_show(model)}")
        self.decay = check_float("decay", decay, min_value=0.0, max_value=1.0, max_inclusive=False)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be the torch.nn.Module this EMA averages, got {_show(model)}")
        decay = ema_decay_at(self.decay, step)
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        if [p.shape for p in params] != [p.shape for p in ema_params]:  # torch's error: "Tensor lists must have..."
            raise ValueError(f"model must be the network this EMA was made from ({len(ema_params)} weight tensors); "
                             f"got one with other weights ({len(params)} tensors, or other shapes)")
        if params and (params[0].dtype, params[0].device) != (ema_params[0].dtype, ema_params[0].device):
            raise TypeError(f"model's weights are {params[0].dtype} on {params[0].device}, but this EMA's are "
                            f"{ema_params[0].dtype} on {ema_params[0].device}: move or convert one of them, or make "
                            "the EMA again from the model as it is now")
        torch._foreach_lerp_(ema_params, params, 1 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient became NaN or Inf."""


def model_from_weights(config: TrainConfig, weights: dict, device: torch.device,
                       memory_format: str = "auto") -> tuple[UNet, NoiseSchedule, TrainConfig]:
    """(model in eval mode, schedule, config): ``config``'s UNet with ``weights`` (a state dict, made float32), on
    ``device`` in the layout ``memory_format`` chooses; the model records ``config.prediction``, which
    :func:`~ddpm_helpers.sampling.sample` reads. What :meth:`Trainer.load_model` and ``load_pretrained`` share."""
    model = UNet(config.unet_config())
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    model.prediction = config.prediction  # what it outputs
    model = apply_memory_format(model.to(device).eval(), memory_format, device)
    return model, config.make_schedule().to(device), config


def _check_counters(where: str, state: dict) -> None:
    """The plain entries of a Trainer state: a step count, a loss history, random streams (as state_dict writes)."""
    step, history, rng = state["step"], state["history"], state["rng"]
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise CheckpointError(f"{where} has step={step!r}; a Trainer state's step is a count of steps, an int >= 0")
    if not isinstance(history, (list, tuple)) or not all(isinstance(v, numbers.Real) for v in history):
        raise CheckpointError(f"{where} has history={_show(history)}; a Trainer state's history is a list of losses")
    if not (isinstance(rng, dict) and all(isinstance(rng.get(k), torch.Tensor) for k in ("torch", "batch"))):
        raise CheckpointError(f"{where} has rng={_show(rng)}; a Trainer state's rng is a dict of generator states "
                              "with 'torch' and 'batch' (tensors), as Trainer.state_dict() writes")


class Trainer:
    """Trains a :class:`UNet` on ``images`` (N, 1, H, W) in [-1, 1] (and ``labels`` for a conditional model).

    With ``out_dir``, checkpoints go there every ``checkpoint_every`` steps, at the end and on Ctrl-C;
    ``resume=True`` continues from the newest checkpoint in ``out_dir`` (same config required,
    except the settings in :data:`RESUMABLE_CHANGES`, e.g. more ``steps``).

    Inside a torchrun process group (see :mod:`ddpm_helpers.distributed`) the model is wrapped in
    DistributedDataParallel, ``batch_size`` is per rank (the global batch is ``batch_size *
    world_size``), and only rank 0 keeps the EMA, writes checkpoints and shows progress. Every rank
    draws its own dropout masks (:func:`dropout_seed`); without dropout N ranks compute the gradients of
    one process on the global batch (up to the order of floating-point sums), with dropout the same in distribution.
    """

    def __init__(
        self,
        config: TrainConfig,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        resume: bool = True,
        model: nn.Module | None = None,
    ):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        check_bool("resume", resume)
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be None (a UNet built from config) or a torch.nn.Module, got {_show(model)}")
        check_tensor("images", images, ndim=4, floating=True, finite=True)
        if images.shape[0] == 0:
            raise ValueError("images must hold at least one image, got an empty tensor")
        if images.dtype != torch.float32:
            raise TypeError(f"images must be float32 (the network's dtype), got {images.dtype}; call images.float()")
        check_pixel_range("images", images)
        if config.class_conditional:
            if labels is None:
                raise ValueError("labels are required when config.class_conditional is True")
            check_tensor("labels", labels, ndim=1, floating=False)
            if labels.shape[0] != images.shape[0]:
                raise ValueError(f"labels must have one entry per image ({images.shape[0]}), got {labels.shape[0]}")
            lo, hi = (int(v) for v in torch.aminmax(labels))
            if lo < 0 or hi > 9:
                raise ValueError(f"labels must be digits from 0 to 9, got values from {lo} to {hi}")
            labels = labels.long()  # uint8 labels (as numpy reads MNIST) would fail in the label embedding
        # an unconditional config ignores labels: callers may pass them whatever the preset (as the example above does)
        self.config = config
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.is_main = self.rank == 0
        self.device = select_device(device)
        if self.world_size > 1 and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.images = images.to(self.device)
        self.labels = labels.to(self.device) if (labels is not None and config.class_conditional) else None
        self.schedule = config.make_schedule().to(self.device)
        seed_everything(config.seed)
        weight = None if model is None else next(model.parameters(), None)
        if model is not None and weight is None:
            raise ValueError("model has no parameters to train; pass a network with weights (or model=None for the "
                             "config's UNet)")
        if weight is not None and weight.dtype != torch.float32:  # amp="bf16" is autocast over float32 weights
            raise TypeError(f"model's weights are {weight.dtype}, but the Trainer trains float32 networks (with bf16 "
                            "autocast where amp says so); pass model.float()")
        self.model = (model if model is not None else UNet(config.unet_config())).to(self.device)
        self.model.prediction = config.prediction  # what it learns to output: sample() reads it (and the EMA copy's)
        self.use_bf16 = config.amp == "bf16" or (config.amp == "auto" and has_native_bf16(self.device))
        # before the EMA copy, which keeps it; bf16 autocast wants the contiguous layout (uses_channels_last)
        apply_memory_format(self.model, config.memory_format, self.device, self.use_bf16)
        if self.labels is not None and getattr(self.model, "num_classes", None) is None:
            raise ValueError("config.class_conditional is True, but the model has no num_classes (it is unconditional)")
        if hasattr(self.model, "check_input"):  # image size vs the U-Net's down-sampling, before any training
            self.model.check_input(self.images, torch.zeros(1, dtype=torch.long, device=self.device), name="images")
        self.ema = EMA(self.model, config.ema_decay)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay, fused=fused or None)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, config.lr_at)
        self.has_dropout = model_has_dropout(self.model)  # config.dropout, or a model passed in with its own
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[float] = []
        self.skipped_steps: list[int] = []
        self._stop: _StopBetweenSteps | None = None  # set while fit() runs
        self.out_dir = check_path("out_dir", out_dir, "a folder", optional=True)
        self._saved_step: int | None = None  # the step of the checkpoint in out_dir that holds this run's state
        if self.out_dir is not None:
            if self.is_main:  # the only rank that writes
                self._check_writable(self.out_dir)
                earlier = list_checkpoints(self.out_dir)
                if not resume and earlier:
                    raise ValueError(
                        f"out_dir {self.out_dir} already holds checkpoints of a run (newest: {earlier[-1].name}), and "
                        "resume=False would start a new run among them (the next resume could pick either). "
                        "Continue that run (resume=True), choose another out_dir, or move the files away (the "
                        "command line's --restart does that)")
            if resume:  # every rank reads the same checkpoint
                state = latest_checkpoint(self.out_dir, map_location=self.device)
                if state is not None:
                    self.load_state(state)
        self.ddp_model = None
        if self.world_size > 1:  # after loading: DDP starts every rank from rank 0's weights
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @staticmethod
    def _check_writable(folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"out_dir {str(folder)!r} is a file, not a folder; give a folder for the "
                                     "checkpoints (it is made if missing)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / ".write_test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise PermissionError(f"out_dir {str(folder)!r} is not writable ({err}); choose another folder") from None

    @property
    def ema_model(self) -> nn.Module:
        return self.ema.model

    # ---- state ----------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        """The random-number streams a step draws from (copies, read on the host: no GPU sync)."""
        rng = {"torch": torch.get_rng_state(), "batch": self.batch_generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        elif self.device.type == "mps":  # t, the noise and dropout are drawn there; torch.manual_seed reseeds it
            rng["mps"] = torch.mps.get_rng_state()
        return rng

    def _set_rng_state(self, rng: dict) -> None:
        """Put back streams read by :meth:`_rng_state` (or saved in a checkpoint's ``rng``)."""
        torch.set_rng_state(rng["torch"].cpu())
        self.batch_generator.set_state(rng["batch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        if "mps" in rng and self.device.type == "mps":
            torch.mps.set_rng_state(rng["mps"].cpu())

    def state_dict(self) -> dict:
        rng = self._rng_state()
        return {
            "config": self.config.to_dict(),
            "unet_config": self.model.config.to_dict() if hasattr(self.model, "config") else {},
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "step": self.step,
            "history": list(self.history),
            "skipped_steps": list(self.skipped_steps),
            "world_size": self.world_size,
            "rng": rng,
            "versions": library_versions(),
        }

    _STATE_KEYS = ("config", "model", "ema", "optimizer", "lr_scheduler", "step", "history", "rng")

    def load_state(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict as Trainer.state_dict() returns and load_checkpoint() reads, got "
                            f"{_show(state)}")
        where = f"checkpoint {state['path']}" if "path" in state else "the state"
        missing = [key for key in self._STATE_KEYS if key not in state]
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(repr(k) for k in missing)}: it was not written by "
                                  "Trainer.state_dict() (or Trainer.save)")
        check_same_config(state["config"], self.config.to_dict(), ignore=RESUMABLE_CHANGES)
        _check_counters(where, state)  # before anything is loaded: a bad value must not leave half a state behind
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world_size:
            raise CheckpointError(
                f"{where} was written by a run of {saved_world} process(es) (global batch "
                f"{saved_world * self.config.batch_size}); this run has {self.world_size} (global batch "
                f"{self.world_size * self.config.batch_size}), which would change the maths of the run. Resume with "
                f"the same number of processes (torchrun --nproc_per_node {saved_world}, or no torchrun for 1), "
                "or start afresh with --restart or another output folder."
            )
        kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in self.optimizer.param_groups]
        try:
            self.model.load_state_dict(state["model"])
            self.ema.model.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{where} does not fit this model: {err}") from None
        for group, chosen in zip(self.optimizer.param_groups, kernels):  # the saved groups bring the saving
            group.update(chosen)  # device's choice of kernel (fused on CUDA); keep the one made for this device
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        # another `steps` re-fits the cosine from this step on (the same `steps` gives back the saved rates exactly)
        self.lr_scheduler.lr_lambdas = [self.config.lr_at]
        for group, base_lr in zip(self.optimizer.param_groups, self.lr_scheduler.base_lrs):
            group["lr"] = base_lr * self.config.lr_at(self.lr_scheduler.last_epoch)
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.skipped_steps = list(state.get("skipped_steps", []))
        self._set_rng_state(state["rng"])
        came_from = Path(state["path"]).parent.resolve() if "path" in state else None
        here = self.out_dir is not None and came_from == self.out_dir.resolve()
        self._saved_step = self.step if here else None  # a state from elsewhere is saved here at the end
        if self.config.progress and "path" in state and self.is_main:
            print(f"resumed from {state['path']} at step {self.step}")

    def save(self) -> Path | None:
        """Write a checkpoint for the current step into ``out_dir`` and prune old ones (rank 0 only)."""
        if self.out_dir is None or not self.is_main:
            return None
        path = save_checkpoint(self.state_dict(), checkpoint_path(self.out_dir, self.step))
        self._saved_step = self.step
        prune_checkpoints(self.out_dir, self.config.keep_last, newest=path)  # never counts a newer unreadable file
        return path

    @classmethod
    def load_model(cls, path: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu",
                   memory_format: str = "auto") -> tuple[UNet, NoiseSchedule, TrainConfig]:
        """(model in eval mode, schedule, config) from a checkpoint file; the EMA weights by default.

        ``memory_format`` chooses the model's layout as :func:`apply_memory_format` does: by default
        channels-last on a CPU, where the shipped model sampled 1.37 times faster (:func:`apply_memory_format`).
        """
        check_choice("memory_format", memory_format, MEMORY_FORMATS)
        check_bool("ema", ema)
        device = check_available_device("device", device)
        state = load_checkpoint(path, map_location=device)
        missing = [key for key in ("config", "ema" if ema else "model") if key not in state]
        if missing:  # save_checkpoint writes any dict: this one did not come from a Trainer
            raise CheckpointError(f"{path} is a checkpoint, but not one of the Trainer's: it has no {' or '.join(missing)} "
                                  f"(its entries: {sorted(map(str, state))})")
        config = TrainConfig.from_dict(state["config"])
        return model_from_weights(config, state["ema" if ema else "model"], device, memory_format)

    # ---- training -------------------------------------------------------------------------
    def train_step(self) -> float:
        """One optimisation step on a random batch; returns the loss (averaged over the ranks).

        Every rank draws the same global batch (indices, timesteps, noise, dropped labels) and keeps
        its own slice, so N ranks of ``batch_size`` compute the gradient of one global batch.
        Dropout masks are the exception: with N > 1 ranks and dropout, each rank draws its own (see
        :meth:`rank_rng`), or all ranks would drop the same units of different images.
        """
        cfg = self.config
        size, mine = cfg.batch_size * self.world_size, slice(self.rank * cfg.batch_size,
                                                             (self.rank + 1) * cfg.batch_size)
        idx = torch.randint(0, self.images.shape[0], (size,), generator=self.batch_generator).to(self.device)
        x0 = self.images[idx[mine]]
        t = torch.randint(0, self.schedule.num_timesteps, (size,), device=self.device)[mine]
        noise = torch.randn((size, *x0.shape[1:]), device=self.device, dtype=x0.dtype)[mine]
        y = None
        if self.labels is not None:
            with skip_value_checks():   # labels checked at start-up; reading them here would stall a GPU
                y = drop_labels(self.labels[idx], self.model.num_classes, cfg.label_drop_prob)[mine]
        self.model.train()
        # the batch was drawn here from images checked at start-up: no value checks (each would stall a GPU)
        with self.rank_rng(), skip_value_checks(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                                   enabled=self.use_bf16):
            loss = diffusion_loss(self.ddp_model or self.model, self.schedule, x0, y, prediction=cfg.prediction,
                                  min_snr_gamma=cfg.min_snr_gamma, t=t, noise=noise)
        self.optimizer.zero_grad(set_to_none=True)
        # needs no random numbers (autograd saved the dropout masks); under DDP it also averages the gradients
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else
                                                   float("inf"))
        # one read-back per step (it waits for the GPU): the loss for the history, the norm for the NaN check
        value, norm = torch.stack([distributed.mean_across_ranks(loss.detach()).float(), grad_norm.float()]).tolist()
        # from here the step is committed: the weights, the optimizer, the EMA, the schedule and the counter change
        # together, and inside fit() not even a second Ctrl-C splits them (it stops the run just after)
        with self._stop.shield() if self._stop is not None else contextlib.nullcontext():
            self._commit(value, norm)
        return value

    def _commit(self, value: float, norm: float) -> None:
        cfg = self.config
        if not (math.isfinite(value) and math.isfinite(norm)):
            what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {norm}"
            if cfg.on_nan == "raise":
                raise NonFiniteLossError(
                    f"{what} at step {self.step}. Try a lower lr (now {cfg.lr}), grad_clip > 0, or amp='off'; "
                    "or set on_nan='skip' to skip such steps."
                )
            warnings.warn(f"{what} at step {self.step}: skipping this update (on_nan='skip')", stacklevel=3)
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped_steps.append(self.step)
            # a skipped step still uses up its learning rate, so the schedule stays tied to the step count;
            # torch warns about exactly that when no optimizer.step() has run yet (a skipped first step)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                self.lr_scheduler.step()
        else:
            self.optimizer.step()
            if self.is_main:
                self.ema.update(self.model, self.step)
            self.lr_scheduler.step()
        self.step += 1
        self.history.append(value)

    def rank_rng(self, step: int | None = None) -> contextlib.AbstractContextManager:
        """The random-number context of this rank's forward pass at ``step`` (default: the current step).

        In one process, or without dropout, nothing changes. With N > 1 ranks and dropout, the global
        generators (CPU, and this rank's GPU) are seeded with :func:`dropout_seed` ``(seed, step, rank)``
        inside ``torch.random.fork_rng``, which puts their states back on exit: each rank draws dropout
        masks of its own, the shared streams of timesteps and noise stay the same on every rank, and a
        resumed run draws the masks of the uninterrupted one.
        """
        if self.world_size == 1 or not self.has_dropout:
            return contextlib.nullcontext()
        return self._seeded_fork(dropout_seed(self.config.seed, self.step if step is None else step, self.rank))

    def _any_rank_stopping(self, stopping: bool) -> bool:
        return distributed.any_across_ranks(stopping, self.device)

    @contextlib.contextmanager
    def _seeded_fork(self, seed: int):
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(self.device):
                    torch.cuda.manual_seed(seed)  # this rank's GPU only
            yield

    def fit(self, steps: int | None = None) -> list[float]:
        """Train until ``steps`` (default ``config.steps``) have been done in total; returns the loss history.

        Ctrl-C (KeyboardInterrupt) saves a checkpoint, then re-raises so the caller stops too. A Ctrl-C that
        arrives during a step takes effect when that step is done. A second one stops at once (a step may hang):
        during the forward and backward passes the step is dropped, its random draws put back, and the checkpoint
        is that of the step before; during the few lines that commit the step (optimizer, EMA, counter) it waits
        for them. Either way the checkpoint never holds half a step, and a resumed run is the uninterrupted one.
        """
        target = self.config.steps if steps is None else check_int("steps", steps, min_value=0)
        bar = None
        if self.config.progress and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=target, initial=min(self.step, target), desc="training", dynamic_ncols=True)
        try:
            with _StopBetweenSteps() as stop:
                self._stop = stop
                start = None
                try:
                    while self.step < target:
                        start = (self.step, self._rng_state())
                        self.train_step()
                        if bar is not None:
                            bar.update(1)
                            if self.step % self.config.log_every == 0:
                                recent = self.history[-self.config.log_every:]
                                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
                        if self.step % self.config.checkpoint_every == 0:
                            self.save()
                        # a Ctrl-C that came during the step stops the run here, between two steps; with several
                        # ranks, all of them stop after the same step (one that waited for the others would hang)
                        stop.deliver(self._any_rank_stopping if self.world_size > 1 else None)
                except KeyboardInterrupt:
                    if start is not None and self.step == start[0]:  # stopped before the step's commit: undo
                        self._set_rng_state(start[1])  # its draws (the weights and the rest are still untouched)
                    path = self.save()  # still inside: one more Ctrl-C while it is written waits for it
                    if path is not None:
                        print(f"\ninterrupted at step {self.step}: checkpoint saved to {path}; run again to resume")
                    raise
        finally:
            self._stop = None
            if bar is not None:
                bar.close()
        if self._saved_step != self.step:  # not when the last step saved already (or nothing to save: no out_dir)
            self.save()
        return self.history


class _StopBetweenSteps:
    """Holds back the signals that stop training (Ctrl-C's SIGINT, and SIGTERM where a Python handler turns it
    into an interrupt, as the CLI does) until :meth:`deliver` is called between two steps; there the held
    signal's own handler runs (it raises KeyboardInterrupt). A second signal before then runs its handler at
    once: a step that hangs can still be stopped. Signals without a Python handler (the default SIGTERM, an
    ignored SIGINT) are left alone, and so is everything outside the main thread, where Python runs no handlers.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))

    def __init__(self):
        self.previous: dict = {}
        self.held: tuple | None = None
        self.shielded = False
        self.urgent: tuple | None = None  # a second signal that came inside shield()

    def __enter__(self) -> "_StopBetweenSteps":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                handler = signal.getsignal(sig)
                if callable(handler):
                    self.previous[sig] = handler
                    signal.signal(sig, self._hold)
        return self

    def _hold(self, signum, frame):
        if self.held is None:
            self.held = (signum, frame)
        elif self.shielded:  # the second one, while a step commits: stop as soon as it has
            self.urgent = (signum, frame)
        else:  # the second one: stop now
            self._run((signum, frame))

    def _run(self, held: tuple) -> None:
        """Run the original handler of the signal ``held`` = (signum, frame); nothing stays held."""
        self.held = None
        self.previous[held[0]](*held)

    @contextlib.contextmanager
    def shield(self):
        """Inside this block even a second signal waits, and runs its handler when the block ends."""
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False
        urgent, self.urgent = self.urgent, None
        if urgent is not None:
            self._run(urgent)

    def deliver(self, agree=None) -> None:
        """Run the held signal's handler, if a signal is held. ``agree(held) -> bool``, when given, is asked
        first (on every rank): True means some rank stops here, and then this one stops too, held signal or not."""
        if agree is not None and agree(self.held is not None) and self.held is None:
            raise KeyboardInterrupt  # another rank was interrupted: stop after the same step as it
        if self.held is not None:
            self._run(self.held)

    def __exit__(self, exc_type, exc, tb) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if exc_type is None:
            self.deliver()  # one that came after the last step's deliver() is not lost
        self.previous.clear()


def library_versions() -> dict:
    import platform

    import torchvision

    return {"ddpm_helpers": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": str(np.__version__), "python": platform.python_version()}
