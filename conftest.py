"""Test-session environment, loaded by pytest before anything is collected (tests and notebooks alike).

- MNIST comes from the offline copy in ../shared/data when DDPM_DATA_DIR is not set: never the network.
- Notebooks run in smoke mode (DDPM_SMOKE=1) unless the caller sets DDPM_SMOKE=0.
- Notebook kernels started by nbval inherit this environment.
"""

import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"

if "DDPM_DATA_DIR" not in os.environ and (SHARED_DATA / "MNIST" / "raw").is_dir():
    os.environ["DDPM_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("DDPM_SMOKE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # diffusers (a test-only dependency) must not look for a hub
os.environ.setdefault("DDPM_RUNS_DIR", str(Path(__file__).resolve().parent / "runs" / "tests"))
