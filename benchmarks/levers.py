"""Which levers make the course's recipe train faster, or better in the same time? One lever at a time.

Two parts, each starting from one baseline, the course's preset (``gpu`` on CUDA, ``cpu`` on a
CPU, ``smoke`` with ``--smoke``), and changing one thing per row:

**speed** (``--part speed``): training images per second of one step of the recipe's maths (the
same loss as ``Trainer.train_step``: batch, t, noise, label dropout, autocast, ``diffusion_loss``,
backward, gradient clipping, AdamW, the LR warm-up/cosine and the EMA with its decay warm-up). The
baseline step keeps the data on the device, draws the batch there, never reads the loss back
during the timed steps (one read at the end) and uses the Trainer's choices: bf16 autocast and
fused AdamW on CUDA (fp32 and foreach AdamW on a CPU; the Trainer leaves torch's default there, the
for-loop AdamW, which measured the same within noise), a foreach EMA. The rows:

* ``Trainer.train_step``: the package's Trainer as it ships (it reads the loss and the gradient
  norm every step, to name the step of a NaN, and draws batch indices on the CPU for exact resume);
* ``Trainer contiguous`` (CPU) / ``Trainer channels_last`` (CUDA): the Trainer with the other memory format
  than ``TrainConfig.memory_format="auto"`` picks (channels_last on a CPU since 2026-12-04, contiguous elsewhere);
* ``data on host``: images kept in (pinned) CPU memory, the batch gathered there and copied over;
* ``fp32`` (CUDA) / ``bf16`` (CPU): autocast flipped (on CUDA, "fp32" is PyTorch's default: cuDNN runs its
  convolutions in TF32, ``torch.backends.cudnn.allow_tf32``, as every fp32 number of the course on a GPU does);
* ``AdamW foreach`` and ``AdamW for-loop`` (instead of fused; on a CPU: for-loop and fused);
* ``EMA for-loop``: one ``lerp_`` per tensor instead of one foreach call;
* ``torch.compile``: the U-Net compiled (default mode); the one-off compile time is reported apart;
* ``channels_last``: model and batch in NHWC (GroupNorm may convert back; this measures the net effect);
* ``batch x0.5`` / ``batch x2``: throughput only (what they do to quality is in the other part);
* ``2x2 pixel-unshuffle``: the U-Net works on 14x14x4 folded images with one level fewer (the coarsest
  resolution and its attention unchanged), as the ``cpu`` preset does; this changes the network (its
  quality is in the other part). On an H200 the ``gpu`` preset's step was bound by memory traffic
  (layout conversions, GroupNorm, element-wise kernels: ``results/gpu-probe-20261128.json``), which a
  4 times smaller activation map should cut. (For an already folded preset: ``no pixel-unshuffle``.)
* ``CUDA graph``: the whole step (batch draw, forward, backward, clipping, AdamW, EMA) captured once
  and replayed (CUDA only; AdamW ``capturable``, learning rate and EMA weight as device tensors; the
  last row, so that a capture that fails leaves nothing behind for another row).

Every row reports images/s, the ratio to the baseline, the time of its first (warm-up) steps,
the mean loss of its first timed round (a lever must not change the maths: these should agree) and,
on CUDA, the peak memory. With ``--repeats N`` (default 3 on a CPU, 1 on CUDA) every row is timed N
times: the first round row by row, as it is built, then N - 1 rounds that visit every row in turn,
so that a machine whose speed drifts (a CPU warming up, boosting or shared) does not favour the
rows that happen to run late; the row's figure is the median and its note gives the range. (The
first CPU run of 2026-12-02 had one round: its baseline, measured first, came out slower than the
for-loop AdamW it was meant to beat.)

**quality** (``--part quality``): the real ``Trainer`` on a time budget (``--quality-seconds``
each; the cosine LR schedule is fitted to the budget from the measured step time, as in
``references.py``), then ``--quality-samples`` images drawn with DDIM 50 and scored by the
package's metrics (Frechet distance beside the real-data floor, the share classified with
confidence > 0.9, classes present). Rows: the baseline; batch x2 with lr x sqrt(2) and batch x0.5
with lr / sqrt(2) (the square-root rule for Adam); a linear instead of a cosine schedule; eps instead
of v prediction (or v instead of eps); half as many timesteps T (or, below T = 1000, twice as many:
the ``cpu`` preset's T = 500 against 1000; the sampler's DDIM 50 costs the same either way); half and 1.5
times the width; one ResBlock per level instead
of two (or two instead of one); the 2x2 pixel-unshuffle (or its reverse). The baseline model is then
also sampled with DDIM at 10, 20 and 50 steps and with DPM-Solver++(2M) at 10 and 20 steps: the
sampler lever.

    # GPU (one H100/H200): speed about 4 min (14 rows, compile included), quality about 6-7 min: run apart
    python benchmarks/levers.py --part speed
    python benchmarks/levers.py --part quality
    # CPU (2 cores): the speed part on the cpu preset, 3 interleaved rounds of 40 steps per row: about 5 minutes
    python benchmarks/levers.py --part speed --preset cpu
    # CI smoke (seconds; without torch.compile, which alone takes minutes on a CPU)
    python benchmarks/levers.py --smoke

Results: ``benchmarks/results/levers_speed-*.json`` / ``levers_quality-*.json`` and rows under
``## levers_speed`` / ``## levers_quality`` in ``benchmarks/RESULTS.md`` (smoke runs: JSON under
``results/smoke`` only). A lever that fails (say, ``torch.compile`` without a compiler) is recorded
with its error, and the others still run.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import references  # noqa: E402

from ddpm_helpers._validate import skip_value_checks  # noqa: E402
from ddpm_helpers.losses import diffusion_loss, drop_labels  # noqa: E402
from ddpm_helpers.presets import PRESETS, get_preset  # noqa: E402
from ddpm_helpers.train import Trainer, TrainConfig, uses_channels_last  # noqa: E402
from ddpm_helpers.unet import UNet, count_parameters  # noqa: E402

PARTS = ("speed", "quality")
SMOKE_LIMIT = 2000
GRAPH_WARMUP = 3  # eager steps on a side stream before a CUDA graph is captured (PyTorch's recipe)


# ---- the speed part ---------------------------------------------------------------------------------
class FastStep:
    """One training step of the course's maths with every speed lever exposed (see the module docstring).

    ``data``: "device" | "host"; ``amp``: "bf16" | "off"; ``optimizer``: "fused" | "foreach" | "loop";
    ``ema``: "foreach" | "loop"; ``compile``, ``channels_last``, ``cuda_graph``: bools.
    """

    def __init__(self, config: TrainConfig, images: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                 *, data: str = "device", amp: str = "off", optimizer: str = "foreach", ema: str = "foreach",
                 compile: bool = False, channels_last: bool = False, cuda_graph: bool = False,
                 device_schedules: bool | None = None):
        if cuda_graph and device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device")
        self.cfg, self.device, self.data, self.amp, self.ema_kind = config, device, data, amp, ema
        self.channels_last, self.cuda_graph = channels_last, cuda_graph
        torch.manual_seed(config.seed)
        self.schedule = config.make_schedule().to(device)
        self.model = UNet(config.unet_config()).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.params = list(self.model.parameters())
        self.ema_params = list(self.ema_model.parameters())
        conditional = config.class_conditional and labels is not None
        if data == "device":
            self.images = images.to(device)
            self.labels = labels.to(device) if conditional else None
        else:
            pin = device.type == "cuda"
            self.images = images.cpu().pin_memory() if pin else images.cpu()
            self.labels = (labels.cpu().pin_memory() if pin else labels.cpu()) if conditional else None
        # a graph's replay cannot see new Python floats: learning rate and EMA weight live in device tensors
        # (device_schedules=True does that without a graph, so that a CPU test can check those code paths)
        tensors = cuda_graph if device_schedules is None else device_schedules
        lr = torch.tensor(config.lr, device=device) if tensors else config.lr
        self.ema_weight = torch.tensor(0.0, device=device) if tensors else 0.0
        kwargs = {"fused": True} if optimizer == "fused" else {"foreach": optimizer == "foreach"}
        if cuda_graph:
            kwargs["capturable"] = True
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay, **kwargs)
        self.forward = torch.compile(self.model) if compile else self.model
        self.step_count = 0
        self.graph = None
        self.static_loss = None

    def _batch(self):
        cfg, dev = self.cfg, self.device
        n = self.images.shape[0]
        if self.data == "device":
            idx = torch.randint(0, n, (cfg.batch_size,), device=dev)
            x0 = self.images[idx]
            y = None if self.labels is None else self.labels[idx]
        else:
            idx = torch.randint(0, n, (cfg.batch_size,))
            x0 = self.images[idx]
            y = None if self.labels is None else self.labels[idx]
            if dev.type == "cuda":
                x0, y = x0.pin_memory(), None if y is None else y.pin_memory()
            x0 = x0.to(dev, non_blocking=True)
            y = None if y is None else y.to(dev, non_blocking=True)
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        t = torch.randint(0, self.schedule.num_timesteps, (cfg.batch_size,), device=dev)
        noise = torch.randn_like(x0)
        if y is not None:
            y = drop_labels(y, self.model.num_classes, cfg.label_drop_prob)
        return x0, t, noise, y

    def _compute(self) -> torch.Tensor:
        """Batch, loss, backward, clipping, AdamW and EMA: everything a CUDA graph captures."""
        cfg = self.cfg
        x0, t, noise, y = self._batch()
        with skip_value_checks(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp == "bf16",
                                                 cache_enabled=not self.cuda_graph):
            loss = diffusion_loss(self.forward, self.schedule, x0, y, prediction=cfg.prediction, t=t, noise=noise)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=not self.cuda_graph)
        with torch.no_grad():
            if self.ema_kind == "foreach" and isinstance(self.ema_weight, torch.Tensor):
                # _foreach_lerp_ has no overload for one tensor weight: it would read the weight back to the host
                # (.item()), which a CUDA graph's capture forbids. e += w * (p - e) is the same lerp, on the device.
                diff = torch._foreach_sub(self.params, self.ema_params)
                torch._foreach_mul_(diff, self.ema_weight)
                torch._foreach_add_(self.ema_params, diff)
            elif self.ema_kind == "foreach":
                torch._foreach_lerp_(self.ema_params, self.params, self.ema_weight)
            else:
                for e, p in zip(self.ema_params, self.params):
                    e.lerp_(p, self.ema_weight)
        return loss.detach()

    def _set_schedules(self) -> None:
        lr = self.cfg.lr * self.cfg.lr_at(self.step_count)
        decay = min(self.cfg.ema_decay, (1 + self.step_count) / (10 + self.step_count))  # as ddpm_helpers.train.EMA
        group = self.optimizer.param_groups[0]
        if isinstance(group["lr"], torch.Tensor):  # a CUDA graph reads it where it lies: change it in place
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
        if isinstance(self.ema_weight, torch.Tensor):
            self.ema_weight.fill_(1 - decay)
        else:
            self.ema_weight = 1 - decay

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: the optimizer state and cuBLAS handles exist before capture
            for _ in range(GRAPH_WARMUP):
                self._set_schedules()
                self._compute()
                self.step_count += 1
        torch.cuda.current_stream().wait_stream(side)
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph):
                self.static_loss = self._compute()
        finally:  # torch.cuda.graph leaves its capture stream current when capture_end raises: restore ours
            torch.cuda.set_stream(stream)
        self.graph = graph

    def step(self) -> torch.Tensor:
        """One step; returns the loss as a device tensor (not read back)."""
        if self.cuda_graph and self.graph is None:
            self._capture()
        self._set_schedules()
        if self.graph is not None:
            self.graph.replay()
            loss = self.static_loss.clone()
        else:
            loss = self._compute()
        self.step_count += 1
        return loss


class TrainerStep:
    """The package's ``Trainer.train_step`` as it ships, behind the same interface."""

    def __init__(self, config: TrainConfig, images, labels, device):
        self.trainer = Trainer(config, images, labels if config.class_conditional else None, device=device)
        self.model = self.trainer.model

    @property
    def step_count(self) -> int:
        return self.trainer.step

    def step(self) -> torch.Tensor:
        return torch.tensor(self.trainer.train_step())


