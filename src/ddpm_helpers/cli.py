"""Command line: ``python -m ddpm_helpers train|sample|evaluate``.

    python -m ddpm_helpers train --preset smoke --out runs/smoke     # ~1 min on a CPU
    python -m ddpm_helpers sample --run runs/smoke --num 2000        # -> runs/smoke/samples-ddim50-n2000-seed0/
    python -m ddpm_helpers evaluate --samples runs/smoke/samples-ddim50-n2000-seed0/samples.pt  # -> samples_metrics.json

``train`` writes checkpoints (resuming from the newest one in ``--out``), ``config.json`` (the full
config and library versions), ``loss.png``, ``samples.png``, ``samples.pt`` and ``metrics.json``.
``sample`` writes into a sub-folder of the run named after its settings, and ``evaluate`` writes
``<samples>_metrics.json`` beside the samples, so neither overwrites what training wrote.
Ctrl-C saves a checkpoint first (``train``) or keeps the finished batches (``sample``); running the same command
again resumes. ``--minutes M`` instead of ``--steps``
times a few steps on this machine first and trains as many steps as fit in M minutes (a slow laptop trains fewer,
a fast one more; the cosine learning rate is fitted to that length, and ``config.json`` records it).

Data-parallel on several GPUs (or CPU processes), with PyTorch's launcher; ``--batch-size`` is per
process, so the global batch is N times larger (see :mod:`ddpm_helpers.distributed`)::

    torchrun --standalone --nproc_per_node 4 -m ddpm_helpers train --preset gpu
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

from . import distributed
from ._validate import check_float
from .checkpoint import (CheckpointError, checkpoint_path, latest_checkpoint, list_checkpoints, save_atomically,
                         write_atomically)
from .data import DataCorruptError, DataNotFoundError, load_mnist
from .presets import PRESETS, get_preset
from .sampling import METHODS, sample
from .train import Trainer, TrainConfig, library_versions, select_device, seed_everything


class CLIError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CLIError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        words = {"true": True, "false": False, "none": None, "null": None}  # as a shell user might write them
        if value.strip().lower() in words:
            out[key] = words[value.strip().lower()]
            continue
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _command_line() -> str:
    """The command as the user typed it (``python -m ddpm_helpers ...``, not the path of ``__main__.py``)."""
    if sys.argv and Path(sys.argv[0]).name == "__main__.py":
        return " ".join(["python -m ddpm_helpers", *sys.argv[1:]])
    return " ".join(sys.argv)


def _write_json(path: Path, data: dict) -> None:
    write_atomically({path: _json(data)})


def _checkpoint_from(args) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    if not list_checkpoints(args.run):
        raise CLIError(f"no checkpoint found in --run {args.run!r}; train first or pass --checkpoint")
    newest = latest_checkpoint(args.run)  # the newest readable one, as training resumes from (warns of the others)
    if newest is None:
        raise CLIError(f"no readable checkpoint in --run {args.run!r} (see the warnings above); pass --checkpoint")
    return Path(newest["path"])


SAMPLE_BATCH = 500   # images per call of sample(): bounds memory, and is the unit a stopped `sample` keeps


def _generate(model, schedule, config: TrainConfig, num: int, method: str, steps: int | None, eta: float,
              seed: int, device, digit: int | None, guidance: float,
              keep: KeptBatches | None = None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``num`` samples, drawn in batches of :data:`SAMPLE_BATCH` from one generator seeded with ``seed``; with
    ``keep``, finished batches are saved as they come and those a stopped run left are read back (see
    :class:`KeptBatches`); with ``progress``, a bar over each batch's steps and a line after each batch."""
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = None
    if config.class_conditional:
        labels = (torch.arange(num) % 10) if digit is None else torch.full((num,), digit)
        labels = labels.to(device)
    images = [] if keep is None else keep.load(gen)
    for start in range(SAMPLE_BATCH * len(images), num, SAMPLE_BATCH):
        n = min(SAMPLE_BATCH, num - start)
        began = time.perf_counter()
        images.append(sample(model, schedule, n, method=method, steps=steps if method != "ddpm" else None,
                             eta=eta, prediction=config.prediction, generator=gen, device=device,
                             y=None if labels is None else labels[start:start + n], guidance_scale=guidance,
                             progress=progress).cpu())
        if keep is not None and start + n < num:   # the last batch goes straight into the finished set
            keep.save(len(images), images[-1], gen, time.perf_counter() - began)
        if progress and num > SAMPLE_BATCH:
            print(f"{start + n} of {num} samples drawn ({time.perf_counter() - began:.1f} s for the last "
                  f"{n})", file=sys.stderr, flush=True)
    return torch.cat(images), None if labels is None else labels.cpu()


