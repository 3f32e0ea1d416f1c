"""Data-parallel training with PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

Launch N copies of the training command; each copy (a *rank*) holds the whole model and the whole
data set, computes the gradient on its own slice of every batch, and DDP averages the gradients
across the ranks before the optimizer step, so every rank takes the same step and the weights stay
identical::

    torchrun --standalone --nproc_per_node 4 -m ddpm_helpers train --preset gpu

How the course splits a batch: every rank draws the same *global* batch of ``batch_size * world_size``
indices (and the same timesteps and noise) from generators seeded identically, then keeps its own
disjoint slice of ``batch_size``. The averaged gradient is then exactly the gradient of one process
training on the global batch: ``torchrun`` with 2 ranks of 64 is the same maths as 1 process with
128 (up to the order of floating-point sums), which the tests check. Dropout masks are the one exception:
each rank draws its own (``Trainer.rank_rng``), so with dropout the match is in distribution only. Rank 0 alone
keeps the EMA, writes checkpoints, logs and draws progress bars; every rank reads the checkpoint to resume. Ctrl-C
(or SIGTERM under the CLI) reaching any rank stops every rank after the same step, and rank 0 saves it:
``Trainer.fit`` asks all ranks after each step (:func:`any_across_ranks`). When its work is done, the command
line ends each rank with :func:`leave_without_teardown`, past PyTorch's teardown, which now and then aborts
under gloo.

The backend is chosen automatically: ``nccl`` when the ranks have GPUs, ``gloo`` on CPUs. A plain
``python -m ddpm_helpers train`` (no torchrun) runs in one process exactly as before.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import torch
import torch.distributed as dist

from ._validate import check_bool, check_device, check_int


def env_world_size() -> int:
    """The world size torchrun announced in ``WORLD_SIZE`` (1 when not launched by torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE must be a positive integer, got {value!r}") from None
    if size < 1:
        raise ValueError(f"environment variable WORLD_SIZE must be a positive integer, got {value!r}")
    return size


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Only rank 0 writes files, logs and shows progress bars."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise (CPU; MPS has no multi-process backend)."""
    return "nccl" if check_device("device", device).type == "cuda" else "gloo"


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up (no-op without torchrun); returns this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK``. Call once per process, before building the Trainer.
    """
    device = check_device("device", device)
    if env_world_size() == 1 or is_distributed():
        return device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support")
    if device.type == "mps":
        raise ValueError("device 'mps' cannot train data-parallel (no multi-process backend); use --device cpu")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                               "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device))
    return device


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all ranks (the tensor itself in a single process)."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return total / dist.get_world_size()


def any_across_ranks(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is True on at least one (``flag`` itself in a single process).

    ``device`` is where the one-element tensor lives for the collective (this rank's GPU under nccl).
    """
    check_bool("flag", flag)  # a string such as "no" would count as True on every rank
    if not is_distributed():
        return flag
    votes = torch.tensor([int(flag)], device=device, dtype=torch.int32)
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (call at the end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave_without_teardown(code: int = 0) -> NoReturn:
    """End this process at once with exit status ``code``, past PyTorch's teardown of the process group and of the
    interpreter.

    For the end of a torchrun job whose ranks have all passed their last barrier (so no message is still on its
    way) and whose files are written and closed. The teardown itself now and then aborts under gloo after all the
    work is done: "terminate called without an active exception" (SIGABRT), seen twice in this course (CI on
    Python 3.11 and a run on 3.13, torch 2.14.1) and never reproduced on purpose. PyTorch's own threads (gloo's,
    the autograd engine's) reach for the GIL while the interpreter shuts down (pytorch/pytorch#179291 and #190489).
    An abort there loses nothing by itself, but torchrun then stops the other ranks, possibly while rank 0 still
    samples, and reports a finished job as failed. Standard output and error are flushed first; ``atexit``
    handlers do not run.
    """
    code = check_int("code", code, min_value=0, max_value=255)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
