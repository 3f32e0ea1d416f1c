"""ddpm_helpers: the tested helper package of the DDPM course.

Timestep convention: 0-based indices t = 0 .. T-1 everywhere (index t is the paper's step t + 1);
see :mod:`ddpm_helpers.schedules`.
"""

__version__ = "0.1.0"

from .data import load_mnist  # noqa: E402
from .losses import diffusion_loss  # noqa: E402
from .sampling import ddim_step, ddpm_step, sample  # noqa: E402
from .schedules import NoiseSchedule, make_betas  # noqa: E402
from .train import EMA, TrainConfig, Trainer, seed_everything, select_device  # noqa: E402
from .unet import SimpleUNet, UNet, UNetConfig  # noqa: E402

__all__ = [
    "NoiseSchedule", "make_betas", "UNet", "UNetConfig", "SimpleUNet", "diffusion_loss", "sample", "ddpm_step",
    "ddim_step", "load_mnist", "TrainConfig", "Trainer", "EMA", "seed_everything", "select_device", "__version__",
]
