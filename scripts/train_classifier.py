"""Train the MNIST classifier whose features and probabilities ddpm_helpers.metrics uses.

Reproducible: fixed seed, fixed data order, CPU, fp32. Writes the weights as a safetensors file
(loading it runs no code) and a JSON card with the measured test accuracy.

    python scripts/train_classifier.py --root ../shared/data   # 762 s on 2 CPU cores when first trained; 393 s on a
                                                                # 2-core AMD EPYC with AVX2 (2026-12-06), the same weights

Interruptible: Ctrl-C (or SIGTERM) lets the step in progress finish, then saves the whole training state (weights,
optimiser, learning-rate schedule, random generators, place in the epoch) to ``--work``, as does the end of every
epoch (a second Ctrl-C stops at once, keeping the last epoch's state: the Trainer's stop between steps); the same
command run again goes on from there, and the weights come out the same as those of a run never stopped.
``--restart`` starts afresh.
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save

from ddpm_helpers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_atomically
from ddpm_helpers.data import load_mnist
from ddpm_helpers.metrics import MNISTClassifier, classify
from ddpm_helpers.train import _StopBetweenSteps

ASSETS = Path(__file__).parents[1] / "src/ddpm_helpers/assets"
SETTINGS = ("epochs", "batch_size", "lr", "seed", "limit")  # what a kept state must share with the run going on


def shift_batch(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to max_shift pixels (pad with background -1, then crop)."""
    b = x.shape[0]
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2, b), generator=gen)
    rows = torch.arange(28)[None, :] + dy[:, None]
    cols = torch.arange(28)[None, :] + dx[:, None]
    return torch.stack([padded[i, :, rows[i]][:, :, cols[i]] for i in range(b)])


def schedule_state(sched: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """The learning-rate schedule's state without its functions: torch 2.3 keeps OneCycleLR's annealing
    function itself in the state (a checkpoint holds no code), torch 2.14 only its name. The scheduler that loads the
    state is built with the same arguments, so it has the function already."""
    return {key: value for key, value in sched.state_dict().items() if not callable(value)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="train and test on the first N images of each split only (a quick check)")
    parser.add_argument("--out", default=str(ASSETS / "mnist_classifier.safetensors"))
    parser.add_argument("--work", default="runs/classifier",
                        help="folder for the training state kept when stopped and after each epoch")
    parser.add_argument("--restart", action="store_true", help="ignore a kept training state and start afresh")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not args.lr > 0 or args.lr == float("inf"):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.seed < 2**63:
        parser.error(f"--seed must be an integer from 0 to 2**63 - 1, got {args.seed}")
    if args.limit is not None and args.limit < args.batch_size:
        parser.error(f"--limit must be at least --batch-size ({args.batch_size}) to make one step, got {args.limit}")
    if not args.out.endswith(".safetensors"):
        parser.error(f"--out must name a .safetensors file (its card is written beside it as .json), got {args.out!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = {name: getattr(args, name) for name in SETTINGS}
    state_file = Path(args.work) / "classifier_state.pt"
    x_train, y_train = load_mnist("train", args.root, download=False, limit=args.limit)
    x_test, y_test = load_mnist("test", args.root, download=False, limit=args.limit)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = MNISTClassifier()
    steps_per_epoch = len(x_train) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    epoch, step, order, seconds, acc, last_loss = 0, 0, None, 0.0, None, None
    if state_file.exists() and not args.restart:
        try:
            kept = load_checkpoint(state_file)
        except CheckpointError as err:
            raise SystemExit(f"{err}; pass --restart to start afresh") from None
        if kept.get("settings") != settings:
            raise SystemExit(f"{state_file} is the state of a run with other settings ({kept.get('settings')}, now "
                             f"{settings}): give the same settings to go on, or pass --restart to start afresh")
        model.load_state_dict(kept["model"])
        opt.load_state_dict(kept["optimizer"])
        sched.load_state_dict(kept["lr_schedule"])
        gen.set_state(kept["generator"])
        torch.set_rng_state(kept["torch_rng"])
        epoch, step, order, seconds, acc, last_loss = (kept[k] for k in ("epoch", "step", "order", "seconds",
                                                                         "accuracy", "loss"))
        print(f"going on from epoch {epoch + 1}, step {step} of {steps_per_epoch} ({state_file})", flush=True)

    def keep() -> None:
        save_checkpoint({"settings": settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "lr_schedule": schedule_state(sched), "generator": gen.get_state(),
                         "torch_rng": torch.get_rng_state(), "epoch": epoch, "step": step, "order": order,
                         "seconds": seconds + time.time() - start, "accuracy": acc, "loss": last_loss}, state_file)

    def stop_like_ctrl_c(signum, frame):  # SIGTERM, as Colab and job schedulers send: stop as Ctrl-C does
        raise KeyboardInterrupt

    whole = False   # True where the state is whole: between two steps of an epoch, or after an epoch's test
    previous_sigterm = signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    start = time.time()
    try:
        # the Trainer's stop: a Ctrl-C waits for deliver(), called where the state is whole; a second one stops at once
        with _StopBetweenSteps() as stop:
            while epoch < args.epochs:
                whole = False
                model.train()
                if step == 0:
                    order = torch.randperm(len(x_train), generator=gen)
                while step < steps_per_epoch:
                    whole = False
                    idx = order[step * args.batch_size : (step + 1) * args.batch_size]
                    loss = F.cross_entropy(model(shift_batch(x_train[idx], gen)), y_train[idx], label_smoothing=0.05)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    last_loss = loss.item()
                    whole = step < steps_per_epoch   # after an epoch's last step comes its test first
                    if whole:
                        stop.deliver()
                model.eval()
                _, probs = classify(model, x_test)
                acc = float((probs.argmax(1) == y_test).double().mean())
                epoch, step = epoch + 1, 0
                keep()
                print(f"epoch {epoch}: loss {last_loss:.4f}, test accuracy {acc:.4%}, "
                      f"{seconds + time.time() - start:.0f} s", flush=True)
                whole = True
                stop.deliver()
    except KeyboardInterrupt:
        if not whole:   # the second Ctrl-C, inside a step or a test: the state kept last is that of the last epoch
            print(f"\nstopped at once: {state_file} holds the state of the last epoch or stop, if any; run the same "
                  "command again to go on from it", file=sys.stderr)
            return 130
        keep()  # going on from it repeats this run exactly
        print(f"stopped: the training state (epoch {epoch + 1}, step {step} of {steps_per_epoch}) is kept "
              f"in {state_file}; run the same command again to go on", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = {
        "test_accuracy": acc,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_seconds": round(seconds + time.time() - start, 1),
        "machine": "2-core CPU, fp32",
        "torch": torch.__version__,
        "command": "python scripts/train_classifier.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k in SETTINGS and not (k == "limit" and v is None)),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if args.limit is not None:
        card["test_images"] = len(x_test)
    card_text = (json.dumps(card, indent=2) + "\n").encode()
    write_atomically({args.out: lambda fh: fh.write(save(state)),   # weights and card as one set
                      Path(args.out).with_suffix(".json"): lambda fh: fh.write(card_text)})
    state_file.unlink()  # the weights are out; nothing left to go on from
    print(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
