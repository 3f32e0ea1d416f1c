"""Export a training checkpoint's EMA weights as a shipped pretrained model (safetensors + JSON card).

    python scripts/export_pretrained.py runs/cpu --name mnist-cpu [--half]

The card copies the run's config.json (command, machine, versions) and metrics.json.
"""

import argparse
import json
from pathlib import Path

from safetensors.torch import save_file

from ddpm_helpers.checkpoint import list_checkpoints, load_checkpoint

ASSETS = Path(__file__).parents[1] / "src/ddpm_helpers/assets"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="output folder of `python -m ddpm_helpers train`")
    parser.add_argument("--name", required=True)
    parser.add_argument("--half", action="store_true", help="store weights as float16 (half the size)")
    parser.add_argument("--benchmark", help="a benchmarks/results/*.json of the same recipe to cite in the card")
    args = parser.parse_args()
    run = Path(args.run)
    ckpt = list_checkpoints(run)[-1]
    state = load_checkpoint(ckpt)
    weights = {k: (v.half() if args.half and v.is_floating_point() else v).contiguous() for k, v in state["ema"].items()}
    weights_name = f"pretrained_{args.name}.safetensors"
    save_file(weights, str(ASSETS / weights_name))
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
    (ASSETS / f"pretrained_{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {ASSETS / weights_name} ({(ASSETS / weights_name).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
