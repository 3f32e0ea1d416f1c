"""Small helpers every notebook uses: where the course lives, smoke mode, Colab, and an environment report.

``COURSE_REPOSITORY`` is the one place the repository URL is configured: the "Open in Colab"
badges and the Colab install cells of all notebooks are generated from it by
``scripts/set_repository.py`` (a fork edits this line and runs that script), and a test checks that
every notebook agrees with it.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

COURSE_REPOSITORY = "https://github.com/ddpm-course/ddpm-from-scratch"
COURSE_BRANCH = "main"


def colab_badge_url(notebook_name: str) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook_name>`` on the configured repository."""
    path = COURSE_REPOSITORY.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{COURSE_BRANCH}/notebooks/{notebook_name}"


def pip_install_spec() -> str:
    """What ``%pip install`` takes on Colab to get this package from the repository."""
    return f"ddpm_helpers @ git+{COURSE_REPOSITORY}@{COURSE_BRANCH}"


def in_colab() -> bool:
    return "google.colab" in sys.modules


def smoke_mode() -> bool:
    """True when ``DDPM_SMOKE=1``: notebooks shrink every knob so that CI runs them in seconds on a CPU."""
    return os.environ.get("DDPM_SMOKE") == "1"


def runs_dir() -> Path:
    """Where notebooks keep checkpoints and outputs: ``$DDPM_RUNS_DIR`` or ``runs/`` beside the notebooks."""
    path = Path(os.environ.get("DDPM_RUNS_DIR", "runs"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def environment_report() -> dict:
    """Versions and hardware, for the set-up check at the top of a notebook."""
    from . import __version__
    from .train import select_device

    device = select_device("auto")
    report = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "ddpm_helpers": __version__,
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "colab": in_colab(),
        "smoke_mode": smoke_mode(),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
        report["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return report
