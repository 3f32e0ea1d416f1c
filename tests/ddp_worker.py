"""Run by tests/test_distributed.py under ``python -m torch.distributed.run --nproc_per_node 2``.

Each rank trains the same tiny class-conditional config with gloo on the CPU, then writes its own
final weights, the loss history, what ``save()`` returned, whether and where it stopped on Ctrl-C, a digest of torch's global random state
and (with dropout) which units its first dropout layer zeroed at each step, so the test can compare
the ranks.
"""

import hashlib
import json
import signal
import sys
from pathlib import Path

import torch

from ddpm_helpers import distributed
from ddpm_helpers.train import Trainer, TrainConfig


def main() -> None:
    out, steps, config_json = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    interrupt_at = int(sys.argv[4]) if len(sys.argv) > 4 else None  # rank 1 alone gets Ctrl-C during that step
    device = distributed.init(torch.device("cpu"))
    rank = distributed.rank()
    torch.manual_seed(1234)  # the same toy data on every rank
    images = torch.rand(64, 1, 8, 8) * 2 - 1
    labels = torch.arange(64) % 10
    config = TrainConfig.from_dict(json.loads(config_json))
    trainer = Trainer(config, images, labels, out_dir=out / "run", device=device)
    masks = []  # per step: the units that the first dropout layer zeroed (its input is almost surely non-zero)
    dropout = next((m for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0), None)
    if dropout is not None:
        dropout.register_forward_hook(lambda module, inputs, output: masks.append(output.detach() == 0))
    start = trainer.step
    interrupted = False
    if interrupt_at is not None and rank == 1:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a test may inherit it ignored)
        trainer.model.register_forward_hook(
            lambda module, inputs, output: signal.raise_signal(signal.SIGINT) if trainer.step == interrupt_at else None)
    try:
        trainer.fit(steps)
        saved = trainer.save()
    except KeyboardInterrupt:
        interrupted, saved = True, None
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, out / f"rank{rank}_weights.pt")
    torch.save(masks, out / f"rank{rank}_masks.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world_size": distributed.world_size(), "backend": torch.distributed.get_backend(),
        "start_step": start, "history": trainer.history, "save_returned": None if saved is None else str(saved),
        "interrupted": interrupted, "step": trainer.step,
        "rng_digest": hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
    }))
    distributed.barrier()  # every rank has written its files
    distributed.leave_without_teardown(0)  # past PyTorch's teardown, which now and then aborts under gloo


if __name__ == "__main__":
    main()
