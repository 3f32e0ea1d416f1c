"""The maintenance scripts that made the shipped assets: each one run small, stopped, and fed bad input.

Untested until 2026-12-06: the MNIST subset, the classifier and the pretrained models are what every notebook and
metric rests on, so the scripts that rebuild them must still work.
"""

import json
import signal
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import export_pretrained  # noqa: E402
import make_mnist_subset  # noqa: E402
import train_classifier  # noqa: E402

from ddpm_helpers import cli  # noqa: E402
from ddpm_helpers.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from ddpm_helpers.metrics import load_classifier  # noqa: E402
from ddpm_helpers.train import TrainConfig, model_from_weights  # noqa: E402


def test_make_mnist_subset_rebuilds_the_shipped_subset_exactly(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "subset.npz"
    monkeypatch.setattr(sys, "argv", ["make_mnist_subset.py", "--root", data_dir, "--out", str(out)])
    make_mnist_subset.main()
    with resources.as_file(resources.files("ddpm_helpers.assets").joinpath("mnist_subset.npz")) as shipped_path:
        shipped, rebuilt = np.load(shipped_path), np.load(out)
        assert sorted(shipped.files) == sorted(rebuilt.files)
        for key in shipped.files:
            assert np.array_equal(shipped[key], rebuilt[key]), key


SMALL = ["--limit", "256", "--batch-size", "64", "--epochs", "2"]   # 4 steps an epoch, 8 in all


def train_small(tmp_path, data_dir, name, *extra):
    out = tmp_path / f"{name}.safetensors"
    code = train_classifier.main([*SMALL, "--root", data_dir, "--out", str(out), "--work", str(tmp_path / name),
                                  *extra])
    return code, out


@pytest.fixture(scope="module")
def whole_classifier(tmp_path_factory, data_dir):
    """The small classifier run, never stopped."""
    code, whole = train_small(tmp_path_factory.mktemp("classifier"), data_dir, "whole")
    assert code == 0
    return whole


def test_train_classifier_writes_weights_and_card(whole_classifier):
    card = json.loads(whole_classifier.with_suffix(".json").read_text())
    assert card["epochs"] == 2 and card["test_images"] == 256 and 0 <= card["test_accuracy"] <= 1
    assert card["command"].endswith("--seed 0 --limit 256")
    assert not (whole_classifier.parent / "whole" / "classifier_state.pt").exists()   # done: nothing to go on from
    load_classifier(str(whole_classifier))   # the file the metrics would load


# Ctrl-C at three moments (review, 2026-12-06: the first version could not go on after a stop in an epoch's last
# step, and drew another data order after a stop in an epoch's test): the step in progress finishes, the state is
# kept, and the rerun goes on from it to the weights of the run never stopped
@pytest.mark.parametrize("where, calls, kept", [
    ("shift_batch", 6, "(epoch 2, step 2 of 4) is kept"),      # inside the second epoch
    ("shift_batch", 4, "(epoch 2, step 0 of 4) is kept"),      # in the first epoch's last step: its test runs first
    ("classify", 1, "(epoch 2, step 0 of 4) is kept"),         # in the first epoch's test
])
def test_train_classifier_stopped_goes_on_to_the_same_weights(tmp_path, data_dir, monkeypatch, capsys, where, calls,
                                                              kept, whole_classifier):
    real, count = getattr(train_classifier, where), []

    def then_ctrl_c(*args):
        count.append(1)
        if len(count) == calls:
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(train_classifier, where, then_ctrl_c)
        code, stopped = train_small(tmp_path, data_dir, "stopped")
    assert code == 130 and not stopped.exists()
    assert kept in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # the script's handler is given back
    # other settings never go on from that state
    with pytest.raises(SystemExit, match="the state of a run with other settings"):
        train_small(tmp_path, data_dir, "stopped", "--lr", "0.001")
    code, stopped = train_small(tmp_path, data_dir, "stopped")
    assert code == 0
    assert "going on from epoch 2, step" in capsys.readouterr().out
    expected = load_file(str(whole_classifier))
    assert load_file(str(stopped)).keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(load_file(str(stopped))[key], value), key
    card = json.loads(whole_classifier.with_suffix(".json").read_text())
    assert json.loads(stopped.with_suffix(".json").read_text())["test_accuracy"] == card["test_accuracy"]


def test_train_classifier_second_ctrl_c_stops_at_once_and_goes_on_from_the_last_epoch(tmp_path, data_dir, monkeypatch,
                                                                                       capsys, whole_classifier):
    """Two Ctrl-C in the second epoch: no state of a half-done step is kept; the rerun goes on from the first
    epoch's end (the package's stop-between-steps, as the Trainer's) to the same weights."""
    real, count = train_classifier.shift_batch, []

    def then_twice(*args):
        count.append(1)
        if len(count) == 6:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(train_classifier, "shift_batch", then_twice)
        assert train_small(tmp_path, data_dir, "twice")[0] == 130
    assert "stopped at once" in capsys.readouterr().err
    code, stopped = train_small(tmp_path, data_dir, "twice")
    assert code == 0 and "going on from epoch 2, step 0 of 4" in capsys.readouterr().out
    expected = load_file(str(whole_classifier))
    assert all(torch.equal(load_file(str(stopped))[key], value) for key, value in expected.items())


def test_train_classifier_keeps_the_learning_rate_schedule_without_its_function(tmp_path):
    """torch 2.3 keeps OneCycleLR's annealing function in its state_dict, which a checkpoint cannot hold
    (this test fakes that on a newer torch); the kept state leaves functions out and still resumes the schedule."""
    def build():
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10)

    opt, sched = build()
    for _ in range(3):
        opt.step()
        sched.step()
    sched.anneal_func = sched._annealing_cos  # as torch 2.3 stores it
    with pytest.raises(TypeError, match="anneal_func"):
        save_checkpoint({"lr_schedule": sched.state_dict()}, tmp_path / "raw.pt")
    save_checkpoint({"lr_schedule": train_classifier.schedule_state(sched)}, tmp_path / "kept.pt")
    opt2, resumed = build()
    resumed.load_state_dict(load_checkpoint(tmp_path / "kept.pt")["lr_schedule"])
    for optimizer, schedule in ((opt, sched), (opt2, resumed)):
        optimizer.step()
        schedule.step()
    assert resumed.get_last_lr() == sched.get_last_lr() and resumed.last_epoch == 4


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer, got -3"),
    (["--lr", "nan"], "--lr must be a positive number, got nan"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 2**63 - 1, got -1"),
    (["--limit", "10"], "--limit must be at least --batch-size (128) to make one step, got 10"),
    (["--out", "weights.pt"], "--out must name a .safetensors file"),
])
def test_train_classifier_names_bad_flags(flags, words, capsys):
    with pytest.raises(SystemExit) as stopped:
        train_classifier.parse_args(flags)
    assert stopped.value.code == 2 and words in capsys.readouterr().err


