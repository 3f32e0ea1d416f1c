"""Data-parallel training: 2 CPU processes with gloo, launched by torchrun, behave like 1 process on the global batch.

Exactly so without dropout (``CONFIG``); with dropout (``DROPOUT_CONFIG``) each rank draws its own masks, so the
match is in distribution only, and the tests check that the ranks still agree and that resuming stays exact.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_helpers.checkpoint import CheckpointError, list_checkpoints
from ddpm_helpers.train import Trainer, TrainConfig

WORKER = Path(__file__).with_name("ddp_worker.py")
CONFIG = dict(num_timesteps=50, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
              dropout=0.0, class_conditional=True, label_drop_prob=0.3, batch_size=4, lr=1e-3, warmup_steps=2,
              steps=8, checkpoint_every=3, keep_last=10, progress=False)
DROPOUT_CONFIG = {**CONFIG, "dropout": 0.3}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def torchrun(*args, nproc=2, timeout=240, **env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**ENV, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def single_process(out_dir, steps, **changes):
    torch.manual_seed(1234)  # the worker's toy data
    images = torch.rand(64, 1, 8, 8) * 2 - 1
    labels = torch.arange(64) % 10
    trainer = Trainer(TrainConfig(**{**CONFIG, **changes}), images, labels, out_dir=out_dir, device="cpu")
    trainer.fit(steps)
    return trainer


def zero_gradient_parameters(model):
    """Names of the parameters whose gradient is zero in float64 (< 1e-15; the others' are above 1e-9)."""
    net = copy.deepcopy(model).double()
    torch.manual_seed(0)
    x, t, y = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 50, (8,)), torch.arange(8) % 10
    net(x, t, y).square().mean().backward()
    grads = {name: p.grad.abs().max().item() for name, p in net.named_parameters()}
    assert all(g < 1e-15 or g > 1e-9 for g in grads.values()), grads  # two clearly separate kinds
    return {name for name, g in grads.items() if g < 1e-15}


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    torchrun(WORKER, out, 6, json.dumps(CONFIG))
    return out


@pytest.fixture(scope="module")
def ddp_dropout_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_dropout")
    torchrun(WORKER, out, 6, json.dumps(DROPOUT_CONFIG))
    return out


def assert_ranks_agree(run_dir):
    info = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2] and info[0]["backend"] == "gloo"
    w0, w1 = (torch.load(run_dir / f"rank{r}_weights.pt", weights_only=True) for r in (0, 1))
    assert w0.keys() == w1.keys()
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert info[0]["history"] == info[1]["history"]  # the loss is averaged over the ranks
    # the shared streams (indices, t, noise, dropped labels) stayed aligned: the same global random state
    assert info[0]["rng_digest"] == info[1]["rng_digest"]


def test_both_ranks_end_with_identical_weights(ddp_run):
    assert_ranks_agree(ddp_run)


def test_with_dropout_each_rank_draws_its_own_masks_and_the_ranks_still_agree(ddp_dropout_run):
    assert_ranks_agree(ddp_dropout_run)
    m0, m1 = (torch.load(ddp_dropout_run / f"rank{r}_masks.pt", weights_only=True) for r in (0, 1))
    assert len(m0) == len(m1) == 6
    for step, (a, b) in enumerate(zip(m0, m1)):
        assert 0.2 < a.float().mean() < 0.4, (step, a.float().mean())  # dropout 0.3 was applied
        assert not torch.equal(a, b), f"step {step}: both ranks dropped the same units"


def test_two_ranks_match_one_process_on_the_global_batch(ddp_run, tmp_path):
    ddp_history = json.loads((ddp_run / "rank0.json").read_text())["history"]
    ref = single_process(tmp_path, 6, batch_size=2 * CONFIG["batch_size"])
    assert len(ddp_history) == 6
    assert ddp_history == pytest.approx(ref.history, rel=1e-5, abs=1e-6)
    # Weights agree to float rounding, except where the gradient is zero in theory. A per-channel bias right before
    # a GroupNorm with one channel per group (8 channels, 8 groups: conv1's bias, and the last block's biases before
    # the output norm) is removed by the norm's mean, so its gradient is rounding noise (~1e-10) in float32, which
    # Adam's g / sqrt(v) scales up to steps of up to about lr, in a direction set by that noise. Two processes sum
    # the batch in another order, so those biases may differ by up to the sum of the learning rates (measured:
    # 2.0e-4 with torch 2.14.1, 4.7e-4 with torch 2.3.1; every other parameter within 1.7e-6 with either).
    w0 = torch.load(ddp_run / "rank0_weights.pt", weights_only=True)
    zero_grad = zero_gradient_parameters(ref.model)
    assert zero_grad and all(name.endswith(".bias") for name in zero_grad), zero_grad
    lr_sum = sum(CONFIG["lr"] * ref.config.lr_at(step) for step in range(6))
    for name, value in ref.model.state_dict().items():
        torch.testing.assert_close(w0[name], value, rtol=0, atol=lr_sum if name in zero_grad else 2e-5, msg=name)
    # a different batch would not match: the test can fail
    other = single_process(tmp_path / "other", 6, batch_size=CONFIG["batch_size"])
    assert other.history != pytest.approx(ddp_history, rel=1e-3)


