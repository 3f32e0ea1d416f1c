"""Shared test set-up: MNIST from ../shared/data (never the network), small thread counts, tiny configs."""

import os
import textwrap
from pathlib import Path

import pytest

# The environment (DDPM_DATA_DIR, DDPM_SMOKE, ...) is set in the repository's top-level conftest.py,
# so that it also reaches the notebook kernels that nbval starts.


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The full MNIST folder, or a failure. Tests that run a script or command allowed to fall back on the shipped
    subset request it too, so that a missing copy fails them instead of letting them train on the subset."""
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


@pytest.fixture()
def teardown_aborts(tmp_path) -> str:
    """A PYTHONPATH under which every rank that torchrun starts (``LOCAL_RANK`` set; not torchrun itself, not a
    plain process) aborts in PyTorch's teardown: ``destroy_process_group`` and the interpreter's exit both call
    ``os.abort()``, the SIGABRT that gloo now and then gave in CI. A rank that skips the teardown is unaffected."""
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""\
        import atexit, os
        if "LOCAL_RANK" in os.environ:
            import torch.distributed
            torch.distributed.destroy_process_group = lambda *args, **kwargs: os.abort()
            atexit.register(os.abort)
    """))
    return os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