class KeptBatches:
    """The finished batches of a `sample` run, kept in ``folder`` (``<out>/.partial``) until the whole set is written.

    Each batch file holds its images, the run's ``settings`` and the generator's state after the batch. A run of the
    same settings reads them back and draws only the rest, from that state: a stop loses at most the batch being
    drawn, and the images equal those of a run never stopped."""

    def __init__(self, folder: Path, settings: dict, command: str = "sample") -> None:
        if folder.exists() and not folder.is_dir():  # checked now, not after the first batch is drawn
            raise CLIError(f"{folder} is a file, but `{command}` keeps its finished batches in a folder of that "
                           "name: move the file away, or give another --out")
        self.folder, self.settings, self.seconds_before = folder, settings, 0.0

    def load(self, gen: torch.Generator) -> list[torch.Tensor]:
        """The kept batches of these settings, in order, with ``gen`` set to the state after the last; batches of
        other settings, or damaged ones, are removed (new ones will be drawn in their place)."""
        files = sorted(self.folder.glob("batch_*.pt")) if self.folder.is_dir() else []
        batches = []
        for number, file in enumerate(files, 1):
            try:
                saved = torch.load(file, map_location="cpu", weights_only=True)
                usable = file.name == f"batch_{number:06d}.pt" and saved["settings"] == self.settings
            except Exception:  # unreadable, or not one of ours: never trusted
                usable = False
            if not usable:
                break
            batches.append(saved)
        if len(batches) < len(files):
            print(f"note: {len(files) - len(batches)} kept batch(es) in {self.folder} were drawn with other settings "
                  "or are damaged; drawing them again", file=sys.stderr)
            for file in files[len(batches):]:
                file.unlink()
        if batches:
            gen.set_state(batches[-1]["rng"])
            print(f"going on from the {sum(len(b['images']) for b in batches)} samples a stopped run kept in "
                  f"{self.folder}", file=sys.stderr)
        self.seconds_before = sum(b["seconds"] for b in batches)
        return [b["images"] for b in batches]

    def save(self, number: int, images: torch.Tensor, gen: torch.Generator, seconds: float) -> None:
        save_atomically({"settings": self.settings, "images": images, "rng": gen.get_state(), "seconds": seconds},
                        self.folder / f"batch_{number:06d}.pt")

    def remove(self) -> None:
        """Once the whole set is written, or when a stopped run finished no batch."""
        if self.folder.is_dir():
            for file in self.folder.glob("batch_*.pt"):
                file.unlink()
            with contextlib.suppress(OSError):   # a file of someone else's stays, and so does the folder
                self.folder.rmdir()


def _write_then_forget(keep: KeptBatches, files: dict) -> None:
    """Write the finished set (:func:`write_atomically`), then remove the batches it was made of. A Ctrl-C during
    the write is delivered only once the whole set is in place, so the batches are spent then too."""
    try:
        write_atomically(files)
    except KeyboardInterrupt:
        keep.remove()
        raise
    keep.remove()