def test_only_rank_zero_writes_checkpoints(ddp_run):
    info = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["save_returned"] is not None and info[1]["save_returned"] is None
    names = [p.name for p in list_checkpoints(ddp_run / "run")]
    assert names == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    assert sorted(p.name for p in (ddp_run / "run").iterdir()) == names  # no temp or duplicate files


def test_resume_with_same_world_size_repeats_the_run_and_other_size_is_refused(ddp_dropout_run, tmp_path):
    """With dropout, so that the per-rank masks are checked too: a run stopped at step 3 and resumed repeats, bit
    for bit, the run that went straight to step 6. (Without dropout, resumed and straight runs match the one
    process up to rounding: test_two_ranks_match_one_process_on_the_global_batch.)"""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(ddp_dropout_run, out)
    (out / "run" / "ckpt_00000006.pt").unlink()  # as if the run had stopped after step 3
    torchrun(WORKER, out, 6, json.dumps(DROPOUT_CONFIG))
    info = json.loads((out / "rank0.json").read_text())
    straight = json.loads((ddp_dropout_run / "rank0.json").read_text())
    assert info["start_step"] == 3 and info["history"] == straight["history"]
    resumed_w, straight_w = (torch.load(d / "rank1_weights.pt", weights_only=True) for d in (out, ddp_dropout_run))
    for name in straight_w:
        assert torch.equal(resumed_w[name], straight_w[name]), name
    resumed_masks = torch.load(out / "rank1_masks.pt", weights_only=True)
    straight_masks = torch.load(ddp_dropout_run / "rank1_masks.pt", weights_only=True)
    assert len(resumed_masks) == 3 and all(torch.equal(a, b) for a, b in zip(resumed_masks, straight_masks[3:]))
    with pytest.raises(CheckpointError, match=r"2 process\(es\).*this run has 1"):
        single_process(out / "run", 10, dropout=DROPOUT_CONFIG["dropout"])


def test_ctrl_c_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """Only rank 1 gets Ctrl-C, during step 3: both ranks finish that step and stop, and rank 0 saves it (a rank
    that went on alone would wait for the other in the next step's gradient all-reduce)."""
    torchrun(WORKER, tmp_path, 8, json.dumps(CONFIG), 3)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(i["interrupted"], i["step"]) for i in info] == [(True, 4), (True, 4)]
    assert "ckpt_00000004.pt" in [p.name for p in list_checkpoints(tmp_path / "run")]
    assert info[0]["history"] == info[1]["history"] and len(info[0]["history"]) == 4


def test_cli_trains_under_torchrun(tmp_path, data_dir):
    out = tmp_path / "cli"
    proc = torchrun("-m", "ddpm_helpers", "train", "--preset", "smoke", "--steps", "4", "--num-samples", "4",
                    "--eval-samples", "20", "--out", out, "--set", "checkpoint_every=2")
    assert proc.stdout.count("training preset 'smoke' on 2 processes (gloo), global batch 64") == 1  # rank 0 only
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch_size"] == 64
    assert [p.name for p in list_checkpoints(out)] == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


def test_leave_without_teardown_flushes_the_output_and_exits_with_the_code_at_once():
    code = ("import atexit, sys; from ddpm_helpers import distributed; atexit.register(print, 'atexit ran'); "
            "print('written', end=''); print('to stderr', end='', file=sys.stderr); "
            "distributed.leave_without_teardown(3); print('after')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "written", "to stderr")


def test_cli_under_torchrun_ends_past_the_teardown_of_the_process_group(tmp_path, teardown_aborts, data_dir):
    """Each rank leaves at once when its work is done: an abort in PyTorch's teardown (destroy_process_group, or
    at the interpreter's exit), which gloo now and then did in CI, can neither stop rank 0 while it samples nor
    fail a finished run. Here both are made to abort in the ranks that torchrun starts."""
    out = tmp_path / "cli"
    torchrun("-m", "ddpm_helpers", "train", "--preset", "smoke", "--steps", "2", "--num-samples", "4",
             "--eval-samples", "20", "--out", out, PYTHONPATH=teardown_aborts)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2
    assert torch.load(out / "samples.pt", weights_only=True).shape == (4, 1, 28, 28)
