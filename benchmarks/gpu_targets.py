"""Does the course's recipe meet the GPU targets of time-to-quality and sampling speed?

The targets (for one H100 or H200; the time includes loading the data onto the GPU):

1. **36 s**: reach the quality of the ``diffusers`` baseline's 3-minute, 1000-step result (its
   Frechet distance in ``references.py``) in at most 36 s, 5 times less;
2. **2 minutes**: a Frechet distance within 3 times the real-data floor in at most 120 s;
3. **few steps**: with 50 sampling steps or fewer, quality within 1.25 times the same model's
   full-length (T-step DDPM) result;
4. **fast sampling**: 2,000 samples in under 2 s.

Two runs of the recipe (``--preset``, ``gpu`` by default; ``--set key=value`` changes any
TrainConfig setting), each with its cosine learning-rate schedule fitted to its own budget from the
measured step time (as in ``references.py``), because a recipe tuned for 36 s is not the one tuned
for 120 s:

* the **short** run trains for ``--short-seconds`` (36) minus the data-loading time and is scored
  with ``--sampler`` (DDIM 50) on ``--num-samples`` (2,000) images, for target 1;
* the **long** run trains for ``--long-seconds`` (120) minus the data-loading time and is scored
  with every ``--fast-samplers`` setting (DDIM 50 and 20, DPM-Solver++(2M) 20 and 10), first in fp32,
  then with the network under bf16 autocast (``--sampling-precision``; the sampler's update stays fp32),
  then with full DDPM (all T steps in fp32, by far the longest draw), for targets 2 to 4. Each set of
  2,000 images is drawn in one batch (``--sample-batch``), after one untimed draw of that shape in each
  precision; its wall time is the sampling time of target 4.

A stop (SIGTERM, as from on_device.sh's ``CMD_LIMIT``, or Ctrl-C) still records every part that
finished, and the targets it could not judge say so (``_common.StopEarly``).

Target 1 compares with the newest ``diffusers`` DDPM row that ``references.py`` wrote on the same
machine (``benchmarks/results/references-*.json``), or with ``--diffusers-fd``. Without either it is
reported as not comparable.

    # GPU (one H100/H200): about 36 + 120 s of training, T-step DDPM on 2,000 images and scoring: ~5 min
    python benchmarks/references.py --only diffusers   # first, once per machine (for target 1)
    python benchmarks/gpu_targets.py
    # CI smoke (seconds; the smoke preset on a CPU, tiny budgets, nothing written to RESULTS.md)
    python benchmarks/gpu_targets.py --smoke

Results: ``benchmarks/results/gpu_targets-*.json`` and rows under ``## gpu_targets`` in
``benchmarks/RESULTS.md``; with ``--out DIR`` the long run's EMA weights (a checkpoint readable by
``Trainer.load_model``) and a sample grid are written there too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
import references  # noqa: E402

from ddpm_helpers.cli import _parse_overrides  # noqa: E402
from ddpm_helpers.presets import PRESETS, get_preset  # noqa: E402
from ddpm_helpers.unet import count_parameters  # noqa: E402

SMOKE_LIMIT = 2000
TARGETS = {"short_seconds": 36.0, "long_seconds": 120.0, "floor_ratio": 3.0, "few_steps": 50,
           "few_steps_ratio": 1.25, "fast_images": 2000, "fast_seconds": 2.0}


def sampler_list(text: str) -> list[tuple[str, int]]:
    """``"ddim:50,dpm++2m:20"`` -> [("ddim", 50), ("dpm++2m", 20)]."""
    out = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        method, _, steps = item.partition(":")
        if method not in ("ddim", "dpm++2m") or not steps.isdigit() or int(steps) < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r} in {text!r} is not METHOD:STEPS with METHOD ddim or dpm++2m and STEPS a positive integer "
                "(e.g. ddim:50,dpm++2m:20)")
        out.append((method, int(steps)))
    if not out:
        raise argparse.ArgumentTypeError(f"must list at least one METHOD:STEPS, got {text!r}")
    return out


def precision_list(text: str) -> list[str]:
    """``"fp32,bf16"`` -> ["fp32", "bf16"]."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items or any(v not in _common.PRECISIONS for v in items):
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of precisions; accepted: a comma-separated subset of "
                                         f"{', '.join(_common.PRECISIONS)} (e.g. fp32,bf16)")
    return list(dict.fromkeys(items))


def diffusers_reference(machine: str) -> dict | None:
    """The newest ``diffusers`` DDPM (full-length) result of references.py on this machine, if any."""
    best = None
    for path in sorted(_common.RESULTS_DIR.glob("references-*.json")):
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ref = saved.get("references", {}).get("diffusers")
        if saved.get("machine") != machine or not ref:
            continue
        for s in ref.get("samples", []):
            if s.get("sampler") == "DDPM":
                best = {"file": path.name, "date": saved.get("date"), "train_seconds": ref["train"]["train_seconds"],
                        "steps": s["steps"], "frechet_distance": s["metrics"]["frechet_distance"],
                        "frechet_distance_floor": s["metrics"]["frechet_distance_floor"]}
    return best


