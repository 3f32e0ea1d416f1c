"""Does the memory layout matter when sampling? The course's networks in NCHW and in NHWC, side by side.

Sampling is one network call per step, without gradients, so it is the forward pass alone that a
learner waits for in notebooks 06 and 07. This script times that forward pass for each network in
the default (contiguous, NCHW) layout and channels-last (NHWC), the layout that
``ddpm_helpers.train.apply_memory_format`` picks on a CPU for the Trainer and the model loaders:

* **networks**: the U-Net of each preset (``smoke``, ``cpu``, ``gpu``; freshly initialised weights,
  since the time of a forward pass does not depend on their values) and the seed article's
  SimpleUNet (T = 300). A class-conditional network gets one label per image (the guided sampler
  calls it on twice the batch: the conditional and the unconditional half);
* **batch sizes** ``--batches``: images per call;
* **rounds** ``--repeats``: every (network, batch) is timed in both layouts once per round, the
  rounds visiting every row in turn, so that a machine whose speed drifts favours neither layout;
  a row gives the median images/s of each layout and the range;
* **end to end**: the shipped ``mnist-cpu`` model draws ``--sample-images`` digits (each digit in
  turn, guidance 2, DDIM ``--sample-steps``) with ``ddpm_helpers.sampling.sample`` from the same
  noise in both layouts, loaded by ``load_pretrained(memory_format=...)``: the seconds of each, and
  the largest difference between the two sets of images (the layout changes where numbers sit in
  memory, not what is computed, so it should be float rounding).

On CUDA the forward passes run in fp32 and again under bf16 autocast (``--precision``).

    # CPU (2 cores, measured): 4 networks x 3 batch sizes x 3 rounds, and 2 x 256 digits: 9 minutes
    # (the gpu preset's network needs about 30 s a call at batch 1,024 there)
    python benchmarks/sampling_layout.py
    # GPU: larger batches, both precisions (about 3 minutes, an estimate: 24 rows x 2 layouts x 3 rounds of ~1 s)
    python benchmarks/sampling_layout.py --batches 256,1024,4096 --sample-images 2000
    # CI smoke (seconds; writes only results/smoke/, no RESULTS.md rows)
    python benchmarks/sampling_layout.py --smoke

Results go to ``results/sampling_layout-*.json`` and rows under ``## sampling_layout`` in ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from ddpm_helpers._validate import skip_value_checks  # noqa: E402
from ddpm_helpers.presets import get_preset  # noqa: E402
from ddpm_helpers.pretrained import load_pretrained  # noqa: E402
from ddpm_helpers.sampling import sample  # noqa: E402
from ddpm_helpers.unet import SimpleUNet, UNet, count_parameters  # noqa: E402

LAYOUTS = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}


def networks(smoke: bool) -> dict[str, torch.nn.Module]:
    """The networks to time, by name, in eval mode and the default layout."""
    if smoke:
        return {"smoke preset": UNet(get_preset("smoke", base_channels=8).train.unet_config()).eval()}
    nets = {f"{name} preset": UNet(get_preset(name).train.unet_config()).eval() for name in ("smoke", "cpu", "gpu")}
    nets["SimpleUNet (seed)"] = SimpleUNet(num_timesteps=300).eval()
    return nets


def forward_seconds(model: torch.nn.Module, batch: int, device: torch.device, precision: str, calls: int) -> float:
    """Seconds per forward pass of ``batch`` noisy images at t = 100 (after one untimed call)."""
    x = torch.randn(batch, 1, 28, 28, device=device)
    t = torch.full((batch,), 100, device=device)
    extra = (torch.arange(batch, device=device) % 10,) if getattr(model, "num_classes", None) else ()
    # skip_value_checks: the network's input checks read t and y back to the host, a GPU sync per call that sample()
    # (which this stands for) does not make
    with torch.inference_mode(), skip_value_checks(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                                     enabled=precision == "bf16"):
        model(x, t, *extra)
        with _common.Timer(device) as timer:
            for _ in range(calls):
                model(x, t, *extra)
    return timer.seconds / calls


def calls_for(model: torch.nn.Module, batch: int, device: torch.device, precision: str, target: float) -> int:
    """How many calls make one timing last about ``target`` seconds (at least 1)."""
    return max(1, round(target / max(forward_seconds(model, batch, device, precision, 1), 1e-6)))


def time_forward(rows: list[dict], nets, batches, precisions, device, repeats: int, target: float) -> None:
    """Fill ``rows`` (a list the caller keeps, so that a stop leaves the rounds already timed)."""
    for name, net in nets.items():
        twins = {layout: copy.deepcopy(net).to(device=device, memory_format=fmt) for layout, fmt in LAYOUTS.items()}
        for precision in precisions:
            for batch in batches:
                calls = calls_for(twins["NCHW"], batch, device, precision, target)
                rows.append({"network": name, "parameters": count_parameters(net), "batch": batch,
                             "precision": precision, "calls": calls, "twins": twins,
                             "images_per_s": {layout: [] for layout in LAYOUTS}})
    for _ in range(repeats):  # interleaved rounds: each round visits every row, both layouts
        for row in rows:
            for layout, model in row["twins"].items():
                seconds = forward_seconds(model, row["batch"], device, row["precision"], row["calls"])
                row["images_per_s"][layout].append(row["batch"] / seconds)


def end_to_end(n: int, steps: int, device: torch.device) -> dict:
    """The shipped model draws n digits in each layout from the same noise: seconds and the largest difference."""
    out, seconds = {}, {}
    for layout, name in (("NCHW", "contiguous"), ("NHWC", "channels_last")):
        model, schedule, config = load_pretrained("mnist-cpu", device=device, memory_format=name)
        y = (torch.arange(n) % 10).to(device)
        with _common.Timer(device) as timer:
            out[layout] = sample(model, schedule, n, method="ddim", steps=steps, y=y, guidance_scale=2.0,
                                 prediction=config.prediction, generator=torch.Generator().manual_seed(0),
                                 device=device).cpu()
        seconds[layout] = timer.seconds
    return {"images": n, "sampler": f"DDIM {steps}, guidance 2", "seconds": seconds,
            "speed-up": seconds["NCHW"] / seconds["NHWC"],
            "max_abs_difference": float((out["NCHW"] - out["NHWC"]).abs().max())}


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for row in rows:
        speeds = row.pop("images_per_s")
        row.pop("twins")
        if not all(speeds.values()):
            continue
        med = {layout: statistics.median(v) for layout, v in speeds.items()}
        table.append({**row, "rounds": min(len(v) for v in speeds.values()), "median_images_per_s": med,
                      "range_images_per_s": {layout: [min(v), max(v)] for layout, v in speeds.items()},
                      "nhwc_over_nchw": med["NHWC"] / med["NCHW"]})
    return table


def markdown(result: dict, date: str, machine: str, command: str) -> str:
    lines = []
    for r in result["forward"]:
        (lo_c, hi_c), (lo_l, hi_l) = r["range_images_per_s"]["NCHW"], r["range_images_per_s"]["NHWC"]
        lines.append(_common.markdown_row([
            date, machine, f"{r['network']} ({r['parameters'] / 1e6:.2f} M)", str(r["batch"]), r["precision"],
            f"{r['median_images_per_s']['NCHW']:.0f} ({lo_c:.0f}-{hi_c:.0f})",
            f"{r['median_images_per_s']['NHWC']:.0f} ({lo_l:.0f}-{hi_l:.0f})",
            f"**{r['nhwc_over_nchw']:.2f}x**", f"{r['rounds']} rounds", command]))
    e = result.get("end_to_end")
    if e:
        lines.append(_common.markdown_row([
            date, machine, f"mnist-cpu, `sample()` {e['sampler']}", str(e["images"]), "fp32",
            f"{e['seconds']['NCHW']:.1f} s", f"{e['seconds']['NHWC']:.1f} s", f"**{e['speed-up']:.2f}x**",
            f"max difference {e['max_abs_difference']:.1e}", command]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=lambda s: _common.positive_int_list(s, "batch sizes"),
                        default=[64, 256, 1024], help="images per forward pass (default 64,256,1024)")
    parser.add_argument("--repeats", type=_common.positive_int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timing (default 1 s)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default=None,
                        help="of the network (default: both on CUDA, fp32 elsewhere)")
    parser.add_argument("--sample-images", type=int, default=256,
                        help="digits the shipped model draws in each layout (0: skip; default 256)")
    parser.add_argument("--sample-steps", type=_common.positive_int, default=20, help="DDIM steps (default 20)")
    _common.add_run_flags(parser, data=False)
    args, device = _common.parse_run_args(parser, argv)
    if not (0 < args.seconds <= 60):
        parser.error(f"--seconds must be a number of seconds in (0, 60], got {args.seconds}")
    if args.sample_images < 0:
        parser.error(f"--sample-images must be 0 (skip) or a positive number of images, got {args.sample_images}")
    if args.smoke:
        args.batches, args.repeats, args.seconds, args.sample_images, args.sample_steps = [4], 2, 0.01, 4, 2
    precisions = (["fp32", "bf16"] if device.type == "cuda" else ["fp32"]) if args.precision is None else (
        ["fp32", "bf16"] if args.precision == "both" else [args.precision])
    torch.manual_seed(0)
    print(f"sampling layouts on {_common.machine()}: batches {args.batches}, {args.repeats} rounds", flush=True)
    start = time.perf_counter()
    rows, extra = [], None
    with _common.StopEarly() as stop:
        time_forward(rows, networks(args.smoke), args.batches, precisions, device, args.repeats, args.seconds)
        if args.sample_images:
            extra = end_to_end(args.sample_images, args.sample_steps, device)
    result = {"device": str(device), "forward": summarise(rows), "end_to_end": extra,
              "seconds": time.perf_counter() - start}
    row = markdown(result, time.strftime("%Y-%m-%d"), _common.machine(),
                   _common.command_cell(_common.command_line(), stop.reason))
    _common.record("sampling_layout", result, row, smoke=args.smoke, force=args.record, stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
