"""Score a shipped pretrained model again with today's metrics, and keep the result in its card.

    python scripts/rescore_pretrained.py mnist-cpu [--write]

It draws the images exactly as `python -m ddpm_helpers train` scored them after training (the preset's eval sample
count, sampler, steps and guidance, generator seed = config seed + 1, each digit in turn), so the scores that both
versions of the metrics have (FD, KID, confidence, accuracy) must come out the same as the card's "metrics"; the
script says whether they do. With --write it adds the new scores to the card as "rescored" (date, machine, command).
"""

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import _common  # noqa: E402  (the machine's description, as in every benchmark row)

from ddpm_helpers.checkpoint import write_atomically  # noqa: E402
from ddpm_helpers.cli import _generate  # noqa: E402
from ddpm_helpers.metrics import evaluate_samples  # noqa: E402
from ddpm_helpers.presets import get_preset  # noqa: E402
from ddpm_helpers.pretrained import available, load_pretrained, model_card  # noqa: E402

ASSETS = Path(__file__).parents[1] / "src/ddpm_helpers/assets"
SHARED = ("frechet_distance", "frechet_distance_floor", "kid", "mean_confidence", "frac_confident_0.9", "accuracy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=available())
    parser.add_argument("--data-dir", help="MNIST folder (default: $DDPM_DATA_DIR or the cache)")
    parser.add_argument("--write", action="store_true", help="add the scores to the card as 'rescored'")
    args = parser.parse_args()
    card = model_card(args.name)
    old = card["metrics"]
    model, schedule, config = load_pretrained(args.name)
    preset = get_preset(card["run"]["preset"])
    start = time.perf_counter()
    images, labels = _generate(model, schedule, config, old["num_samples"], old["sampler"], old["sampler_steps"], 0.0,
                               config.seed + 1, torch.device("cpu"), None, old["guidance_scale"] or 1.0)
    seconds = time.perf_counter() - start
    new = evaluate_samples(images, labels, root=args.data_dir)
    for key in SHARED:
        if key in old:
            same = abs(new[key] - old[key]) <= 1e-6 * max(1.0, abs(old[key]))
            print(f"{key:28} card {old[key]:.6g}  now {new[key]:.6g}  {'same' if same else 'DIFFERENT'}")
    for key in ("frac_in_distribution", "frac_in_distribution_floor", "frac_confident_0.9_in_distribution"):
        print(f"{key:36} {new[key]:.3f}")
    print(f"{len(images)} images drawn in {seconds:.1f} s ({preset.name} preset's sampler)")
    if args.write:
        card["rescored"] = {
            "date": datetime.now().strftime("%Y-%m-%d"), "machine": _common.machine(),
            "command": "python scripts/rescore_pretrained.py " + args.name + " --write",
            "why": "metrics gained the share in distribution (2026-12-02); the same images as 'metrics'",
            "metrics": new,  # no time: scoring is not a timing run (the card's "metrics" has the timed one)
        }
        path = ASSETS / f"pretrained_{args.name}.json"
        card_text = (json.dumps(card, indent=2) + "\n").encode()
        write_atomically({path: lambda fh: fh.write(card_text)})   # a stop never truncates the card
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
