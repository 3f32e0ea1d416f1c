"""Small helpers every notebook uses: where the course lives, smoke mode, Colab, an environment report, and
:func:`exact_float32` for comparisons that must agree to float32 precision on any GPU.

``COURSE_REPOSITORY`` is the one place the repository URL is configured: the "Open in Colab"
badges and the Colab install cells of all notebooks are generated from it by
``scripts/set_repository.py`` (a fork edits this line and runs that script), and a test checks that
every notebook agrees with it.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

COURSE_REPOSITORY = "https://github.com/ddpm-course/ddpm-from-scratch"
COURSE_BRANCH = "main"


def colab_badge_url(notebook_name: str) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook_name>`` on the configured repository."""
    if not isinstance(notebook_name, str) or not notebook_name.endswith(".ipynb") or "/" in notebook_name:
        raise ValueError(f"notebook_name must be a notebook's file name, such as '05_training.ipynb', "
                         f"got {notebook_name!r}")
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


def machine_name() -> str:
    """A short name of where this runs: the GPU's name and CUDA version, or the CPU model with its widest vector
    instructions and the number of threads torch uses (for example ``CPU AMD EPYC (AVX2), 2 threads (2 cores
    visible)``). Benchmark rows and notebook timings carry it.
    """
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:  # not Linux: the platform's name is all there is
        pass
    # one model name covers chips of different speed (seen here: an "AMD EPYC" with AVX-512 ran the notebooks
    # about twice as fast as one with AVX2 only), so name the widest vector instructions too
    simd = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), None)
    cpu += f" ({simd})" if simd else ""
    return f"CPU {cpu}, {torch.get_num_threads()} threads ({os.cpu_count()} cores visible)"


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
        "machine": machine_name(),
        "cpu_threads": torch.get_num_threads(),
        "colab": in_colab(),
        "smoke_mode": smoke_mode(),
    }
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
        report["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return report


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Inside this block, float32 convolutions are exact float32; the previous setting comes back on exit.

    Ampere and newer GPUs run float32 convolutions in TF32 (a 10-bit mantissa) by default. That is fine for
    training and sampling, but two computations of the same thing (a hand-written loop and the package's, or two
    batch sizes for which cuDNN picks other kernels) may then disagree by more than the 1e-4 or 1e-5 that the
    notebooks check. On a CPU this changes nothing.
    """
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