def warm_up(runner, updates: int) -> None:
    """Step ``runner`` until it has made ``updates`` optimizer updates in all. A CUDA-graph runner's first step makes
    GRAPH_WARMUP eager updates before its capture, besides its own: counting calls instead would leave that row's
    timed steps, and so its mean loss, GRAPH_WARMUP updates ahead of the other rows'."""
    while runner.step_count < updates:
        runner.step()


def unshuffle_lever(config: TrainConfig) -> tuple[str, dict]:
    """Fold 2x2 pixels into 4 channels (28x28x1 -> 14x14x4) with one level fewer, so the coarsest resolution and
    the attention stay where they were; or, for an already folded preset, the reverse. (name, overrides)."""
    mults, attention = tuple(config.channel_mults), config.attention_levels
    if config.pixel_unshuffle == 1 and len(mults) >= 2:
        shifted = None if attention is None else tuple(a - 1 for a in attention if 0 < a < len(mults))
        return ("2x2 pixel-unshuffle", {"pixel_unshuffle": 2, "channel_mults": mults[:-1], "attention_levels": shifted})
    shifted = None if attention is None else tuple(a + 1 for a in attention)
    return ("no pixel-unshuffle", {"pixel_unshuffle": 1, "channel_mults": mults + mults[-1:], "attention_levels": shifted})


