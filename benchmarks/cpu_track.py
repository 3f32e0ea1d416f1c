"""The CPU track: how good a generator does a learner without a GPU get in 10 minutes?

Trains one preset (``cpu`` by default: a narrow U-Net on pixel-unshuffled 14x14x4 images, T=500,
v-prediction, class-conditional) on a time budget or a step count, and at every ``--eval-every``
steps pauses the clock to score samples with the package's metrics: unconditional samples, and,
for a class-conditional model, balanced class-conditional samples at each guidance scale (the
fraction classified as the requested digit is the ``accuracy``). The result is the
quality-versus-training-time curve; the last point is the model a learner would have.

    # the measured CPU track (2026-11-27, 2 cores, fp32; RESULTS.md): the preset's 2,300 steps, 662 s of training
    python benchmarks/cpu_track.py --eval-every 575 --eval-samples 500 --out runs/cpu_track
    # CI smoke (seconds)
    python benchmarks/cpu_track.py --smoke

Checkpoints go to ``--out`` (a run interrupted by Ctrl-C resumes from there), so the final model can
be exported with ``scripts/export_pretrained.py``. Training time excludes the evaluations (they are
the benchmark's work, not the learner's); the time to draw a 64-image grid is reported beside it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from ddpm_helpers.cli import _parse_overrides  # noqa: E402
from ddpm_helpers.data import load_mnist  # noqa: E402
from ddpm_helpers.presets import PRESETS, get_preset  # noqa: E402
from ddpm_helpers.sampling import sample  # noqa: E402
from ddpm_helpers.train import Trainer, TrainConfig, select_device  # noqa: E402
from ddpm_helpers.unet import count_parameters  # noqa: E402


positive_int = _common.positive_int


def scales(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated guidance scales >= 0, got {text!r}")
    return values


def generate(model, schedule, config: TrainConfig, n: int, steps: int, seed: int, labels=None, guidance=1.0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, 250):
        m = min(250, n - start)
        y = None if labels is None else labels[start:start + m]
        out.append(sample(model, schedule, m, method="ddim", steps=steps, prediction=config.prediction,
                          y=y, guidance_scale=guidance, generator=gen, device="cpu"))
    return torch.cat(out)


def evaluate(trainer: Trainer, args, train_seconds: float) -> dict:
    model, schedule, config = trainer.ema_model, trainer.schedule, trainer.config
    point = {"step": trainer.step, "train_seconds": round(train_seconds, 1),
             "loss_mean_last_100": sum(trainer.history[-100:]) / max(1, len(trainer.history[-100:]))}
    with _common.Timer() as t:
        generate(model, schedule, config, 64, args.sample_steps, 123)
    point["grid_64_seconds"] = round(t.seconds, 2)
    images = generate(model, schedule, config, args.eval_samples, args.sample_steps, 1)
    point["unconditional"] = _common.score(images, data_dir=args.data_dir)
    if config.class_conditional:
        labels = torch.arange(args.eval_samples) % 10
        point["guided"] = {}
        for s in args.guidance:
            images = generate(model, schedule, config, args.eval_samples, args.sample_steps, 2, labels, s)
            point["guided"][str(s)] = _common.score(images, labels, data_dir=args.data_dir)
    return point


def summary(point: dict) -> str:
    u = point["unconditional"]
    text = (f"step {point['step']:>5} | {point['train_seconds']:>6.0f} s | uncond FD {u['frechet_distance']:.3f} "
            f"(floor {u['frechet_distance_floor']:.3f}) >0.9 {u['frac_confident_0.9']:.1%} "
            f"in dist. {u['frac_in_distribution']:.1%} "
            f"classes {sum(c > 0 for c in u['class_histogram'])}")
    for s, g in point.get("guided", {}).items():
        text += f" | s={s}: acc {g['accuracy']:.1%} >0.9 {g['frac_confident_0.9']:.1%} FD {g['frechet_distance']:.3f}"
    return text


def table_rows(result: dict, date: str, machine: str, command: str) -> str:
    """One RESULTS.md row per point of the curve (the columns of the ``## cpu_track`` table)."""
    recipe = " ".join([result["preset"], *result.get("overrides", [])])
    rows = []
    for p in result["curve"]:
        u = p["unconditional"]
        guided = "; ".join(f"s={s}: {g['accuracy']:.1%} / {g['frac_confident_0.9']:.1%} / "
                           f"{g['frechet_distance']:.3f}" for s, g in p.get("guided", {}).items()) or "-"
        rows.append(f"| {date} | {machine} | {recipe} | {result['parameters']:,} | {p['step']} | "
                    f"{p['train_seconds']:.0f} | {p['grid_64_seconds']:.1f} | DDIM {result['sample_steps']} | "
                    f"{u['frechet_distance']:.3f} / {u['frechet_distance_floor']:.3f} | {u['frac_confident_0.9']:.1%} | "
                    f"{u['frac_in_distribution']:.1%} | "
                    f"{sum(c > 0 for c in u['class_histogram'])} | {guided} | {command} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field")
    parser.add_argument("--train-seconds", type=float, help="stop training after this much training time")
    parser.add_argument("--steps", type=positive_int, help="stop after this many steps (default: the preset's)")
    parser.add_argument("--eval-every", type=positive_int, default=500, help="score the model every N steps")
    parser.add_argument("--eval-samples", type=positive_int, default=500)
    parser.add_argument("--sample-steps", type=positive_int, default=20, help="DDIM steps")
    parser.add_argument("--guidance", type=scales, default=[1.0, 2.0, 3.0])
    parser.add_argument("--out", default="runs/cpu_track")
    parser.add_argument("--data-dir")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run for CI")
    parser.add_argument("--record", action="store_true", help="write RESULTS.md rows even in smoke mode")
    parser.add_argument("--rows-from", metavar="JSON", help="only re-render the RESULTS.md rows of a saved result")
    args = parser.parse_args()
    if args.rows_from:
        import json

        saved = json.loads(Path(args.rows_from).read_text())
        rows = table_rows(saved, saved["date"][:10], saved["machine"],
                          _common.command_cell(saved["command"], saved.get("stopped_early")))
        if not saved.get("smoke"):
            _common._append_row("cpu_track", rows)
        print(rows)
        return 0
    if args.train_seconds is not None and not (math.isfinite(args.train_seconds) and args.train_seconds > 0):
        parser.error(f"--train-seconds must be a positive number of seconds, got {args.train_seconds}")

    overrides = _parse_overrides(args.set)
    if args.smoke:
        overrides = {"base_channels": 16, "steps": 12, "warmup_steps": 2, "checkpoint_every": 6, **overrides}
        args.eval_every, args.eval_samples, args.sample_steps = 6, 40, 4
    preset = get_preset(args.preset, **overrides)
    steps = args.steps or preset.train.steps
    config = TrainConfig.from_dict({**preset.train.to_dict(), "steps": steps, "progress": False})
    device = select_device("cpu")
    images, labels = load_mnist("train", args.data_dir, allow_subset=True, limit=2000 if args.smoke else None)
    trainer = Trainer(config, images, labels, out_dir=Path(args.out), device=device)
    print(f"{preset.name}: {count_parameters(trainer.model):,} parameters, {steps} steps, "
          f"budget {args.train_seconds or '-'} s, on {_common.machine()}", flush=True)

    curve, train_seconds, start_step = [], 0.0, trainer.step
    scored = (start_step, 0.0)
    # a stop (Ctrl-C, SIGTERM) keeps the points already scored; the run resumes from its newest checkpoint
    with _common.StopEarly() as stop:
        while trainer.step < steps and (args.train_seconds is None or train_seconds < args.train_seconds):
            t0 = time.perf_counter()
            target = min(steps, (trainer.step // args.eval_every + 1) * args.eval_every)
            while trainer.step < target and (args.train_seconds is None or
                                             train_seconds + time.perf_counter() - t0 < args.train_seconds):
                trainer.train_step()
                if trainer.step % config.checkpoint_every == 0:
                    trainer.save()
            train_seconds += time.perf_counter() - t0
            trainer.save()
            curve.append(evaluate(trainer, args, train_seconds))
            scored = (trainer.step, train_seconds)  # the training the recorded curve covers
            print(summary(curve[-1]), flush=True)

    result = {"preset": preset.name, "overrides": args.set, "config": config.to_dict(),
              "parameters": count_parameters(trainer.model), "resumed_from_step": start_step,
              "sample_steps": args.sample_steps, "curve": curve,
              "images_per_second": round((scored[0] - start_step) * config.batch_size / max(scored[1], 1e-9), 1)}
    rows = table_rows(result, time.strftime("%Y-%m-%d"), _common.machine(),
                      _common.command_cell(_common.command_line(), stop.reason))
    _common.record("cpu_track", result, rows, smoke=args.smoke, force=args.record, stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
