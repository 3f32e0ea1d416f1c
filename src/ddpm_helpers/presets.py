"""Named run presets for the CLI and the notebooks: one dataclass per preset, each a full recipe.

* ``smoke``: a tiny network for a few hundred steps; proves the pipeline end to end on a CPU in
  about a minute (its samples are strokes, not yet digits). Used by CI.
* ``cpu``: a narrow, class-conditional U-Net on 2x2-folded images and fewer timesteps, for a laptop
  without a GPU: 6 to 12 minutes of training on 2 cores, depending on the chip (``--minutes 9`` fits the run
  to about 9 minutes); its samples are drawn with guidance 2
  (see ``benchmarks/cpu_track.py`` and ``benchmarks/RESULTS.md`` for what it reaches).
* ``gpu``: the full recipe for a single GPU (bf16, large batches).

``preset_for(device)`` picks between the last two for a notebook's full run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ._validate import _show, check_bool, check_choice, check_float, check_int
from .sampling import METHODS as SAMPLERS
from .train import TrainConfig, has_native_bf16


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    train: TrainConfig
    num_samples: int = 64          # images generated after training (grid + samples.pt)
    sampler: str = "ddim"          # ddpm | ddim | dpm++2m
    sampler_steps: int | None = 50  # for ddim and dpm++2m (ddpm uses all T)
    guidance_scale: float = 1.0    # classifier-free guidance of a class-conditional model's samples
    eval_samples: int = 1000       # images scored by `evaluate`
    allow_subset: bool = False     # may fall back to the shipped MNIST subset
    data_limit: int | None = None  # use only the first N training images
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in (("name", self.name), ("description", self.description)):
            if not isinstance(value, str):
                raise TypeError(f"{key} must be a str, got {_show(value)}")
        if not self.name.strip():
            raise ValueError(f"name must be a non-empty str (it names the run's folder), got {self.name!r}")
        if not isinstance(self.train, TrainConfig):
            raise TypeError(f"train must be a TrainConfig, got {type(self.train).__name__}")
        check_choice("sampler", self.sampler, SAMPLERS)
        if self.sampler_steps is not None:
            check_int("sampler_steps", self.sampler_steps, min_value=1)
        check_float("guidance_scale", self.guidance_scale, min_value=0.0)
        check_int("num_samples", self.num_samples, min_value=1)
        check_int("eval_samples", self.eval_samples, min_value=2)  # a covariance needs two images
        check_bool("allow_subset", self.allow_subset)
        if self.data_limit is not None:
            check_int("data_limit", self.data_limit, min_value=1)


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="tiny U-Net, v-prediction, 200 steps: checks the whole pipeline on a CPU in about a minute",
        # v, not eps: after short training eps-prediction's deterministic DDIM samples are still noise (notebook 03 §6
        # shows it after 600 steps of the cpu preset)
        train=TrainConfig(
            schedule="cosine", num_timesteps=200, prediction="v", base_channels=16, channel_mults=(1, 2, 2),
            num_res_blocks=1, attention_levels=(), dropout=0.0, steps=200, batch_size=32, lr=2e-3, warmup_steps=20,
            checkpoint_every=100, log_every=20, ema_decay=0.99,
        ),
        num_samples=64, sampler="ddim", sampler_steps=20, eval_samples=200, allow_subset=True,
    ),
    "cpu": Preset(
        name="cpu",
        description="a narrow class-conditional U-Net on 2x2-folded (14x14x4) images, T=500, v-prediction, "
                    "2,300 steps: digits in 6 to 12 minutes of training on 2 CPU cores (chip-dependent; "
                    "--minutes 9 fits the run to about 9)",
        train=TrainConfig(
            schedule="cosine", num_timesteps=500, prediction="v", base_channels=32, channel_mults=(1, 2),
            num_res_blocks=1, attention_levels=(1,), pixel_unshuffle=2, dropout=0.0, class_conditional=True,
            label_drop_prob=0.1, steps=2300, batch_size=64, lr=2e-3, warmup_steps=100, checkpoint_every=250,
            ema_decay=0.995,
        ),
        num_samples=64, sampler="ddim", sampler_steps=20, guidance_scale=2.0, eval_samples=1000, allow_subset=True,
    ),
    "gpu": Preset(
        name="gpu",
        description="the full recipe for one GPU: bf16, batch 512, 8k steps",
        train=TrainConfig(
            schedule="cosine", num_timesteps=1000, prediction="v", base_channels=64, channel_mults=(1, 2, 2),
            num_res_blocks=2, attention_levels=(2,), dropout=0.1, steps=8000, batch_size=512, lr=1e-3,
            warmup_steps=300, checkpoint_every=1000, ema_decay=0.999,
        ),
        num_samples=64, sampler="ddim", sampler_steps=50, eval_samples=2000, allow_subset=False,
    ),
}


def get_preset(name: str, **train_overrides) -> Preset:
    """The preset ``name`` with optional TrainConfig overrides, e.g. ``get_preset("cpu", steps=500)``."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(repr(p) for p in PRESETS)}; got {name!r}")
    preset = PRESETS[name]
    if train_overrides:
        merged = {**preset.train.to_dict(), **train_overrides}
        preset = replace(preset, train=TrainConfig.from_dict(merged))
    return preset


def preset_for(device: torch.device | str) -> str:
    """The preset a notebook's full run trains on ``device``: ``"gpu"`` on a CUDA card with bf16 arithmetic
    (compute capability 8.0 or newer: A100, L4, H100, ...), ``"cpu"`` everywhere else.

    The ``gpu`` recipe (6.9 M parameters, batch 512) took 68 ms per step on an H200, about 9 minutes for its
    8,000 steps. A card without bf16 (Colab's free T4, a V100) is an older and smaller one, where that recipe would
    train in fp32 for a long time; the ``cpu`` recipe is sized for two CPU cores (6 to 12 minutes of training there,
    depending on the chip).
    """
    return "gpu" if has_native_bf16(device) else "cpu"