def test_export_pretrained_writes_a_loadable_model_and_its_card(tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--steps", "2", "--out", str(run), "--num-samples", "2",
                     "--eval-samples", "4", "--quiet", "--data-dir", data_dir]) == 0
    out = tmp_path / "assets"
    assert export_pretrained.main([str(run), "--name", "tiny", "--half", "--out-dir", str(out)]) == 0
    card = json.loads((out / "pretrained_tiny.json").read_text())
    assert card["step"] == 2 and card["metrics"]["steps"] == 2 and card["run"]["preset"] == "smoke"
    weights = load_file(str(out / card["weights"]))
    assert all(v.dtype == torch.float16 for v in weights.values() if v.is_floating_point())
    model, schedule, config = model_from_weights(TrainConfig.from_dict(card["config"]), weights, torch.device("cpu"), "auto")
    assert model.prediction == config.prediction and schedule.num_timesteps == config.num_timesteps

    # metrics of another step than the newest checkpoint: refused, nothing written
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "steps": 1}))
    with pytest.raises(SystemExit, match="metrics.json is of step 1, but the newest checkpoint"):
        export_pretrained.main([str(run), "--name", "other", "--out-dir", str(out)])
    assert not (out / "pretrained_other.json").exists()
    for flags, words in (([str(tmp_path / "none"), "--name", "x"], "holds no checkpoint"),
                         ([str(run), "--name", "my model"], "--name must be letters, digits and dashes"),
                         ([str(run), "--name", "x", "--out-dir", str(run / "metrics.json")],
                          "--out-dir must be a folder, got")):
        with pytest.raises(SystemExit):
            export_pretrained.main(["--out-dir", str(out), *flags])
        assert words in capsys.readouterr().err
