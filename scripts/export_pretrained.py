"""Export a training checkpoint's EMA weights as a shipped pretrained model (safetensors + JSON card).

    python scripts/export_pretrained.py runs/cpu --name mnist-cpu [--half]

The card copies the run's config.json (command, machine, versions) and metrics.json, which must be of the
checkpoint exported (a run stopped before it wrote its samples and metrics keeps the earlier ones: run its train
command again first). The weights and the card are written as one set: a stop leaves the earlier pair or the new one.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from safetensors.torch import save

from ddpm_helpers.checkpoint import list_checkpoints, load_checkpoint, write_atomically

ASSETS = Path(__file__).parents[1] / "src/ddpm_helpers/assets"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="output folder of `python -m ddpm_helpers train`")
    parser.add_argument("--name", required=True, help="letters, digits and dashes, e.g. mnist-cpu")
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument("--benchmark", help="a benchmarks/results/*.json of the same recipe to cite in the card")
    parser.add_argument("--out-dir", default=str(ASSETS), help="where to write (default: the package's assets)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", args.name):
        parser.error(f"--name must be letters, digits and dashes (it names files and load_pretrained's choice), "
                     f"got {args.name!r}")
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        parser.error(f"--out-dir must be a folder, got {args.out_dir!r}, which is a file")
    run = Path(args.run)
    if not list_checkpoints(run):
        parser.error(f"run {args.run!r} holds no checkpoint (ckpt_*.pt): give the --out folder of a train command")
    ckpt = list_checkpoints(run)[-1]
    state = load_checkpoint(ckpt)
    weights = {k: (v.half() if args.half and v.is_floating_point() else v).contiguous() for k, v in state["ema"].items()}
    weights_name = f"pretrained_{args.name}.safetensors"
    card = {
        "name": args.name,
        "weights": weights_name,
        "config": state["config"],
        "step": state["step"],
        "run": json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else None,
        "metrics": json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else None,
    }
    if card["run"] and card["run"].get("command", "").split(" ")[0].endswith("__main__.py"):  # older runs
        card["run"]["command"] = " ".join(["python -m ddpm_helpers", *card["run"]["command"].split(" ")[1:]])
    if args.benchmark:
        bench = json.loads(Path(args.benchmark).read_text())
        card["benchmark"] = {"file": Path(args.benchmark).as_posix(), "command": bench.get("command"),
                             "machine": bench.get("machine"), "date": bench.get("date"),
                             "final_point": bench["curve"][-1] if "curve" in bench else None}
    if card["metrics"] is not None and card["metrics"].get("steps") != card["step"]:
        raise SystemExit(f"{run}/metrics.json is of step {card['metrics'].get('steps')}, but the newest checkpoint "
                         f"{ckpt.name} of step {card['step']}: the run stopped before it wrote its samples and "
                         "metrics; run its train command again (it trains no further) and export then")
    card_text = (json.dumps(card, indent=2) + "\n").encode()
    out = Path(args.out_dir)
    write_atomically({out / weights_name: lambda fh: fh.write(save(weights)),   # weights and card as one set
                      out / f"pretrained_{args.name}.json": lambda fh: fh.write(card_text)})
    print(f"wrote {out / weights_name} ({(out / weights_name).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