def train_run(name: str, images, labels, device, args, budget: float, load_seconds: float) -> tuple[object, dict]:
    """Train the recipe for ``budget`` seconds including ``load_seconds`` of data loading (or --steps in smoke)."""
    torch.manual_seed(0)
    overrides = dict(args.set or {})
    ref = references.CourseReference(images, labels, device, preset=args.preset, smoke=args.smoke,
                                     overrides=overrides, steps=args.steps)
    seconds = None if args.steps else max(budget - load_seconds, 1.0)
    print(f"[{name}] {ref.label}: {count_parameters(ref.model):,} parameters; training "
          f"{f'{args.steps} steps' if args.steps else f'{seconds:.1f} s (+ {load_seconds:.1f} s of data loading)'}",
          flush=True)
    trained = references.train(ref, device=device, steps=args.steps, seconds=seconds)
    trained["data_load_seconds"] = load_seconds
    trained["total_seconds"] = trained["train_seconds"] + load_seconds
    print(f"[{name}] {trained['steps']} steps in {trained['train_seconds']:.1f} s "
          f"({trained['images_per_second']:.0f} img/s); with data loading {trained['total_seconds']:.1f} s", flush=True)
    return ref, trained


def score_draw(ref, method: str, steps: int | None, args, device, data_dir, precision: str = "fp32") -> dict:
    cfg = ref.trainer.config
    torch.manual_seed(1)
    x, seconds = _common.draw_samples(ref.trainer.ema_model, ref.trainer.schedule, cfg, args.num_samples, method,
                                      steps, device, guidance=ref.guidance or 1.0, batch=args.sample_batch,
                                      precision=precision)
    metrics = _common.score(x, data_dir=data_dir)
    actual = cfg.num_timesteps if method == "ddpm" else steps
    draw = {"method": method, "steps": actual, "precision": precision, "num_samples": args.num_samples,
            "sample_seconds": seconds, "metrics": metrics, "_images": x}
    print(f"  {label(draw)}: {args.num_samples} images in {seconds:.2f} s; FD {metrics['frechet_distance']:.3f} "
          f"(floor {metrics['frechet_distance_floor']:.3f}, {metrics['frechet_ratio']:.2f}x), "
          f">0.9 {metrics['frac_confident_0.9']:.1%}, in distribution {metrics['frac_in_distribution']:.1%}", flush=True)
    return draw


def label(draw: dict) -> str:
    """``"dpm++2m 20"``, with `` bf16`` when the network ran under bf16 autocast."""
    return f"{draw['method']} {draw['steps']}" + (" bf16" if draw.get("precision", "fp32") == "bf16" else "")


def warm_up(ref, args, device, precision: str) -> None:
    """One untimed 2-step draw of the timed draws' batch shape, so that no timed draw pays for first-use costs
    (kernel loading, bf16 kernels, allocator growth)."""
    batch = min(args.sample_batch, args.num_samples)  # a timed draw of fewer images than a batch is one smaller batch
    _common.draw_samples(ref.trainer.ema_model, ref.trainer.schedule, ref.trainer.config, batch, "ddim",
                         min(2, ref.T), device, guidance=ref.guidance or 1.0, batch=batch, precision=precision)


NOT_MEASURED = "not measured (the run was stopped early)"


