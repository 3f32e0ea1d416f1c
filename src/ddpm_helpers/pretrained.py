"""Pretrained denoisers shipped with the package, so later notebooks work without training first.

Each is an EMA weight file in safetensors format (loading runs no code) plus a JSON card with its
TrainConfig, the command that trained it, the machine, and its measured metrics. Made by
``scripts/export_pretrained.py`` from a checkpoint of ``python -m ddpm_helpers train``.
"""

from __future__ import annotations

import json
from importlib import resources

import torch

from ._validate import check_available_device, check_choice
from .schedules import NoiseSchedule
from .train import MEMORY_FORMATS, TrainConfig, model_from_weights
from .unet import UNet


def available() -> list[str]:
    """Names of the shipped pretrained models."""
    files = resources.files("ddpm_helpers.assets")
    return sorted(p.name[len("pretrained_"):-len(".json")] for p in files.iterdir()
                  if p.name.startswith("pretrained_") and p.name.endswith(".json"))


def model_card(name: str) -> dict:
    """The JSON card of a pretrained model: config, command, machine, metrics."""
    check_choice("name", name, available())
    return json.loads(resources.files("ddpm_helpers.assets").joinpath(f"pretrained_{name}.json").read_text())


def load_pretrained(name: str = "mnist-cpu", device: str | torch.device = "cpu", memory_format: str = "auto") -> tuple[
    UNet, NoiseSchedule, TrainConfig
]:
    """(model in eval mode, its noise schedule, its TrainConfig) of a shipped pretrained model.

    ``memory_format`` chooses the model's layout as :func:`~ddpm_helpers.train.apply_memory_format` does: by
    default channels-last on a CPU, where it sampled 1.37 times faster (``benchmarks/sampling_layout.py``).
    """
    from safetensors.torch import load_file

    device = check_available_device("device", device)
    check_choice("memory_format", memory_format, MEMORY_FORMATS)
    card = model_card(name)
    config = TrainConfig.from_dict(card["config"])
    with resources.as_file(resources.files("ddpm_helpers.assets").joinpath(card["weights"])) as path:
        state = load_file(str(path))
    return model_from_weights(config, state, device, memory_format)  # float16 weights are stored made float32
