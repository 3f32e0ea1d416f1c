"""Data-parallel throughput: training images per second with 1 process versus N processes (torchrun + DDP).

Each configuration trains the same preset for ``--steps`` timed steps (after ``--warmup`` untimed ones)
with ``batch_size`` images per process, so N processes see N times more images per step; the figure
that matters is images per second. On a GPU machine N is at most the number of GPUs (one per process,
``nccl``); on a CPU the cores are split between the processes (``gloo``), so that the comparison is
fair: 1 process with all threads versus N processes with ``cores / N`` threads each.

    python benchmarks/ddp_throughput.py --preset gpu --nproc 1,2,4,8   # a machine with 8 GPUs
    python benchmarks/ddp_throughput.py --preset cpu --nproc 1,2        # a 2-core CPU
    python benchmarks/ddp_throughput.py --smoke                         # CI (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from ddpm_helpers import distributed  # noqa: E402
from ddpm_helpers.data import load_mnist  # noqa: E402
from ddpm_helpers.presets import PRESETS, get_preset  # noqa: E402
from ddpm_helpers.train import Trainer, TrainConfig, select_device  # noqa: E402


def process_counts(text: str) -> list[int]:
    return _common.positive_int_list(text, "process counts (e.g. 1,2)")


positive_int = _common.positive_int


def worker(args) -> None:
    """One rank: train untimed warm-up steps, then time ``args.steps`` steps; rank 0 prints a JSON line."""
    device = distributed.init(select_device("auto"))
    overrides = {"base_channels": 16, "channel_mults": (1, 2), "batch_size": 16} if args.smoke else {}
    preset = get_preset(args.preset, **overrides)
    config = TrainConfig.from_dict({**preset.train.to_dict(), "progress": False})
    images, labels = load_mnist("train", allow_subset=True, limit=2000 if args.smoke else None, device=device)
    trainer = Trainer(config, images, labels, device=device)
    trainer.fit(args.warmup)
    distributed.barrier()
    _common.synchronize(device)
    start = time.perf_counter()
    trainer.fit(args.warmup + args.steps)
    _common.synchronize(device)
    distributed.barrier()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        world = distributed.world_size()
        print("RESULT " + json.dumps({
            "processes": world, "threads_per_process": torch.get_num_threads(), "device": str(device),
            "batch_per_process": config.batch_size, "global_batch": config.batch_size * world, "steps": args.steps,
            "seconds": seconds, "images_per_second": config.batch_size * world * args.steps / seconds}), flush=True)
    distributed.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--nproc", type=process_counts, default=[1, 2], help="process counts to compare, e.g. 1,2")
    parser.add_argument("--steps", type=positive_int, default=40, help="timed steps per configuration")
    parser.add_argument("--warmup", type=positive_int, default=5, help="untimed steps first")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--record", action="store_true", help="write RESULTS.md rows even in smoke mode")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup = 3, 1
    if args.worker:
        worker(args)
        return 0

    gpus = torch.cuda.device_count()
    if gpus and max(args.nproc) > gpus:
        parser.error(f"argument --nproc: {max(args.nproc)} processes but only {gpus} GPU(s); use at most {gpus}")
    cores = os.cpu_count() or 1
    runs = []
    for n in args.nproc:
        threads = max(1, cores // n) if not gpus else max(1, torch.get_num_threads())
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
        flags = ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup), "--worker",
                 *(["--smoke"] if args.smoke else [])]
        launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={n}"]
        proc = subprocess.run([*launcher, __file__, *flags], capture_output=True, text=True, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or len(lines) != 1:
            print(proc.stdout[-2000:], proc.stderr[-3000:], file=sys.stderr)
            print(f"error: the run with {n} process(es) failed (exit code {proc.returncode})", file=sys.stderr)
            return 1
        runs.append(json.loads(lines[0][len("RESULT "):]))
        print(f"{n} process(es) x {runs[-1]['threads_per_process']} thread(s): "
              f"{runs[-1]['images_per_second']:.0f} images/s", flush=True)

    base = runs[0]["images_per_second"]
    date, machine, command = time.strftime("%Y-%m-%d"), _common.machine(), _common.command_line()
    rows = "\n".join(
        f"| {date} | {machine} | {args.preset} | {r['processes']} | {r['threads_per_process']} | "
        f"{r['batch_per_process']} | {r['global_batch']} | {r['images_per_second']:.0f} | "
        f"{r['images_per_second'] / base:.2f}x | `{command}` |" for r in runs)
    _common.record("ddp_throughput", {"preset": args.preset, "runs": runs}, rows, smoke=args.smoke,
                   force=args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
