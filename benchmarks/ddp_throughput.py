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
import signal
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


def run_configuration(command: list[str], env: dict, grace: float = 5.0) -> tuple[int, str, str]:
    """Run one configuration (``python`` or ``torchrun``) to its end: (exit code, stdout, stderr).

    It runs in a process group of its own, so that a stop of this script (SIGTERM from ``timeout``, Ctrl-C)
    reaches every process of it: they get SIGTERM (torchrun passes it on to its workers), then SIGKILL for what is left
    after ``grace`` seconds, and the stop goes on to :class:`_common.StopEarly`. Killing only the launcher would
    leave its workers running, holding the GPUs.
    """
    group = hasattr(os, "killpg")  # POSIX; elsewhere only the launcher itself can be stopped
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=group)

    def send(sig) -> None:
        try:
            os.killpg(proc.pid, sig) if group else (proc.terminate() if sig == signal.SIGTERM else proc.kill())
        except ProcessLookupError:  # every process of it has ended already
            pass

    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        send(signal.SIGTERM)
        try:
            proc.communicate(timeout=grace)  # returns once the workers, which share its pipes, have ended too
        except subprocess.TimeoutExpired:
            pass
        send(signal.SIGKILL)  # whatever is left of the group
        proc.communicate()
        raise
    return proc.returncode, stdout, stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--nproc", type=process_counts, default=[1, 2], help="process counts to compare, e.g. 1,2")
    parser.add_argument("--steps", type=positive_int, help="timed steps per configuration (default 40; 3 in smoke)")
    parser.add_argument("--warmup", type=positive_int, help="untimed steps first (default 5; 1 in smoke)")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--record", action="store_true", help="write RESULTS.md rows even in smoke mode")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.steps = args.steps or (3 if args.smoke else 40)
    args.warmup = args.warmup or (1 if args.smoke else 5)
    if args.worker:
        worker(args)  # every rank has passed the last barrier and the RESULT line is printed:
        distributed.leave_without_teardown(0)  # PyTorch's teardown aborted here once in CI (SIGABRT), so skip it

    gpus = torch.cuda.device_count()
    if gpus and max(args.nproc) > gpus:
        parser.error(f"argument --nproc: {max(args.nproc)} processes but only {gpus} GPU(s); use at most {gpus}")
    cores = os.cpu_count() or 1
    runs = []
    # a stop (Ctrl-C, SIGTERM) ends the configuration in progress and records the ones that finished
    with _common.StopEarly() as stop:
        for n in args.nproc:
            threads = max(1, cores // n) if not gpus else max(1, torch.get_num_threads())
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
            flags = ["--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup), "--worker",
                     *(["--smoke"] if args.smoke else [])]
            launcher = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                        f"--nproc_per_node={n}"]
            returncode, stdout, stderr = run_configuration([*launcher, __file__, *flags], env)
            lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
            if returncode != 0 or len(lines) != 1:
                print(stdout[-2000:], stderr[-3000:], file=sys.stderr)
                print(f"error: the run with {n} process(es) failed (exit code {returncode})", file=sys.stderr)
                return 1
            runs.append(json.loads(lines[0][len("RESULT "):]))
            print(f"{n} process(es) x {runs[-1]['threads_per_process']} thread(s): "
                  f"{runs[-1]['images_per_second']:.0f} images/s", flush=True)
    if not runs:
        print("stopped before the first configuration finished: nothing to record", file=sys.stderr)
        return stop.exit_code

    base = runs[0]["images_per_second"]
    date, machine, command = time.strftime("%Y-%m-%d"), _common.machine(), _common.command_line()
    rows = "\n".join(
        f"| {date} | {machine} | {args.preset} | {r['processes']} | {r['threads_per_process']} | "
        f"{r['batch_per_process']} | {r['global_batch']} | {r['images_per_second']:.0f} | "
        f"{r['images_per_second'] / base:.2f}x | {_common.command_cell(command, stop.reason)} |" for r in runs)
    _common.record("ddp_throughput", {"preset": args.preset, "runs": runs}, rows, smoke=args.smoke,
                   force=args.record, stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
