"""Shared test set-up: MNIST from ../shared/data (never the network), small thread counts, tiny configs."""

import os
from pathlib import Path

import pytest

# The environment (DDPM_DATA_DIR, DDPM_SMOKE, ...) is set in the repository's top-level conftest.py,
# so that it also reaches the notebook kernels that nbval starts.


@pytest.fixture(scope="session")
def data_dir() -> str:
    path = os.environ.get("DDPM_DATA_DIR")
    if not path or not Path(path).is_dir():
        pytest.fail("full MNIST is required for tests: set DDPM_DATA_DIR or place shared/data beside the checkout")
    return path


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    from ddpm_helpers.data import load_mnist

    return load_mnist("train", data_dir, limit=512, download=False)


@pytest.fixture()
def tiny_config():
    from ddpm_helpers.train import TrainConfig

    return TrainConfig(num_timesteps=50, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                       attention_levels=(1,), dropout=0.1, steps=20, batch_size=8, lr=1e-3, warmup_steps=2,
                       checkpoint_every=10, keep_last=5, progress=False)
