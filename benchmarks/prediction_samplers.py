"""Why did eps-prediction fail in the lever study? The same network trained to predict eps or v, sampled three ways.

In ``levers.py --part quality`` (CPU, 120 s of training) the ``cpu`` preset with eps- instead of
v-prediction scored a Frechet distance 700 times the real-data floor with DDIM, while every other
lever stayed within 25 times. This script separates the two things that row mixes up, the model and
the sampler. It trains the preset twice, identical but for ``prediction`` (same seed, same steps,
same batches), and then, for each model:

* **how well it denoises**, on real test digits noised to a grid of timesteps: the mean squared
  error of its clean-image estimate x0_hat (clipped to [-1, 1], as the samplers clip it), beside the
  error of two guesses that ignore x_t (the mean image, and the mean image of the right digit); the
  error of its noise estimate; and the *noise-norm ratio* |eps_hat|^2 / |eps|^2 (below 1: it
  predicts too little noise);
* **what each sampler makes of it**: DDIM with eta = 0 (deterministic: the probability-flow ODE),
  DDIM with eta = 1 (fresh noise at every step) at the same step count, and full-length DDPM
  ancestral sampling; each digit in turn with the preset's guidance, scored by the package's
  metrics (Frechet distance beside its floor, share in distribution, share confident above 0.9).

Results go to ``results/prediction_samplers-*.json`` and rows under ``## prediction_samplers`` in
``RESULTS.md``.

    # CPU (2 cores, measured): 2 x 600 steps of the cpu preset (200 s each) + 2 x DDIM 50 on 200 images
    # (35-45 s each) and 500-step DDPM (about 350 s) per model: 21 minutes
    python benchmarks/prediction_samplers.py --steps 600 --num-samples 200
    # CI smoke (seconds; writes only results/smoke/, no RESULTS.md rows)
    python benchmarks/prediction_samplers.py --smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import references  # noqa: E402

from ddpm_helpers.data import load_mnist  # noqa: E402
from ddpm_helpers.presets import PRESETS  # noqa: E402

PREDICTIONS = ("v", "eps")
SMOKE_T = 20  # timesteps of the smoke run's schedule
T_FRACTIONS = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0)  # probe timesteps, as fractions of T (1.0 = T-1)


def probe_timesteps(num_timesteps: int) -> list[int]:
    return sorted({min(num_timesteps - 1, int(f * num_timesteps)) for f in T_FRACTIONS})


@torch.no_grad()
def denoising_errors(model, schedule, prediction: str, x0: torch.Tensor, y: torch.Tensor | None,
                     timesteps: list[int], seed: int = 0) -> list[dict]:
    """Per timestep: eps MSE, noise-norm ratio |eps_hat|^2/|eps|^2 and clipped-x0 MSE on the images ``x0``."""
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    out = []
    for t in timesteps:
        tt = torch.full((x0.shape[0],), t, device=x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device)
        x_t = schedule.q_sample(x0, tt, eps)
        x0_hat, eps_hat = schedule.to_x0_and_eps(model(x_t, tt, y).float(), x_t, tt, prediction)
        out.append({"t": t, "alpha_bar": schedule.scalar("alpha_bar", t),
                    "eps_mse": float(((eps_hat - eps) ** 2).mean()),
                    "noise_norm_ratio": float((eps_hat ** 2).mean() / (eps ** 2).mean()),
                    "x0_mse_clipped": float(((x0_hat.clamp(-1, 1) - x0) ** 2).mean())})
    return out


def samplers(num_timesteps: int, steps: int) -> list[tuple[str, str, int | None, float]]:
    """(label, method, steps, eta) of the three samplers."""
    k = min(steps, num_timesteps)
    return [(f"DDIM {k}, eta 0", "ddim", k, 0.0), (f"DDIM {k}, eta 1", "ddim", k, 1.0),
            (f"DDPM {num_timesteps}", "ddpm", None, 0.0)]


def run_prediction(prediction: str, args, preset: str, images, labels, test_x0, test_y, device) -> dict:
    torch.manual_seed(0)
    overrides = {"prediction": prediction, **({"num_timesteps": SMOKE_T} if args.smoke else {})}
    ref = references.CourseReference(images, labels, device, preset=preset, smoke=args.smoke,
                                     overrides=overrides, steps=args.steps)
    trained = references.train(ref, device=device, steps=args.steps)
    cfg, model, schedule = ref.trainer.config, ref.trainer.ema_model, ref.trainer.schedule
    print(f"[{prediction}] {trained['steps']} steps in {trained['train_seconds']:.0f} s", flush=True)
    errors = denoising_errors(model, schedule, prediction, test_x0,
                              test_y if cfg.class_conditional else None, probe_timesteps(cfg.num_timesteps))
    for e in errors:
        print(f"[{prediction}] t={e['t']}: eps MSE {e['eps_mse']:.4f}, |eps_hat|^2/|eps|^2 "
              f"{e['noise_norm_ratio']:.3f}, x0 MSE {e['x0_mse_clipped']:.4f}", flush=True)
    guidance = ref.guidance if ref.guidance is not None else 1.0
    scored = []
    for label, method, k, eta in samplers(cfg.num_timesteps, args.sample_steps):
        torch.manual_seed(1)
        x, seconds = _common.draw_samples(model, schedule, cfg, args.num_samples, method, k, device,
                                          guidance=guidance, eta=eta)
        metrics = _common.score(x, data_dir=args.data_dir)
        scored.append({"sampler": label, "method": method, "steps": k, "eta": eta, "sample_seconds": seconds,
                       "metrics": metrics})
        print(f"[{prediction}] {label}: FD {metrics['frechet_distance']:.3f} (floor "
              f"{metrics['frechet_distance_floor']:.3f}), in distribution {metrics['frac_in_distribution']:.1%}",
              flush=True)
    return {"prediction": prediction, "train": trained, "guidance": ref.guidance, "denoising": errors,
            "samples": scored, "config": cfg.to_dict()}


def guess_errors(x0: torch.Tensor, y: torch.Tensor) -> dict:
    """MSE of the best guesses that ignore x_t: the mean image, and the mean image of each digit (a network
    that knows the label, at t = T-1 where x_t holds almost nothing of x_0, should do about as well)."""
    class_means = torch.stack([x0[y == c].mean(0) if (y == c).any() else x0.mean(0) for c in range(10)])
    return {"mean_image": float(((x0 - x0.mean(0)) ** 2).mean()),
            "class_mean": float(((x0 - class_means[y]) ** 2).mean())}


def rows(date: str, machine: str, command: str, preset: str, result: dict, guess: dict) -> list[str]:
    by_t = {e["t"]: e["x0_mse_clipped"] for e in result["denoising"]}
    T = result["config"]["num_timesteps"]
    high, highest = (min(by_t, key=lambda t: abs(t - f * T)) for f in (0.9, 0.98))
    x0_errors = f"{by_t[high]:.3f} / {by_t[highest]:.3f} ({guess['class_mean']:.3f})"
    out = []
    for s in result["samples"]:
        m = s["metrics"]
        fd, floor = m["frechet_distance"], m["frechet_distance_floor"]
        cells = [date, machine, preset, result["prediction"], str(result["train"]["steps"]),
                 f"{result['train']['train_seconds']:.0f}", x0_errors, s["sampler"],
                 f"{s['sample_seconds']:.1f} ({m['num_samples']})",
                 f"{_common.fmt(fd)} / {_common.fmt(floor)} ({fd / floor:.1f}x)",
                 f"{m['frac_in_distribution']:.1%}", f"{m['frac_confident_0.9']:.1%}",
                 "-" if result["guidance"] is None else f"{result['guidance']:g}", command]
        out.append(_common.markdown_row(cells))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="the recipe trained twice (default: cpu; smoke with --smoke)")
    parser.add_argument("--steps", type=_common.positive_int, default=None, metavar="N",
                        help="training steps per model (default 600; smoke 4)")
    parser.add_argument("--num-samples", type=references.sample_count, default=None, metavar="N",
                        help="images per sampler and model (default 200; smoke 8)")
    parser.add_argument("--sample-steps", type=_common.positive_int, default=50, metavar="K",
                        help="steps of both DDIM samplers (default 50; DDPM always runs all T)")
    parser.add_argument("--probe-images", type=_common.positive_int, default=None, metavar="N",
                        help="test digits for the denoising errors (default 500; smoke 16)")
    _common.add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, device = _common.parse_run_args(build_parser(), argv)
    preset = args.preset or ("smoke" if args.smoke else "cpu")
    args.steps = args.steps or (4 if args.smoke else 600)
    if args.smoke:  # seconds, not minutes: a short schedule keeps full-length DDPM cheap
        args.sample_steps = min(args.sample_steps, 5)
    args.num_samples = args.num_samples or (8 if args.smoke else 200)
    args.probe_images = args.probe_images or (16 if args.smoke else 500)
    machine = _common.machine()
    print(f"eps versus v prediction, {preset!r} preset, {args.steps} steps each, on {machine}", flush=True)
    images, labels, load_seconds = _common.load_training_data(args, device)
    test_x0, test_y = load_mnist("test", args.data_dir, allow_subset=args.smoke, limit=args.probe_images,
                                 device=device)
    guess = guess_errors(test_x0, test_y)
    results = []  # a model's result enters once trained, probed and sampled (a stop keeps the finished ones)
    with _common.StopEarly() as stop:
        for prediction in PREDICTIONS:
            results.append(run_prediction(prediction, args, preset, images, labels, test_x0, test_y, device))
    date, command = time.strftime("%Y-%m-%d"), _common.command_cell(_common.command_line(), stop.reason)
    table = "\n".join(line for r in results for line in rows(date, machine, command, preset, r, guess))
    _common.record("prediction_samplers", {"device": str(device), "preset": preset, "steps": args.steps,
                                           "num_samples": args.num_samples, "sample_steps": args.sample_steps,
                                           "probe_images": args.probe_images, "guess_x0_mse": guess,
                                           "data_load_seconds": load_seconds,
                                           "results": results}, table, smoke=args.smoke, force=args.record,
                   stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
