"""Test-session environment, loaded by pytest before anything is collected (tests and notebooks alike).

- MNIST comes from the offline copy in ../shared/data when DDPM_DATA_DIR is not set: never the network.
- Notebooks run in smoke mode (DDPM_SMOKE=1) unless the caller sets DDPM_SMOKE=0.
- Notebook kernels started by nbval inherit this environment, and one thing more: in them, a warning that a cell's
  own code triggers is an error (NOTEBOOK_KERNEL_WARNINGS), so that CI fails where a learner would see a warning
  printed under a cell.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if "DDPM_DATA_DIR" not in os.environ and (SHARED_DATA / "MNIST" / "raw").is_dir():
    os.environ["DDPM_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("DDPM_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # diffusers (a test-only dependency) must not look for a hub
os.environ.setdefault("DDPM_RUNS_DIR", str(Path(__file__).resolve().parent / "runs" / "tests"))

# "Module __main__" is the code of the cells (and of functions defined in them); warnings that library code issues
# about itself keep their usual handling. Found this way: float() of a weight that requires grad, in notebook 05,
# printed torch's "Converting a tensor with requires_grad=True to a scalar" warning under the cell.
NOTEBOOK_KERNEL_WARNINGS = "error::Warning:__main__"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """nbval starts a notebook's kernel while setting up its first cell: start it with NOTEBOOK_KERNEL_WARNINGS."""
    if item.path.suffix != ".ipynb":
        yield
        return
    previous = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (previous, NOTEBOOK_KERNEL_WARNINGS)))  # the last one wins
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = previous
