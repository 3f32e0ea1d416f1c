"""Train the MNIST classifier whose features and probabilities ddpm_helpers.metrics uses.

Reproducible: fixed seed, fixed data order, CPU, fp32. Writes the weights as a safetensors file
(loading it runs no code) and a JSON card with the measured test accuracy.

    python scripts/train_classifier.py --root ../shared/data          # 762 s (13 min) on 2 CPU cores, measured
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save

from ddpm_helpers.checkpoint import write_atomically
from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import MNISTClassifier, classify

ASSETS = Path(__file__).parents[1] / "src/ddpm_helpers/assets"


def shift_batch(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to max_shift pixels (pad with background -1, then crop)."""
    b = x.shape[0]
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen)
    rows = torch.arange(28)[None, :] + dy[:, None]
    cols = torch.arange(28)[None, :] + dx[:, None]
    return torch.stack([padded[i, :, rows[i]][:, :, cols[i]] for i in range(b)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ASSETS / "mnist_classifier.safetensors"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_mnist("train", args.root, download=False)
    x_test, y_test = load_mnist("test", args.root, download=False)
    model = MNISTClassifier()
    steps_per_epoch = len(x_train) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            loss = F.cross_entropy(model(shift_batch(x_train[idx], gen)), y_train[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        _, probs = classify(model, x_test)
        acc = float((probs.argmax(1) == y_test).double().mean())
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {acc:.4%}, {time.time() - start:.0f} s", flush=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = {
        "test_accuracy": acc,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(time.time() - start, 1),
        "machine": "2-core CPU, fp32",
        "torch": torch.__version__,
        "command": "python scripts/train_classifier.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "root")),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    card_text = (json.dumps(card, indent=2) + "\n").encode()
    write_atomically({args.out: lambda fh: fh.write(save(state)),   # weights and card as one set
                      Path(args.out).with_suffix(".json"): lambda fh: fh.write(card_text)})
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
