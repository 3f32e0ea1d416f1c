"""How does the course's recipe compare with the references, on the same machine, in the same script?

Three references are trained, timed, sampled and scored one after the other:

* ``seed``: the seed article's demo *as written*, with only the device fix (its schedule tensors are
  put on the device): T = 300 linear betas 1e-4..0.02, its ``SimpleUNet`` (four 3x3 convolutions
  32-64-32 wide, t/T as one extra constant channel; copied below as ``SeedUNet`` because the
  package's ``ddpm_helpers.unet.SimpleUNet`` is 64-64-64 wide, twice the parameters), t uniform, MSE
  on eps, Adam 1e-3, batch 128, epochs over shuffled MNIST (last batch smaller, like its
  ``DataLoader``), no EMA. Full sampling is its own ancestral loop
  x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_t) + sqrt(beta_t) z (z = 0 at
  the last step, no clamping); fewer steps use the course's DDIM (``ddpm_helpers.sampling.sample``)
  on the same linear T = 300 schedule.
* ``diffusers``: a baseline as a typical ``diffusers`` user writes it: ``UNet2DModel`` with
  block_out_channels (64, 128, 128), attention in the two lower levels, 2 layers per block;
  ``DDPMScheduler`` T = 1000 linear (its defaults: clip_sample, "fixed_small" variance); AdamW 1e-3;
  batch 256 from shuffled epochs of MNIST kept on the device; bf16 autocast on CUDA (fp32 on a CPU);
  EMA 0.999 with ``diffusers.training_utils.EMAModel`` (its default decay warm-up, foreach update).
  Samples come from the EMA weights in fp32 with the usual loop (``set_timesteps``,
  ``step(...).prev_sample``): ``DDPMScheduler`` for all 1000 steps, ``DDIMScheduler.from_config``
  (eta = 0, its default "leading" spacing) for fewer; outputs clamped to [-1, 1].
* ``course``: the course's preset (``--course-preset auto``: ``gpu`` on CUDA, ``cpu`` on a CPU,
  ``smoke`` with ``--smoke``) trained with ``ddpm_helpers.train.Trainer``; sampled from its EMA
  model with ``ddpm_helpers.sampling.sample`` (DDPM for the full count, DDIM for fewer steps).
  The ``cpu`` preset is class-conditional: it is sampled as the course uses it, each digit in turn
  with the preset's guidance scale (its unconditional quality is in ``benchmarks/cpu_track.py``).
  On a time budget the length of its cosine learning-rate schedule is fitted to the budget from
  the measured step time (during the first 10 % of the budget), so the decay ends when time is up.

For each: parameters, training wall time (everything included), steps, images seen and images/s
(the first 5 steps left out as warm-up), then for every ``--sample-steps`` count the time to draw
``--num-samples`` images (batches of 500) and ``ddpm_helpers.metrics.evaluate_samples`` of them.
A count >= a reference's T means full DDPM with T steps (the seed's "1000" is its 300 steps); the
count actually run is recorded. The result goes to ``benchmarks/results/references-*.json`` and one
row per (reference, step count) under ``## references`` in ``benchmarks/RESULTS.md``.

How long to train: by default seed 10 epochs, diffusers 180 s, course 120 s (the GitHub issue's
settings); ``--train-seconds S``, ``--steps N`` or ``--epochs E`` give every reference the same
budget instead (a time budget stops at the first step that ends past it).

    # GPU (one H100), all three in one call would take about 9 minutes; split in two calls of under 8:
    #   seed 10 epochs (~80 s at ~7,700 img/s) + its sampling (~10 s) + course 120 s
    #   + 2,000 samples x (1000, 50, 20) steps (~1 min) + scoring and start-up (~1 min): about 5 minutes
    python benchmarks/references.py --only seed,course
    #   diffusers 180 s + 2,000 samples x 1,000 DDPM steps (~2 min) + DDIM 50/20 and scoring (~30 s): 5-6 min
    python benchmarks/references.py --only diffusers

    # CPU rows (2 cores, nothing else running): the same 240 s of training for each reference, then DDIM
    # 50 and 20 steps on 200 images. Full 1,000-step DDPM does not fit on a CPU (the diffusers U-Net
    # alone would need ~1.5 hours for 200 images). Estimate: 12.5 min of training (the diffusers
    # recipe's batch of 256 takes ~30 s per step, so it overshoots by up to one step) + ~7-9 min of
    # diffusers sampling + ~1 min for the others and the scoring: about 21 minutes (19-24).
    python benchmarks/references.py --train-seconds 240 --num-samples 200 --sample-steps 50,20

    # CI smoke (seconds; writes only benchmarks/results/smoke/references-*.json, no RESULTS.md rows)
    python benchmarks/references.py --smoke

A normal run always appends its rows to RESULTS.md; a smoke run only with ``--record``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

from ddpm_helpers.presets import PRESETS, get_preset  # noqa: E402
from ddpm_helpers.sampling import sample as course_sample  # noqa: E402
from ddpm_helpers.schedules import NoiseSchedule  # noqa: E402
from ddpm_helpers.train import Trainer, TrainConfig  # noqa: E402

REFERENCES = ("seed", "diffusers", "course")
SAMPLE_BATCH = 500
WARMUP_STEPS = 5           # left out of the images/s figure (but not of the wall time)
CALIBRATE_FRACTION = 0.1   # the course's lr-schedule length is fitted during this share of a time budget
DEFAULT_BUDGET = {"seed": ("epochs", 10), "diffusers": ("seconds", 180.0), "course": ("seconds", 120.0)}
SMOKE_STEPS = 20
SMOKE_LIMIT = 2000
SMOKE_NUM_SAMPLES = 16
SMOKE_SAMPLE_STEPS = (10, 5)


synchronize = _common.synchronize


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class EpochBatches:
    """Index batches of shuffled epochs over N images (the last batch of an epoch is smaller, like a
    ``DataLoader(shuffle=True)`` without ``drop_last``), drawn on the data's device."""

    def __init__(self, n: int, batch_size: int, device: torch.device):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.perm, self.cursor = None, n

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def next(self) -> torch.Tensor:
        if self.cursor >= self.n:
            self.perm, self.cursor = torch.randperm(self.n, device=self.device), 0
        idx = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx


# ---- (a) the seed's demo ------------------------------------------------------------------------------
class SeedUNet(nn.Module):
    """The seed article's ``SimpleUNet`` exactly as written, except ``28`` -> the input's own size."""

    def __init__(self, num_timesteps: int = 300):
        super().__init__()
        self.num_timesteps = num_timesteps
        self.net = nn.Sequential(
            nn.Conv2d(1 + 1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float() / self.num_timesteps
        t = t.view(-1, 1, 1, 1).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return self.net(torch.cat([x, t], dim=1))


class SeedReference:
    name = "seed"

    def __init__(self, images: torch.Tensor, device: torch.device, *, smoke: bool = False, num_timesteps: int = 300):
        self.device, self.images = device, images
        self.T = num_timesteps
        # the device fix: the seed built these on the CPU and indexed them with CUDA timesteps
        self.beta = torch.linspace(1e-4, 0.02, self.T).to(device)
        self.alpha = 1.0 - self.beta
        self.alpha_bar = torch.cumprod(self.alpha, dim=0)
        self.model = SeedUNet(self.T).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = EpochBatches(images.shape[0], 16 if smoke else 128, device)
        self.label = "seed"
        self.settings = {"T": self.T, "batch_size": self.batches.batch_size, "lr": 1e-3, "optimizer": "Adam",
                         "network": "seed SimpleUNet 32-64-32", "ema": None}

    def steps_for_epochs(self, epochs: int) -> int:
        return epochs * self.batches.steps_per_epoch

    def q_sample(self, x_0, t, noise):
        sqrt_alpha_bar_t = torch.sqrt(self.alpha_bar[t]).view(-1, 1, 1, 1)
        sqrt_one_minus_alpha_bar_t = torch.sqrt(1 - self.alpha_bar[t]).view(-1, 1, 1, 1)
        return sqrt_alpha_bar_t * x_0 + sqrt_one_minus_alpha_bar_t * noise

    def train_step(self) -> tuple[int, torch.Tensor]:
        self.model.train()
        x = self.images[self.batches.next()]
        t = torch.randint(0, self.T, (x.shape[0],), device=self.device).long()
        noise = torch.randn_like(x)
        loss = F.mse_loss(self.model(self.q_sample(x, t, noise), t), noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return x.shape[0], loss.detach()

    @torch.no_grad()
    def _sample_ddpm(self, n: int) -> torch.Tensor:
        """The seed's ``sample()`` loop (schedule on the device, nothing else changed)."""
        self.model.eval()
        x = torch.randn(n, 1, 28, 28, device=self.device)
        for t_ in reversed(range(self.T)):
            t = torch.full((n,), t_, device=self.device, dtype=torch.long)
            noise_pred = self.model(x, t)
            beta_t = self.beta[t].view(-1, 1, 1, 1)
            alpha_t = self.alpha[t].view(-1, 1, 1, 1)
            alpha_bar_t = self.alpha_bar[t].view(-1, 1, 1, 1)
            noise = torch.randn_like(x) if t_ > 0 else torch.zeros_like(x)
            x = 1 / torch.sqrt(alpha_t) * (x - (1 - alpha_t) / torch.sqrt(1 - alpha_bar_t) * noise_pred) \
                + torch.sqrt(beta_t) * noise
        return x

    def sample(self, n: int, steps: int) -> tuple[torch.Tensor, str, int]:
        if steps >= self.T:
            return self._sample_ddpm(n), "DDPM", self.T
        schedule = NoiseSchedule.from_name("linear", self.T)  # == the seed's linspace(1e-4, 0.02, T)
        x = course_sample(self.model, schedule, n, method="ddim", steps=steps, prediction="eps", device=self.device)
        return x, "DDIM", steps

    def sampling_model(self) -> nn.Module:
        return self.model


# ---- (b) a typical diffusers baseline -------------------------------------------------------------------
class DiffusersReference:
    name = "diffusers"

    def __init__(self, images: torch.Tensor, device: torch.device, *, smoke: bool = False,
                 num_timesteps: int = 1000):
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.training_utils import EMAModel

        self.device, self.images = device, images
        # smoke only: a narrow model (the full one takes ~0.2 s per image and step on one CPU thread)
        channels, groups = ((16, 32, 32), 8) if smoke else ((64, 128, 128), 32)
        self.model = UNet2DModel(
            sample_size=28, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=channels,
            norm_num_groups=groups,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        ).to(device)
        self.scheduler = DDPMScheduler(num_train_timesteps=num_timesteps, beta_schedule="linear")
        self.T = num_timesteps
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.ema = EMAModel(self.model.parameters(), decay=0.999, foreach=True)
        self.bf16 = device.type == "cuda"
        self.batches = EpochBatches(images.shape[0], 8 if smoke else 256, device)
        self.label = "diffusers"
        self.settings = {"T": self.T, "batch_size": self.batches.batch_size, "lr": 1e-3, "optimizer": "AdamW",
                         "block_out_channels": list(channels), "bf16": self.bf16, "ema": 0.999}

    def steps_for_epochs(self, epochs: int) -> int:
        return epochs * self.batches.steps_per_epoch

    def train_step(self) -> tuple[int, torch.Tensor]:
        self.model.train()
        clean = self.images[self.batches.next()]
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, self.T, (clean.shape[0],), device=self.device).long()
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pred = self.model(noisy, timesteps).sample
        loss = F.mse_loss(pred.float(), noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.ema.step(self.model.parameters())
        return clean.shape[0], loss.detach()

    def sampling_model(self) -> nn.Module:
        if getattr(self, "_ema_model", None) is None:
            self._ema_model = copy.deepcopy(self.model).eval()
            self.ema.copy_to(self._ema_model.parameters())
        return self._ema_model

    @torch.no_grad()
    def sample(self, n: int, steps: int) -> tuple[torch.Tensor, str, int]:
        from diffusers import DDIMScheduler, DDPMScheduler

        model = self.sampling_model()
        if steps >= self.T:
            scheduler, sampler = DDPMScheduler.from_config(self.scheduler.config), "DDPM"
            scheduler.set_timesteps(self.T)
        else:
            scheduler, sampler = DDIMScheduler.from_config(self.scheduler.config), "DDIM"
            scheduler.set_timesteps(steps)
        image = torch.randn(n, 1, 28, 28, device=self.device)
        for t in scheduler.timesteps:
            noise_pred = model(image, t).sample
            image = scheduler.step(noise_pred, t, image).prev_sample
        return image.clamp(-1, 1), sampler, len(scheduler.timesteps)


# ---- (c) the course's recipe ----------------------------------------------------------------------------
class CourseReference:
    name = "course"

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, device: torch.device, *, preset: str,
                 steps: int | None = None, smoke: bool = False, overrides: dict | None = None):
        self.preset = get_preset(preset)
        values = {**self.preset.train.to_dict(), **(overrides or {}), "progress": False}
        if steps is not None:
            values["steps"] = steps
        if smoke:  # a tiny batch, like the other references' smoke runs
            values["batch_size"] = min(values["batch_size"], 16)
        config = TrainConfig.from_dict(values)
        self.device = device
        self.trainer = Trainer(config, images, labels if config.class_conditional else None, device=device,
                               out_dir=None)
        self.model = self.trainer.model
        self.T = config.num_timesteps
        self.n_images = images.shape[0]
        self.label = f"course ({preset} preset)"
        # a class-conditional preset (cpu) is drawn as the course draws it: each digit in turn, with its guidance
        self.guidance = self.preset.guidance_scale if config.class_conditional else None
        if self.guidance is not None:
            self.label += f", class-conditional, guidance {self.guidance:g}"
        self.settings = {"preset": preset, **config.to_dict()}

    def steps_for_epochs(self, epochs: int) -> int:
        return math.ceil(epochs * self.n_images / self.trainer.config.batch_size)

    def plan(self, total_steps: int) -> None:
        """Fit the learning-rate schedule (warm-up, then cosine decay) to ``total_steps`` (time budgets)."""
        self.trainer.config.steps = max(int(total_steps), self.trainer.step + 1)

    def train_step(self) -> tuple[int, float]:
        return self.trainer.config.batch_size, self.trainer.train_step()

    def sampling_model(self) -> nn.Module:
        return self.trainer.ema_model

    def sample(self, n: int, steps: int) -> tuple[torch.Tensor, str, int]:
        cfg = self.trainer.config
        if steps >= self.T:
            method, k, sampler, actual = "ddpm", None, "DDPM", self.T
        else:
            method, k, sampler, actual = "ddim", steps, "DDIM", steps
        y = None if self.guidance is None else (torch.arange(n) % 10).to(self.device)
        x = course_sample(self.trainer.ema_model, self.trainer.schedule, n, method=method, steps=k, y=y,
                          guidance_scale=1.0 if self.guidance is None else self.guidance,
                          prediction=cfg.prediction, device=self.device)
        return x, sampler, actual


# ---- the measurement ------------------------------------------------------------------------------------
def train(ref, *, device: torch.device, steps: int | None = None, seconds: float | None = None,
          warmup: int = WARMUP_STEPS) -> dict:
    """Train ``ref`` for ``steps`` steps or until the first step that ends past ``seconds``."""
    done = images = 0
    mark = None  # (time, images) once the warm-up steps are done
    loss = None
    planned = False
    synchronize(device)
    start = time.perf_counter()
    while True:
        now = time.perf_counter()
        if steps is not None and done >= steps:
            break
        if seconds is not None and now - start >= seconds:
            break
        n, loss = ref.train_step()
        done += 1
        images += n
        if done == warmup:
            synchronize(device)
            mark = (time.perf_counter(), images)
        elif seconds is not None and mark is not None and hasattr(ref, "plan"):
            now = time.perf_counter()
            if now - start < CALIBRATE_FRACTION * seconds or not planned:
                rate = (done - warmup) / max(now - mark[0], 1e-9)  # steps per second after the warm-up
                ref.plan(done + rate * max(seconds - (now - start), 0.0))
                planned = True
    synchronize(device)
    end = time.perf_counter()
    wall = end - start
    if mark is not None and done > warmup:
        rate, counted = (images - mark[1]) / max(end - mark[0], 1e-9), f"steps {warmup + 1}..{done}"
    else:
        rate, counted = images / max(wall, 1e-9), f"steps 1..{done} (too few to leave out a warm-up)"
    result = {"train_seconds": wall, "steps": done, "images_seen": images, "images_per_second": rate,
              "images_per_second_counts": counted, "final_loss": None if loss is None else float(loss)}
    if hasattr(ref, "trainer"):
        result["lr_schedule_steps"] = ref.trainer.config.steps
    return result


def generate(ref, n: int, steps: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, str, int, float]:
    torch.manual_seed(seed)
    chunks, sampler, actual = [], None, None
    with _common.Timer(device) as timer:
        for start in range(0, n, SAMPLE_BATCH):
            x, sampler, actual = ref.sample(min(SAMPLE_BATCH, n - start), steps)
            chunks.append(x.float().cpu())
    return torch.cat(chunks), sampler, actual, timer.seconds


def classes_present(histogram: list[int]) -> int:
    return sum(1 for c in histogram if c > 0)


def table_row(date: str, machine: str, command: str, ref: dict, s: dict) -> str:
    m, tr = s["metrics"], ref["train"]
    cells = [date, machine, ref["label"], f"{ref['parameters']:,}", f"{tr['train_seconds']:.0f}", str(tr["steps"]),
             f"{tr['images_per_second']:.0f}", s["sampler"], str(s["steps"]),
             f"{s['sample_seconds']:.1f} ({s['num_samples']})", _common.fmt(m["frechet_distance"]),
             _common.fmt(m["frechet_distance_floor"]), _common.fmt(m["kid"]), f"{m['mean_confidence']:.3f}",
             f"{m['frac_confident_0.9']:.1%}", f"{m['frac_in_distribution']:.1%}",
             str(classes_present(m["class_histogram"])), command]
    return _common.markdown_row(cells)


# ---- the command line -----------------------------------------------------------------------------------
positive_int = _common.positive_int


def sample_count(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 (the metrics need two images), got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def reference_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in REFERENCES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of references; accepted: a comma-separated subset of {', '.join(REFERENCES)} "
            f"(e.g. --only seed,course)")
    return [r for r in REFERENCES if r in names]


def step_counts(text: str) -> list[int]:
    return _common.positive_int_list(text, "step counts (e.g. 1000,50,20; a count >= T means full DDPM)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=reference_list, default=list(REFERENCES), metavar="LIST",
                        help=f"comma-separated references to run (default: {','.join(REFERENCES)})")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--train-seconds", type=positive_seconds, metavar="S",
                        help="train every reference for S seconds (default: seed 10 epochs, diffusers 180 s, "
                             "course 120 s)")
    budget.add_argument("--epochs", type=positive_int, metavar="E", help="train every reference for E epochs")
    budget.add_argument("--steps", type=positive_int, metavar="N", help="train every reference for N steps")
    parser.add_argument("--num-samples", type=sample_count, default=None, metavar="N",
                        help="images drawn per sampler setting (default 2000; smoke 16)")
    parser.add_argument("--sample-steps", type=step_counts, default=None, metavar="LIST",
                        help="sampler step counts (default 1000,50,20; smoke 10,5); >= T means full DDPM")
    parser.add_argument("--course-preset", choices=("auto", *PRESETS), default="auto",
                        help="the course's preset (auto: smoke with --smoke, gpu on CUDA, cpu otherwise)")
    _common.add_run_flags(parser)
    return parser


def budget_for(name: str, args) -> tuple[str, float]:
    if args.train_seconds is not None:
        return "seconds", args.train_seconds
    if args.epochs is not None:
        return "epochs", args.epochs
    if args.steps is not None:
        return "steps", args.steps
    if args.smoke:
        return "steps", SMOKE_STEPS
    return DEFAULT_BUDGET[name]


def measure_reference(name: str, args, images, labels, device, course_preset: str, num_samples: int,
                      sample_steps: list[int], results: dict) -> None:
    """Train reference ``name``, then draw and score ``num_samples`` images at each step count. Its entry enters
    ``results`` once trained, and each sampler setting joins it once scored (so a stop keeps all finished parts)."""
    torch.manual_seed(0)
    kind, amount = budget_for(name, args)
    with _common.Timer(device) as build_timer:
        if name == "seed":
            ref = SeedReference(images, device, smoke=args.smoke)
        elif name == "diffusers":
            ref = DiffusersReference(images, device, smoke=args.smoke)
        else:
            ref = CourseReference(images, labels, device, preset=course_preset, smoke=args.smoke,
                                  steps=int(amount) if kind == "steps" else None)
            if kind == "epochs":
                ref.plan(ref.steps_for_epochs(int(amount)))
    steps = None if kind == "seconds" else (ref.steps_for_epochs(int(amount)) if kind == "epochs" else int(amount))
    seconds = amount if kind == "seconds" else None
    params = parameter_count(ref.model)
    print(f"[{name}] {ref.label}: {params:,} parameters; training for "
          f"{f'{seconds:g} s' if seconds is not None else f'{steps} steps'} ({kind} {amount:g})", flush=True)
    trained = train(ref, device=device, steps=steps, seconds=seconds)
    print(f"[{name}] trained {trained['steps']} steps, {trained['images_seen']:,} images in "
          f"{trained['train_seconds']:.1f} s ({trained['images_per_second']:.0f} img/s), "
          f"last loss {trained['final_loss']:.4f}", flush=True)
    entry = {"label": ref.label, "parameters": params, "settings": ref.settings,
             "budget": {"kind": kind, "amount": amount}, "build_seconds": build_timer.seconds,
             "train": trained, "samples": []}
    results[name] = entry
    for k in sample_steps:
        x, sampler, actual, seconds_taken = generate(ref, num_samples, k, device)
        metrics = _common.score(x, data_dir=args.data_dir)
        entry["samples"].append({"requested_steps": k, "sampler": sampler, "steps": actual,
                                 "num_samples": num_samples, "sample_seconds": seconds_taken,
                                 "metrics": metrics})
        print(f"[{name}] {sampler} {actual} steps: {num_samples} images in {seconds_taken:.1f} s; "
              f"FD {metrics['frechet_distance']:.3f} (floor {metrics['frechet_distance_floor']:.3f}), "
              f"KID {metrics['kid']:.4f}, conf {metrics['mean_confidence']:.3f}, "
              f">0.9 {metrics['frac_confident_0.9']:.1%}, in distribution {metrics['frac_in_distribution']:.1%}, classes {classes_present(metrics['class_histogram'])}",
              flush=True)
    del ref
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args, device = _common.parse_run_args(build_parser(), argv)
    num_samples = args.num_samples or (SMOKE_NUM_SAMPLES if args.smoke else 2000)
    sample_steps = args.sample_steps or list(SMOKE_SAMPLE_STEPS if args.smoke else (1000, 50, 20))
    course_preset = args.course_preset
    if course_preset == "auto":
        course_preset = "smoke" if args.smoke else ("gpu" if device.type == "cuda" else "cpu")

    machine = _common.machine()
    print(f"references {','.join(args.only)} on {machine}; {num_samples} samples at steps {sample_steps}", flush=True)
    images, labels, _ = _common.load_training_data(args, device, SMOKE_LIMIT)

    results = {}
    with _common.StopEarly() as stop:
        for name in args.only:
            measure_reference(name, args, images, labels, device, course_preset, num_samples, sample_steps, results)

    date, command = time.strftime("%Y-%m-%d"), _common.command_line()
    rows = "\n".join(table_row(date, machine, _common.command_cell(command, stop.reason), r, s)
                     for r in results.values() for s in r["samples"])
    result = {"device": str(device), "num_samples": num_samples, "sample_steps": sample_steps,
              "course_preset": course_preset, "threads": torch.get_num_threads(), "references": results}
    _common.record("references", result, rows, smoke=args.smoke, force=args.record, stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