def fused_adamw_supported(device: torch.device) -> bool:
    """Whether this torch has a fused AdamW for ``device`` (CUDA always; the CPU from torch 2.4 on)."""
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
        return True
    except RuntimeError:
        return False


def speed_levers(device: torch.device, config: TrainConfig) -> list[tuple[str, dict, dict]]:
    """(name, FastStep keyword arguments, TrainConfig overrides) per row; the first is the baseline."""
    cuda, batch_size = device.type == "cuda", config.batch_size
    base = {"data": "device", "amp": "bf16" if cuda else "off", "optimizer": "fused" if cuda else "foreach",
            "ema": "foreach", "compile": False, "channels_last": False, "cuda_graph": False}
    # the Trainer picks its memory format by device (TrainConfig.memory_format="auto"); this row flips that choice
    other = "channels_last" if not uses_channels_last("auto", device) else "contiguous"
    rows = [("baseline", base, {}), ("Trainer.train_step", None, {}), (f"Trainer {other}", None, {"memory_format": other})]
    if not cuda:  # the Trainer keeps fp32 on a CPU (amp="auto"); these rows time amp="bf16" in both layouts
        rows += [(f"Trainer bf16 {fmt}", None, {"amp": "bf16", "memory_format": fmt})
                 for fmt in ("channels_last", "contiguous")]
    rows.append(("data on host", {**base, "data": "host"}, {}))
    rows.append(("fp32", {**base, "amp": "off"}, {}) if cuda else ("bf16 autocast", {**base, "amp": "bf16"}, {}))
    for opt in ("fused", "foreach", "loop"):
        if opt != base["optimizer"] and (opt != "fused" or fused_adamw_supported(device)):  # torch < 2.4: no CPU fused
            rows.append((f"AdamW {'for-loop' if opt == 'loop' else opt}", {**base, "optimizer": opt}, {}))
    rows += [("EMA for-loop", {**base, "ema": "loop"}, {}), ("torch.compile", {**base, "compile": True}, {}),
             ("channels_last", {**base, "channels_last": True}, {})]
    rows += [("batch x0.5", base, {"batch_size": max(1, batch_size // 2)}),
             ("batch x2", base, {"batch_size": batch_size * 2})]
    name, overrides = unshuffle_lever(config)
    rows.append((name, base, overrides))
    if cuda:  # last: a capture that fails could leave CUDA in a state that no other row should inherit
        rows.append(("CUDA graph", {**base, "cuda_graph": True}, {}))
    return rows


def build_speed_runner(name: str, kwargs: dict | None, overrides: dict, config: TrainConfig, images, labels,
                       device: torch.device, warmup: int, steps: int, memory_base: int = 0) -> tuple[object, dict]:
    """Build one row's runner, run its warm-up and its first timed round: (runner, result).

    Every runner is built from ``config.seed`` and runs its warm-up and first round before the next one is built, so
    all rows of one batch size draw the same batches and noise: their mean losses (first round) must agree. On CUDA
    the row's peak memory leaves out what earlier rows' runners still hold (kept for later rounds): the bytes
    allocated above ``memory_base`` (what was allocated before the first row, the data set) before this row began."""
    cfg = TrainConfig.from_dict({**config.to_dict(), **overrides, "progress": False})
    held = 0
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        held = max(0, torch.cuda.memory_allocated() - memory_base)
    with _common.Timer(device) as build:
        runner = TrainerStep(cfg, images, labels, device) if kwargs is None else FastStep(cfg, images, labels, device,
                                                                                          **kwargs)
    with _common.Timer(device) as first:
        warm_up(runner, warmup)
    warmed = runner.step_count  # more than warmup only where one step makes several updates (a graph's, warmup < 4)
    losses = []
    with _common.Timer(device) as timed:
        for _ in range(steps):
            losses.append(runner.step())
    mean_loss = float(torch.stack([v.to(device).float() for v in losses]).mean())  # the one read-back
    result = {"lever": name, "settings": kwargs, "overrides": overrides, "batch_size": cfg.batch_size,
              "build_seconds": build.seconds, "warmup_steps": warmed, "warmup_seconds": first.seconds,
              "timed_steps": steps, "round_seconds": [timed.seconds], "mean_loss": mean_loss}
    if device.type == "cuda":
        result["peak_memory_gib"] = (torch.cuda.max_memory_allocated() - held) / 2**30
    return runner, result


def time_round(runner, device: torch.device, steps: int) -> float:
    """Seconds of ``steps`` more steps of a runner that is already warm (their losses are read once, not kept)."""
    with _common.Timer(device) as timed:
        loss = None
        for _ in range(steps):
            loss = runner.step()
        if loss is not None:
            float(loss)  # one read-back per round, as in the first round
    return timed.seconds


def summarise_rounds(result: dict) -> dict:
    """Images/s of each round and their median (the row's figure), written into ``result``."""
    rates = [result["batch_size"] * result["timed_steps"] / max(sec, 1e-9) for sec in result["round_seconds"]]
    result["round_images_per_second"] = rates
    result["images_per_second"] = statistics.median(rates)
    result["timed_seconds"] = sum(result["round_seconds"])
    return result


def _error_text(err: Exception, prefix: str = "") -> str:
    return f"{prefix}{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


def run_speed(args, config: TrainConfig, images, labels, device: torch.device, rows: list[dict]) -> None:
    """Every lever's row, appended to ``rows`` once built and timed (so a stop keeps the finished ones; see
    ``_common.StopEarly``). Round 1 builds and times each lever in turn; rounds 2.. (``--repeats``) time every
    lever again, interleaved, so that a drift of the machine (clock boost, heat, another process, caches and
    allocators warming up) spreads over all rows instead of favouring the later ones. A row reports the median
    (:func:`summarise_speed`)."""
    runners = []
    memory_base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
    for name, kwargs, overrides in speed_levers(device, config):
        if args.only and name not in args.only and name != "baseline":
            continue
        if args.smoke and name == "torch.compile" and not (args.only and name in args.only):
            continue  # compiling takes minutes on a CPU: not in CI's seconds-long smoke run
        print(f"[speed] {name} ...", flush=True)
        try:
            runner, row = build_speed_runner(name, kwargs, overrides, config, images, labels, device, args.warmup,
                                             args.speed_steps, memory_base)
            print(f"[speed] {name}: round 1 {summarise_rounds(row)['images_per_second']:.0f} img/s, first "
                  f"{args.warmup} steps {row['warmup_seconds']:.1f} s, mean loss {row['mean_loss']:.4f}", flush=True)
        except Exception as err:  # a lever that fails is a result too; the others still run
            traceback.print_exc()
            runner, row = None, {"lever": name, "settings": kwargs, "overrides": overrides, "error": _error_text(err)}
        rows.append(row)
        runners.append(runner if args.repeats > 1 else None)  # with one round, free it now (as a GPU run wants)
        del runner
    for r in range(2, args.repeats + 1):
        print(f"[speed] round {r} of {args.repeats} ...", flush=True)
        for runner, row in zip(runners, rows):
            if runner is None or "error" in row:
                continue
            try:
                row["round_seconds"].append(time_round(runner, device, args.speed_steps))
            except Exception as err:
                traceback.print_exc()
                row["error"] = _error_text(err, f"round {r}: ")
    runners.clear()


def summarise_speed(rows: list[dict]) -> list[dict]:
    """Each timed row's median rate over the rounds it has, and its speed-up over the first row that ran."""
    base = None
    for row in rows:
        if "error" in row:
            print(f"[speed] {row['lever']}: failed ({row['error']})", flush=True)
            continue
        summarise_rounds(row)
        base = base or row["images_per_second"]  # the baseline's (the first row that ran)
        row["speedup"] = row["images_per_second"] / base
        rates = row["round_images_per_second"]
        print(f"[speed] {row['lever']}: {row['images_per_second']:.0f} img/s (x{row['speedup']:.2f}; "
              f"{len(rates)} round(s), {min(rates):.0f}-{max(rates):.0f}), mean loss {row['mean_loss']:.4f}",
              flush=True)
    return rows


def rounds_note(r: dict) -> str:
    rates = r.get("round_images_per_second", [])
    return f"median of {len(rates)} rounds ({min(rates):.0f}-{max(rates):.0f})" if len(rates) > 1 else ""


def speed_row(date: str, machine: str, command: str, preset: str, r: dict) -> str:
    if "error" in r:
        cells = [date, machine, preset, r["lever"], "-", "-", "-", "-", "-", "-", f"failed: {r['error']}"]
    else:
        mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
        cells = [date, machine, preset, r["lever"], str(r["batch_size"]), f"{r['images_per_second']:.0f}",
                 f"{r.get('speedup', 1.0):.2f}", f"{r['warmup_seconds']:.1f} ({r['warmup_steps']})",
                 f"{r['mean_loss']:.4f}", mem, rounds_note(r)]
    cells.append(command)
    return _common.markdown_row(cells)


# ---- the quality part -------------------------------------------------------------------------------
def quality_levers(config: TrainConfig) -> list[tuple[str, dict]]:
    """(name, TrainConfig overrides) per row; the first is the baseline."""
    root2 = math.sqrt(2.0)
    other_prediction = "eps" if config.prediction == "v" else "v"
    other_schedule = "linear" if config.schedule == "cosine" else "cosine"
    narrow, wide = max(8, config.base_channels // 2 // 8 * 8), int(config.base_channels * 1.5) // 8 * 8
    depth = 1 if config.num_res_blocks > 1 else 2
    timesteps = config.num_timesteps // 2 if config.num_timesteps >= 1000 else config.num_timesteps * 2
    return [
        ("baseline", {}),
        ("batch x2, lr x sqrt2", {"batch_size": config.batch_size * 2, "lr": config.lr * root2}),
        ("batch x0.5, lr / sqrt2", {"batch_size": max(1, config.batch_size // 2), "lr": config.lr / root2}),
        (f"{other_schedule} schedule", {"schedule": other_schedule}),
        (f"{other_prediction}-prediction", {"prediction": other_prediction}),
        (f"T = {timesteps}", {"num_timesteps": timesteps}),
        (f"width {narrow}", {"base_channels": narrow}),
        (f"width {wide}", {"base_channels": wide}),
        (f"{depth} ResBlock(s) per level", {"num_res_blocks": depth}),
        unshuffle_lever(config),
    ]


def run_quality(args, preset: str, images, labels, device: torch.device, data_dir, rows: list[dict]) -> None:
    """Every quality lever's row, appended to ``rows`` once trained, sampled and scored."""
    base_cfg = get_preset(preset).train
    guidance = get_preset(preset).guidance_scale
    for name, overrides in quality_levers(base_cfg):
        if args.only and name not in args.only and name != "baseline":
            continue
        print(f"[quality] {name} ...", flush=True)
        try:
            torch.manual_seed(0)
            ref = references.CourseReference(images, labels, device, preset=preset, smoke=args.smoke,
                                             overrides=overrides,
                                             steps=args.quality_steps)
            trained = references.train(ref, device=device,
                                       steps=args.quality_steps, seconds=None if args.quality_steps else
                                       args.quality_seconds)
            cfg = ref.trainer.config
            counts = (2, 5) if args.smoke else (10, 20, 50)  # DDIM steps; DPM++ at the smaller ones
            draws = [("ddim", counts[-1])]
            if not rows:  # the baseline: the sampler lever too
                draws = [("ddim", k) for k in counts] + [("dpm++2m", k) for k in counts[:-1]]
            scored = []
            for method, k in draws:
                k = min(k, cfg.num_timesteps)
                torch.manual_seed(1)
                x, seconds = _common.draw_samples(ref.trainer.ema_model, ref.trainer.schedule, cfg,
                                                  args.quality_samples, method, k, device, guidance=guidance)
                metrics = _common.score(x, data_dir=data_dir)
                scored.append({"method": method, "steps": k, "sample_seconds": seconds, "metrics": metrics})
                print(f"[quality] {name}: {method} {k}: FD {metrics['frechet_distance']:.3f} "
                      f"(floor {metrics['frechet_distance_floor']:.3f}), >0.9 {metrics['frac_confident_0.9']:.1%}, "
                      f"in distribution {metrics['frac_in_distribution']:.1%}",
                      flush=True)
            row = {"lever": name, "overrides": overrides, "parameters": count_parameters(ref.model),
                   "train": trained, "samples": scored, "guidance": guidance if cfg.class_conditional else None}
            del ref
        except Exception as err:
            traceback.print_exc()
            row = {"lever": name, "overrides": overrides,
                   "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]}
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def quality_rows(date: str, machine: str, command: str, preset: str, r: dict) -> list[str]:
    out = []
    if "error" in r:
        cells = [date, machine, preset, r["lever"]] + ["-"] * 9 + [f"failed: {r['error']}", command]
        return [_common.markdown_row(cells)]
    tr = r["train"]
    for s in r["samples"]:
        m = s["metrics"]
        sampler = "DPM++(2M)" if s["method"] == "dpm++2m" else s["method"].upper()
        cells = [date, machine, preset, r["lever"], f"{r['parameters']:,}", f"{tr['train_seconds']:.0f}",
                 str(tr["steps"]), f"{sampler} {s['steps']}", f"{s['sample_seconds']:.1f} ({m['num_samples']})",
                 f"{_common.fmt(m['frechet_distance'])} / {_common.fmt(m['frechet_distance_floor'])} "
                 f"({m['frechet_ratio']:.1f}x)", f"{m['frac_confident_0.9']:.1%}", f"{m['frac_in_distribution']:.1%}",
                 str(references.classes_present(m["class_histogram"])),
                 "-" if r.get("guidance") is None else f"{r['guidance']:g}", "", command]
        out.append(_common.markdown_row(cells))
    return out


# ---- the command line -------------------------------------------------------------------------------
def part_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(n not in PARTS for n in names):
        raise argparse.ArgumentTypeError(f"must be a comma-separated subset of {', '.join(PARTS)}, got {text!r}")
    return [p for p in PARTS if p in names]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", type=part_list, default=list(PARTS), metavar="LIST",
                        help="speed, quality or speed,quality (default: both)")
    parser.add_argument("--only", type=lambda s: [v.strip() for v in s.split(",") if v.strip()], default=None,
                        metavar="LEVERS", help="run only these rows (by name; the baseline always runs)")
    parser.add_argument("--preset", choices=("auto", *PRESETS), default="auto",
                        help="the baseline recipe (auto: smoke with --smoke, gpu on CUDA, cpu otherwise)")
    parser.add_argument("--warmup", type=_common.positive_int, default=None, metavar="N",
                        help="untimed steps before each speed row (default 10; smoke 2)")
    parser.add_argument("--speed-steps", type=_common.positive_int, default=None, metavar="N",
                        help="timed steps per speed row (default 200 on CUDA, 40 on a CPU; smoke 3)")
    parser.add_argument("--repeats", type=_common.positive_int, default=None, metavar="N",
                        help="timed rounds per speed row, interleaved across rows; a row reports the median "
                             "(default 1 on CUDA, 3 on a CPU, whose speed drifts more; smoke 2)")
    parser.add_argument("--quality-seconds", type=references.positive_seconds, default=30.0, metavar="S",
                        help="training budget per quality row (default 30)")
    parser.add_argument("--quality-steps", type=_common.positive_int, default=None, metavar="N",
                        help="train each quality row for N steps instead of a time budget (smoke: 4)")
    parser.add_argument("--quality-samples", type=references.sample_count, default=None, metavar="N",
                        help="images scored per quality row and sampler (default 1000; smoke 16)")
    _common.add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args, device = _common.parse_run_args(build_parser(), argv)
    preset = args.preset if args.preset != "auto" else (
        "smoke" if args.smoke else ("gpu" if device.type == "cuda" else "cpu"))
    args.warmup = args.warmup or (2 if args.smoke else 10)
    args.speed_steps = args.speed_steps or (3 if args.smoke else (200 if device.type == "cuda" else 40))
    args.repeats = args.repeats or (2 if args.smoke else (1 if device.type == "cuda" else 3))
    args.quality_samples = args.quality_samples or (16 if args.smoke else 1000)
    if args.smoke and args.quality_steps is None:
        args.quality_steps = 4
    config = get_preset(preset).train
    known = [n for n, _, _ in speed_levers(device, config)] + [n for n, _ in quality_levers(config)]
    unknown = [n for n in (args.only or []) if n not in known]
    if unknown:  # a misspelt name would otherwise run the baseline alone, silently
        build_parser().error(f"--only: no lever named {', '.join(map(repr, unknown))} for the {preset!r} preset on "
                             f"{device.type}; the levers are: {', '.join(dict.fromkeys(known))}")
    data_dir = args.data_dir
    machine = _common.machine()
    print(f"levers ({','.join(args.part)}) of the {preset!r} preset on {machine}", flush=True)
    images, labels, load_seconds = _common.load_training_data(args, device, SMOKE_LIMIT)
    if args.smoke:
        config = TrainConfig.from_dict({**config.to_dict(), "batch_size": min(config.batch_size, 16)})
    date, command = time.strftime("%Y-%m-%d"), _common.command_line()
    common = {"device": str(device), "preset": preset, "threads": torch.get_num_threads(),
              "data_load_seconds": load_seconds, "config": config.to_dict()}
    stop = None
    if "speed" in args.part:
        rows = []
        with _common.StopEarly() as stop:
            run_speed(args, config, images, labels, device, rows)
        summarise_speed(rows)
        cell = _common.command_cell(command, stop.reason)
        table = "\n".join(speed_row(date, machine, cell, preset, r) for r in rows)
        _common.record("levers_speed", {**common, "warmup": args.warmup, "speed_steps": args.speed_steps,
                                        "repeats": args.repeats,
                                        "rows": rows}, table, smoke=args.smoke, force=args.record, stopped=stop.reason)
    if "quality" in args.part and (stop is None or stop.reason is None):
        rows = []
        with _common.StopEarly() as stop:
            run_quality(args, preset, images, labels, device, data_dir, rows)
        cell = _common.command_cell(command, stop.reason)
        table = "\n".join(line for r in rows for line in quality_rows(date, machine, cell, preset, r))
        _common.record("levers_quality", {**common, "quality_seconds": args.quality_seconds,
                                          "quality_steps": args.quality_steps,
                                          "quality_samples": args.quality_samples, "rows": rows},
                       table, smoke=args.smoke, force=args.record, stopped=stop.reason)
    return stop.exit_code if stop is not None else 0


if __name__ == "__main__":
    sys.exit(main())