def _sample_files(out: Path, images: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """samples.pt and samples.png, as :func:`write_atomically` takes them: the caller adds its JSON and writes the
    set in one go, so that a stop never leaves new samples beside an old grid or old metrics."""
    from .viz import grid_png

    obj = {"images": images, "labels": labels} if labels is not None else images
    return {out / "samples.pt": lambda fh: torch.save(obj, fh), out / "samples.png": _bytes(grid_png(images[:64], 8))}


def _bytes(data: bytes):
    return lambda fh: fh.write(data)


def _json(data: dict):
    return _bytes((json.dumps(data, indent=2) + "\n").encode())


def _load_samples(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CLIError(f"--samples file not found: {path}") from None
    except Exception as err:
        raise CLIError(f"--samples {path} cannot be read ({err})") from None
    if isinstance(obj, dict) and "images" not in obj:
        raise CLIError(f"--samples {path} holds a dict without an 'images' entry (keys: {sorted(map(str, obj))}); "
                       "expected an (N, 1, 28, 28) tensor or {'images': ..., 'labels': ...} as `sample` writes")
    images, labels = (obj["images"], obj.get("labels")) if isinstance(obj, dict) else (obj, None)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        raise CLIError(f"--samples must hold an (N, 1, 28, 28) tensor in [-1, 1], got {getattr(images, 'shape', images)}")
    return images.float(), labels


PROBE_STEPS = (3, 10)  # --minutes: untimed warm-up steps, then timed steps, of a throwaway trainer


def steps_for_minutes(config: TrainConfig, images, labels, device, minutes: float) -> tuple[int, float]:
    """(steps, seconds per step): how many steps of ``config`` fit in ``minutes`` on ``device``, from timing a
    throwaway trainer (its first steps are slower: allocation, autotuning, so they are not timed)."""
    minutes = check_float("minutes", minutes, min_value=0.0, min_inclusive=False)
    probe = Trainer(replace(config, progress=False), images, labels, device=device)
    warmup, timed = PROBE_STEPS
    for _ in range(warmup):
        probe.train_step()
    start = time.perf_counter()
    for _ in range(timed):
        probe.train_step()  # reads the loss back: on a GPU the step has finished when it returns
    seconds = (time.perf_counter() - start) / timed
    del probe
    return max(1, int(minutes * 60 / seconds)), seconds


def cmd_train(args) -> int:
    preset = get_preset(args.preset, **_parse_overrides(args.set))
    for name in ("num_samples", "eval_samples", "steps", "batch_size"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.eval_samples == 1:  # checked now, not after the training
        raise CLIError("--eval-samples must be at least 2 (a covariance of the scored images needs two), got 1")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise CLIError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if "progress" in _parse_overrides(args.set):
        raise CLIError("--set progress=... is not used by the command line: the progress bar is on unless --quiet")
    if args.minutes is not None:
        if not (math.isfinite(args.minutes) and args.minutes > 0):
            raise CLIError(f"--minutes must be a positive number of minutes, such as 9 or 0.5, got {args.minutes}")
        if args.steps is not None or "steps" in _parse_overrides(args.set):
            raise CLIError("--minutes and --steps both set the length of the run: give one of them")
    if args.num_samples is not None or args.eval_samples is not None:
        preset = replace(preset, num_samples=args.num_samples or preset.num_samples,
                         eval_samples=args.eval_samples or preset.eval_samples)
    overrides = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}.items()
                 if v is not None}
    config = TrainConfig.from_dict({**preset.train.to_dict(), **overrides, "progress": not args.quiet})
    if config.steps < 1 and args.minutes is None:
        raise CLIError(f"the run must train at least 1 step, got steps={config.steps} (from --set steps)")
    if preset.sampler != "ddpm" and (preset.sampler_steps or 0) > config.num_timesteps:  # before training, not after
        raise CLIError(f"the {preset.name!r} preset samples with {preset.sampler_steps} {preset.sampler} steps after "
                       f"training, more than num_timesteps={config.num_timesteps}: give at least "
                       f"num_timesteps={preset.sampler_steps}")
    device = distributed.init(select_device(args.device))  # under torchrun: join the group, take this rank's GPU
    main_rank, world = distributed.is_main(), distributed.world_size()
    if args.minutes is not None and world > 1:
        raise CLIError("--minutes needs a single process (each process would time its own steps); under torchrun "
                       "give --steps")
    out = Path(args.out or f"runs/{preset.name}")
    seed_everything(config.seed)
    if not main_rank:  # rank 0 downloads the data and moves old checkpoints first; the others wait
        distributed.barrier()
    images, labels = load_mnist("train", args.data_dir, allow_subset=preset.allow_subset and not args.no_subset,
                                limit=preset.data_limit)
    if main_rank and args.restart and list_checkpoints(out):  # keep the old run, out of the way of the new one
        backup = out / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
        backup.mkdir(parents=True)
        for path in list_checkpoints(out):
            path.rename(backup / path.name)
        print(f"--restart: moved the earlier checkpoints to {backup}")
    if main_rank:
        distributed.barrier()
    budget = {}
    if args.minutes is not None:
        earlier = latest_checkpoint(out) if not args.restart else None
        if earlier is not None:  # a resumed run keeps the length it was given when it started
            config = replace(config, steps=int(earlier["config"]["steps"]))
            budget = _earlier_budget(out)  # and config.json keeps the budget that fitted it
            print(f"--minutes: resuming a run of {config.steps} steps (its length was fitted when it started; "
                  "--restart starts over)")
        else:
            steps, seconds = steps_for_minutes(config, images, labels, device, args.minutes)
            config = replace(config, steps=steps)
            budget = {"minutes": args.minutes, "probe_seconds_per_step": round(seconds, 5)}
            print(f"--minutes {args.minutes:g}: {seconds:.3f} s per step here (timed over {PROBE_STEPS[1]} steps), "
                  f"so {steps} steps")
            seed_everything(config.seed)  # the run starts from the state it would have had without the timing
    trainer = Trainer(config, images, labels, out_dir=out, device=device, resume=not args.restart)
    if main_rank:
        _write_json(out / "config.json", {"preset": preset.name, "train": config.to_dict(), "device": str(device),
                                          "world_size": world, "global_batch_size": config.batch_size * world,
                                          "command": _command_line(), "versions": library_versions(),
                                          "num_train_images": int(images.shape[0]), **budget})
        where = f"{world} processes ({distributed.backend_for(device)}), global batch {config.batch_size * world}" \
            if world > 1 else str(device)
        print(f"training preset {preset.name!r} on {where} for {config.steps} steps -> {out}")
    start = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - start
    distributed.barrier()  # every rank has taken its last step and rank 0 has saved it
    if not main_rank:  # the rest (samples, metrics) is rank 0's work alone
        return 0
    import matplotlib.pyplot as plt

    from .viz import plot_loss

    figure, png = plot_loss(trainer.history, smooth=min(50, max(1, len(trainer.history) // 10))), io.BytesIO()
    figure.savefig(png, dpi=100, format="png")
    plt.close(figure)
    write_atomically({out / "loss.png": _bytes(png.getvalue())})
    start = time.perf_counter()
    samples, sample_labels = _generate(trainer.ema_model, trainer.schedule, config, preset.num_samples,
                                       preset.sampler, preset.sampler_steps, 0.0, config.seed, device, None,
                                       _guidance(preset, config), progress=config.progress)
    sample_seconds = time.perf_counter() - start
    # the scored set's finished batches are kept (`sample`'s way): a stop while scoring, then the same command, draws
    # only the rest; keyed by the final checkpoint's content (fit() has saved it), so a run trained further or afresh
    # draws anew
    settings = {"checkpoint_sha256": _sha256(checkpoint_path(out, trainer.step)), "device": device.type,
                "batch": SAMPLE_BATCH, "num": preset.eval_samples, "method": preset.sampler,
                "steps": preset.sampler_steps, "seed": config.seed + 1, "guidance_scale": _guidance(preset, config)}
    keep = KeptBatches(out / ".partial-eval", settings, command="train")
    metrics = _evaluate(trainer.ema_model, trainer.schedule, config, preset, device, args.data_dir, keep)
    metrics.update({"train_seconds_this_session": round(train_seconds, 2), "steps": trainer.step,
                    "final_loss_mean_50": sum(trainer.history[-50:]) / max(1, len(trainer.history[-50:])),
                    "sample_seconds": round(sample_seconds, 2), "device": str(device)})
    # one set: a stop while sampling or scoring leaves the earlier set whole (its metrics.json names its steps)
    _write_then_forget(keep, {**_sample_files(out, samples, sample_labels), out / "metrics.json": _json(metrics)})
    print(json.dumps({k: v for k, v in metrics.items() if k != "class_histogram"}, indent=1))
    print(f"wrote {out}/samples.png, {out}/samples.pt, {out}/metrics.json and checkpoints")
    return 0


def _evaluate(model, schedule, config, preset, device, data_dir, keep: KeptBatches) -> dict:
    from .metrics import evaluate_samples

    images, labels = _generate(model, schedule, config, preset.eval_samples, preset.sampler, preset.sampler_steps,
                               0.0, config.seed + 1, device, None, _guidance(preset, config), keep=keep,
                               progress=config.progress)
    result = evaluate_samples(images, labels, root=data_dir)
    result.update({"sampler": preset.sampler, "sampler_steps": preset.sampler_steps,
                   "guidance_scale": preset.guidance_scale if config.class_conditional else None})
    return result


def _guidance(preset, config: TrainConfig) -> float:
    """The preset's guidance scale for a class-conditional model; 1 (none) for one made unconditional with
    ``--set class_conditional=False``, which has no labels to be guided towards."""
    return preset.guidance_scale if config.class_conditional else 1.0


def _earlier_budget(out: Path) -> dict:
    """``minutes`` and ``probe_seconds_per_step`` from the ``config.json`` of the run being resumed, if any."""
    try:
        earlier = json.loads((out / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: earlier[k] for k in ("minutes", "probe_seconds_per_step") if k in earlier} \
        if isinstance(earlier, dict) else {}


SAMPLE_STEPS = 50  # `sample`'s --steps for ddim and dpm++2m, unless given


def sample_folder_name(args, num_timesteps: int) -> str:
    """``samples-ddim50-n2000-seed0``, plus ``-eta``, ``-digit`` and ``-s`` (the guidance scale) when set: one folder
    per setting."""
    steps = num_timesteps if args.method == "ddpm" else (SAMPLE_STEPS if args.steps is None else args.steps)
    name = f"samples-{args.method}{steps}-n{args.num}"
    name += f"-eta{args.eta:g}" if args.eta else ""
    name += f"-digit{args.digit}" if args.digit is not None else ""
    name += f"-s{args.guidance_scale:g}" if args.guidance_scale != 1.0 else ""
    return f"{name}-seed{args.seed}"


def cmd_sample(args) -> int:
    device = select_device(args.device)
    path = _checkpoint_from(args)
    model, schedule, config = Trainer.load_model(path, device=device)
    if args.method == "ddpm":
        if args.steps not in (None, schedule.num_timesteps):
            raise CLIError(f"--steps applies to --method ddim and dpm++2m; ddpm always runs all "
                           f"{schedule.num_timesteps} steps of this model, got --steps {args.steps}: leave it out")
        args.steps = schedule.num_timesteps   # recorded as run in sample_config.json
    elif args.steps is None:
        args.steps = SAMPLE_STEPS
    if args.num < 1:
        raise CLIError(f"--num must be a positive integer, got {args.num}")
    if args.digit is not None and not 0 <= args.digit <= 9:
        raise CLIError(f"--digit must be a digit from 0 to 9, got {args.digit}")
    if not 0 <= args.seed < 2**63:
        raise CLIError(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if args.method != "ddpm" and args.steps > schedule.num_timesteps:
        default = f" ({SAMPLE_STEPS} is the default)" if args.steps == SAMPLE_STEPS else ""
        raise CLIError(f"--steps {args.steps} is more than this model's num_timesteps={schedule.num_timesteps}"
                       f"{default}: give --steps {schedule.num_timesteps} or fewer")
    if not (math.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        raise CLIError(f"--guidance-scale must be a number of at least 0, got {args.guidance_scale:g}")
    if args.guidance_scale != 1.0 and not config.class_conditional:
        raise CLIError(f"--guidance-scale {args.guidance_scale:g} needs a class-conditional model (guidance mixes "
                       "conditional and unconditional predictions); this one is unconditional")
    if args.eta and args.method != "ddim":
        raise CLIError(f"--eta applies to --method ddim only (ddpm always adds its noise, dpm++2m never does), "
                       f"got --eta {args.eta:g} with --method {args.method}")
    # the rest of sample()'s checks, before the output folder is made (a rejected call leaves nothing behind)
    if args.method != "ddpm" and args.steps < 1:
        raise CLIError(f"--steps must be a positive integer, got {args.steps}")
    if not (math.isfinite(args.eta) and 0 <= args.eta <= 1):
        raise CLIError(f"--eta must be a number from 0 to 1, got {args.eta:g}")
    if args.digit is not None and not config.class_conditional:
        raise CLIError("--digit needs a class-conditional model (trained with class_conditional=True)")
    out = Path(args.out) if args.out else path.parent / sample_folder_name(args, schedule.num_timesteps)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CLIError(f"--out must be a folder (new or existing), got {str(out)!r}, which is a file or lies "
                       f"under one") from err
    # what must match for a rerun to go on from the batches a stopped run kept: the weights (by content, as a
    # rerun of `train` may rewrite a checkpoint), every setting that changes the images, and the kind of device
    # (a CUDA generator draws other numbers than a CPU one)
    settings = {"checkpoint_sha256": _sha256(path), "device": device.type, "batch": SAMPLE_BATCH,
                **{k: getattr(args, k) for k in ("num", "method", "steps", "eta", "seed", "digit", "guidance_scale")}}
    keep = KeptBatches(out / ".partial", settings)
    start = time.perf_counter()
    try:
        images, labels = _generate(model, schedule, config, args.num, args.method, args.steps, args.eta, args.seed,
                                   device, args.digit, args.guidance_scale, keep=keep, progress=not args.quiet)
    except KeyboardInterrupt:
        if not any(keep.folder.glob("batch_*.pt")):
            keep.remove()
            if created and not any(out.iterdir()):
                out.rmdir()  # the folder made for this run, still empty
        raise
    seconds = time.perf_counter() - start + keep.seconds_before
    _write_then_forget(keep, {**_sample_files(out, images, labels),   # the three files as one set: no mix
                              out / "sample_config.json": _json({**{k: v for k, v in vars(args).items() if k != "func"},
                                                                  "checkpoint": str(path),  # also with --run
                                                                  "seconds": round(seconds, 2),
                                                                  "versions": library_versions()})})
    print(f"{args.num} samples in {seconds:.1f} s -> {out}/samples.pt and {out}/samples.png")
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cmd_evaluate(args) -> int:
    from .metrics import evaluate_samples, load_classifier

    images, labels = _load_samples(Path(args.samples))
    samples = Path(args.samples)
    out = Path(args.out) if args.out else samples.with_name(f"{samples.stem}_metrics.json")  # not train's metrics.json
    try:  # before scoring, so that a bad --out costs nothing
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CLIError(f"--out must be a file path in a folder, got {str(out)!r}, whose folder is a file") from err
    if out.is_dir():
        raise CLIError(f"--out must be a file path (the metrics JSON), got {str(out)!r}, which is a folder")
    result = evaluate_samples(images, labels, root=args.data_dir,
                              classifier=load_classifier(device=select_device(args.device)))
    _write_json(out, {**result, "samples": str(args.samples), "versions": library_versions()})
    print(json.dumps({k: v for k, v in result.items() if k != "class_histogram"}, indent=1))
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    called_as_script = bool(sys.argv) and Path(sys.argv[0]).name == "ddpm-helpers"  # the console script
    parser = argparse.ArgumentParser(prog="ddpm-helpers" if called_as_script else "python -m ddpm_helpers",
                                     description="Train, sample and evaluate the course's DDPM models on MNIST.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a preset")
    p.add_argument("--preset", choices=sorted(PRESETS), default="smoke",
                   help="smoke: about a minute, a check; cpu: digits on 2 CPU cores in 6 to 12 minutes (--minutes 9 "
                        "fits the run to about 9); gpu: minutes on a GPU")
    p.add_argument("--out", help="output folder (default runs/<preset>); an existing run there is resumed")
    p.add_argument("--steps", type=int, help="total training steps (overrides the preset)")
    p.add_argument("--minutes", type=float, help="instead of --steps: as many steps as fit in this many minutes "
                   "of training here (timed on a few steps first)")
    p.add_argument("--batch-size", type=int, help="images per step (per process under torchrun)")
    p.add_argument("--seed", type=int, help="random seed of the run (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any TrainConfig field")
    p.add_argument("--num-samples", type=int, help="images drawn for samples.png / samples.pt after training")
    p.add_argument("--eval-samples", type=int, help="images scored for metrics.json after training")
    p.add_argument("--restart", action="store_true",
                   help="start afresh: move the checkpoints already in --out to a previous-<time> sub-folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="generate images from a checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a checkpoint file")
    src.add_argument("--run", help="a training output folder (its newest checkpoint is used)")
    p.add_argument("--num", type=int, default=64, help="how many images")
    p.add_argument("--method", choices=METHODS, default="ddim")
    p.add_argument("--steps", type=int, help="steps of ddim or dpm++2m (default 50); ddpm always runs all T")
    p.add_argument("--eta", type=float, default=0.0, help="ddim only: 0 deterministic, 1 as noisy as ddpm")
    p.add_argument("--digit", type=int, help="class to draw (class-conditional models)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance s (class-conditional models; 1: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--out", help="output folder (default: a sub-folder of the checkpoint's folder named after the "
                                 "settings, e.g. samples-ddim50-n64-seed0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no line after each batch")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("evaluate", help="score generated images (an (N, 1, 28, 28) tensor file)")
    p.add_argument("--samples", required=True, help="a samples.pt written by train or sample")
    p.add_argument("--out", help="metrics JSON path (default: <samples>_metrics.json beside the samples)")
    p.set_defaults(func=cmd_evaluate)

    for name, p in sub.choices.items():
        p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto",
                       help="where to run (auto: cuda, then mps, then the CPU)")
        if name in ("train", "evaluate"):  # sample reads no data
            p.add_argument("--data-dir", help="folder with the MNIST IDX files (else $DDPM_DATA_DIR, the cache, "
                                              "download)")
        if name == "train":
            p.add_argument("--no-subset", action="store_true", help="never fall back to the shipped MNIST subset")
    return parser


def _sigterm_to_interrupt(signum, frame):  # Colab and job schedulers stop runs with SIGTERM
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)  # a stop cleans up like Ctrl-C (temporary files, folders)
    try:
        code = _run(args)
    except Exception:  # an unexpected error, a bug: Python prints the traceback
        if not distributed.is_distributed():
            raise
        traceback.print_exc()  # under torchrun print it here, as the other ranks may have left the group already
        code = 1
    if distributed.is_distributed():  # under torchrun every rank ends here, its files written: skip the teardown,
        distributed.leave_without_teardown(code)  # which sometimes aborts under gloo (see that function)
    return code


def _run(args) -> int:
    """The command's exit status; the errors a user can mend become a one-line message and status 1, 2 or 130."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        kept = {"train": "the newest checkpoint, if any, is in the output folder, and so are the final scoring's "
                         "finished batches, if any; run the command again to resume",
                "sample": f"each finished batch of {SAMPLE_BATCH} samples, if any, is kept in .partial/ of the "
                          "output folder; run the same command again to go on from them",
                "evaluate": "the metrics are written only at the end; run the command again"}[args.command]
        print(f"\nstopped by the user ({kept})", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError:
        print("error: the GPU ran out of memory. Try a smaller batch, e.g. --batch-size 128, "
              "or a smaller network (--set base_channels=32).", file=sys.stderr)
        return 1
    except (CLIError, ValueError, TypeError, PermissionError, DataNotFoundError, DataCorruptError,
            CheckpointError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as err:
        if os.environ.get("DDPM_DEBUG"):
            raise
        print(f"error: {err}  (set DDPM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2