def judge(short: dict | None, long: dict | None, diffusers: dict | None, args) -> list[dict]:
    """One verdict per target: what was wanted, what was measured, and whether it was met (None: not judged).

    After a stop (see ``_common.StopEarly``) ``short`` or ``long`` may be missing or hold fewer draws; a target
    whose evidence is missing is marked as not measured instead of being judged on part of it.
    """
    verdicts = []
    t1 = {"target": "diffusers' 3-min 1000-step quality in 36 s"}
    short_draw = (short or {}).get("draw")
    if short_draw is None:
        t1.update(wanted=f"FD <= the diffusers DDPM row, in <= {args.short_seconds:g} s", measured=NOT_MEASURED,
                  met=None)
    else:
        s_fd, s_time = short_draw["metrics"]["frechet_distance"], short["train"]["total_seconds"]
        t1["measured"] = f"FD {s_fd:.3g} after {s_time:.1f} s ({label(short_draw)})"
        if diffusers is None:
            t1.update(wanted=f"FD <= the diffusers DDPM row, in <= {args.short_seconds:g} s", met=None,
                      note="no diffusers row on this machine: run references.py --only diffusers")
        else:
            t1.update(wanted=f"FD <= {diffusers['frechet_distance']:.3g} (diffusers, {diffusers['train_seconds']:.0f}"
                             f" s, DDPM {diffusers['steps']}; {diffusers['file']}) in <= {args.short_seconds:g} s",
                      met=bool(s_fd <= diffusers["frechet_distance"] and s_time <= args.short_seconds + 1.0))
    verdicts.append(t1)

    draws = (long or {}).get("draws") or []
    full = next((d for d in draws if d["method"] == "ddpm"), None)
    few = [d for d in draws if d["method"] != "ddpm" and d["steps"] <= TARGETS["few_steps"]]
    t2 = {"target": "FD within 3x the real-data floor in 2 min",
          "wanted": f"FD / floor <= {TARGETS['floor_ratio']:g} in <= {args.long_seconds:g} s"}
    if draws:
        ratio_first = min(d["metrics"]["frechet_ratio"] for d in draws)
        l_time = long["train"]["total_seconds"]
        t2.update(measured=f"{ratio_first:.2f}x (best sampler) after {l_time:.1f} s",
                  met=bool(ratio_first <= TARGETS["floor_ratio"] and l_time <= args.long_seconds + 1.0))
        if full is None:
            t2["note"] = "without the DDPM draw (stopped early)"
    else:
        t2.update(measured=NOT_MEASURED, met=None)
    verdicts.append(t2)

    if not few:
        return verdicts  # no few-step sampler was asked for (or none was measured): targets 3 and 4 do not apply
    t3 = {"target": "<= 50 steps within 1.25x of the full-length result"}
    t4 = {"target": "2,000 samples in under 2 s",
          "wanted": f"{TARGETS['fast_images']:,} images in < {TARGETS['fast_seconds']:g} s, with a "
                    "sampler that meets the target above"}
    good = min(few, key=lambda d: d["metrics"]["frechet_distance"])
    if full is None:
        t3.update(wanted="FD(<= 50 steps) <= 1.25 x FD(DDPM, all steps)", measured=NOT_MEASURED, met=None)
        quickest, ok = min(few, key=lambda d: d["sample_seconds"]), None
    else:
        full_fd = full["metrics"]["frechet_distance"]
        r = good["metrics"]["frechet_distance"] / full_fd
        t3.update(wanted=f"FD(<= 50 steps) <= 1.25 x FD(DDPM {full['steps']}) = {1.25 * full_fd:.3g}",
                  measured=f"{label(good)}: FD {good['metrics']['frechet_distance']:.3g}"
                           f" = {r:.2f} x {full_fd:.3g}",
                  met=bool(r <= TARGETS["few_steps_ratio"]))
        ok = [d for d in few if d["metrics"]["frechet_distance"] <= TARGETS["few_steps_ratio"] * full_fd]
        quickest = min(ok or few, key=lambda d: d["sample_seconds"])
    t4["measured"] = (f"{label(quickest)}: {quickest['num_samples']:,} images "
                      f"in {quickest['sample_seconds']:.2f} s (batch {args.sample_batch})")
    fast_enough = (quickest["num_samples"] >= TARGETS["fast_images"]
                   and quickest["sample_seconds"] < TARGETS["fast_seconds"])
    if ok is None:
        t4.update(met=None, note="speed measured; quality not judged without the DDPM draw (stopped early)")
    else:
        t4["met"] = bool(ok) and fast_enough
    verdicts += [t3, t4]
    return verdicts


def parse_set(text: str) -> dict:
    try:
        return _parse_overrides([text])
    except Exception as err:  # noqa: BLE001 (the CLI's own error type; the message names the pair)
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=tuple(PRESETS), default=None,
                        help="the recipe (default: gpu; smoke with --smoke)")
    parser.add_argument("--set", type=parse_set, action="append", metavar="KEY=VALUE",
                        help="change one TrainConfig setting of the recipe (repeatable)")
    parser.add_argument("--short-seconds", type=references.positive_seconds, default=TARGETS["short_seconds"],
                        metavar="S", help="budget of the short run, data loading included (default 36)")
    parser.add_argument("--long-seconds", type=references.positive_seconds, default=TARGETS["long_seconds"],
                        metavar="S", help="budget of the long run, data loading included (default 120)")
    parser.add_argument("--steps", type=_common.positive_int, default=None, metavar="N",
                        help="train each run for N steps instead of a time budget (smoke: 6)")
    parser.add_argument("--sampler", type=sampler_list, default=[("ddim", 50)], metavar="METHOD:STEPS",
                        help="the short run's sampler (default ddim:50)")
    parser.add_argument("--fast-samplers", type=sampler_list, default=None, metavar="LIST",
                        help="the long run's few-step samplers (default ddim:50,ddim:20,dpm++2m:20,dpm++2m:10)")
    parser.add_argument("--sampling-precision", type=precision_list, default=["fp32", "bf16"], metavar="LIST",
                        help="the long run's few-step samplers run in each of these (default fp32,bf16: the "
                             "network under bf16 autocast, the sampler's update in fp32)")
    parser.add_argument("--num-samples", type=references.sample_count, default=None, metavar="N",
                        help="images per sampler setting (default 2000; smoke 16)")
    parser.add_argument("--sample-batch", type=_common.positive_int, default=None, metavar="N",
                        help="images per sampling batch (default: all at once on CUDA, 500 on a CPU)")
    parser.add_argument("--diffusers-fd", type=references.positive_seconds, default=None, metavar="FD",
                        help="the diffusers baseline's FD for target 1 (default: from references-*.json)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="also write the long run's EMA checkpoint and a sample grid here")
    _common.add_run_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, device = _common.parse_run_args(parser, argv)
    args.preset = args.preset or ("smoke" if args.smoke else "gpu")
    args.set = {k: v for d in (args.set or []) for k, v in d.items()}
    try:
        get_preset(args.preset, **args.set)
    except (TypeError, ValueError) as err:
        parser.error(f"argument --set: {err}")
    if args.smoke and args.steps is None:
        args.steps = 6
    args.num_samples = args.num_samples or (16 if args.smoke else TARGETS["fast_images"])
    args.sample_batch = args.sample_batch or (args.num_samples if device.type == "cuda" else 500)
    fast_samplers = args.fast_samplers or ([("ddim", 5), ("dpm++2m", 5)] if args.smoke else
                                           [("ddim", 50), ("ddim", 20), ("dpm++2m", 20), ("dpm++2m", 10)])
    if args.smoke and args.sampler == [("ddim", 50)]:
        args.sampler = [("ddim", 5)]
    data_dir = args.data_dir
    machine = _common.machine()
    print(f"GPU targets of the {args.preset!r} recipe on {machine}", flush=True)
    images, labels, load_seconds = _common.load_training_data(args, device, SMOKE_LIMIT)

    short = long = ref = None  # each part enters once finished, so that a stop keeps them (see _common.StopEarly)
    with _common.StopEarly() as stop:
        ref, trained = train_run("short", images, labels, device, args, args.short_seconds, load_seconds)
        short = {"train": trained, "settings": ref.settings, "draw": None}
        method, k = args.sampler[0]
        short["draw"] = score_draw(ref, method, k, args, device, data_dir)
        ref = None
        ref, trained = train_run("long", images, labels, device, args, args.long_seconds, load_seconds)
        long = {"train": trained, "settings": ref.settings, "parameters": count_parameters(ref.model), "draws": []}
        # the few-step samplers first (in each --sampling-precision), full-length DDPM (T steps in fp32: by far
        # the longest draw) last
        for precision in args.sampling_precision:
            warm_up(ref, args, device, precision)
            for m, k in fast_samplers:
                long["draws"].append(score_draw(ref, m, min(k, ref.T), args, device, data_dir, precision))
        long["draws"].append(score_draw(ref, "ddpm", None, args, device, data_dir))

    diffusers = ({"file": "--diffusers-fd", "frechet_distance": args.diffusers_fd, "train_seconds": float("nan"),
                  "steps": 1000} if args.diffusers_fd else diffusers_reference(machine))
    verdicts = judge(short, long, diffusers, args)
    draws = [*([short["draw"]] if short and short["draw"] else []), *(long["draws"] if long else [])]
    if args.out is not None and long is not None:
        from ddpm_helpers.checkpoint import save_checkpoint
        from ddpm_helpers.viz import save_grid

        args.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(ref.trainer.state_dict(), args.out / "gpu_targets_long.pt")
        if long["draws"]:
            few = [d for d in long["draws"] if d["method"] != "ddpm"]
            best = min(few or long["draws"], key=lambda d: d["metrics"]["frechet_distance"])
            save_grid(best["_images"][:64], args.out / "gpu_targets_long_samples.png")
    for d in draws:
        d.pop("_images")

    date, command = time.strftime("%Y-%m-%d"), _common.command_line()
    rows = "\n".join(
        _common.markdown_row([date, machine, args.preset, v["target"], v["wanted"], v["measured"],
                              {True: "**yes**", False: "no", None: "n/a"}[v["met"]], v.get("note", ""),
                              _common.command_cell(command, stop.reason)])
        for v in verdicts)
    result = {"device": str(device), "preset": args.preset, "overrides": args.set, "targets": TARGETS,
              "data_load_seconds": load_seconds, "short": short, "long": long, "diffusers": diffusers,
              "verdicts": verdicts}
    _common.record("gpu_targets", result, rows, smoke=args.smoke, force=args.record, stopped=stop.reason)
    return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())
