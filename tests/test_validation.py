"""Bad input gets a clear error: the right exception type, naming the parameter and what is accepted.

One table, one row per bad call: (id, callable, exception type, regex the message must match).
"""

import math

import pytest
import torch

from ddpm_helpers import distributed, metrics, viz
from ddpm_helpers._validate import check_timesteps, skip_value_checks
from ddpm_helpers.checkpoint import (check_same_config, checkpoint_path, load_checkpoint, prune_checkpoints,
                                    save_atomically, save_checkpoint)
from ddpm_helpers.course import colab_badge_url
from ddpm_helpers.data import load_mnist, to_uint8
from ddpm_helpers.losses import diffusion_loss, drop_labels, min_snr_weight
from ddpm_helpers.presets import Preset, get_preset, preset_for
from ddpm_helpers.sampling import (DigitsInTurn, ddim_step, ddim_timesteps, ddpm_step, dpm_solver_2m_step, predict,
                                   sample)
from ddpm_helpers.schedules import (NoiseSchedule, cosine_betas, extract, linear_betas, make_betas, noise_like,
                                    sigmoid_betas)
from ddpm_helpers.pretrained import load_pretrained
from ddpm_helpers.train import (EMA, Trainer, TrainConfig, apply_memory_format, has_native_bf16, model_has_dropout,
                                seed_everything, select_device, uses_channels_last)
from ddpm_helpers.checkpoint import CheckpointError
from ddpm_helpers.data import read_idx
from ddpm_helpers.unet import (Downsample, ResBlock, SelfAttention, SimpleUNet, UNet, UNetConfig, Upsample,
                               count_parameters, receptive_field, sinusoidal_embedding)

def _load_changed(**changes):
    """A Trainer's own state, with ``changes``, loaded into a Trainer (a state that is bad only in those entries)."""
    trainer = Trainer(TINY, IMG)
    trainer.load_state({**trainer.state_dict(), **changes})


S = NoiseSchedule.from_name("linear", 10)
X = torch.zeros(2, 1, 4, 4)
T2 = torch.tensor([0, 1])
NET = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1)
COND = UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
NAN = torch.full((2, 1, 4, 4), math.nan)
TINY = TrainConfig(num_timesteps=10, base_channels=8, channel_mults=(1,), steps=1, batch_size=2, progress=False)
IMG = torch.full((4, 1, 28, 28), -1.0)  # a blank page: pixels in [-1, 1], the background -1
MISSING = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU, or 'cuda:0' on a machine with none


def _not_cpu_generator():
    """A generator that claims another device: CUDA's cannot be made without a GPU, and a meta one not at all."""

    class Elsewhere(torch.Generator):
        device = torch.device("cuda")

    return Elsewhere()


class _TupleNet(torch.nn.Module):
    """A network that returns a tuple, as some libraries' models do (diffusers': a dataclass)."""

    def forward(self, x, t):
        return (x,)


class NanNet(torch.nn.Module):
    """A "diverged" denoiser: its output is NaN."""

    def forward(self, x, t):
        return x * math.nan

CASES = [
    # schedules
    ("unknown schedule", lambda: make_betas("quadratic", 10), ValueError, "schedule must be one of 'linear'"),
    ("T = 0", lambda: make_betas("linear", 0), ValueError, r"num_timesteps must be an integer in \[1, inf\], got 0"),
    ("T float", lambda: make_betas("linear", 10.5), TypeError, "num_timesteps must be an integer"),
    ("T bool", lambda: NoiseSchedule.from_name("linear", True), TypeError, "num_timesteps must be an integer"),
    ("betas >= 1", lambda: NoiseSchedule(torch.tensor([0.5, 1.0])), ValueError, r"strictly inside \(0, 1\)"),
    ("betas <= 0", lambda: NoiseSchedule(torch.tensor([0.0, 0.1])), ValueError, r"strictly inside \(0, 1\)"),
    ("betas empty", lambda: NoiseSchedule(torch.tensor([])), ValueError, "at least one value"),
    ("betas 2-D", lambda: NoiseSchedule(torch.full((2, 2), 0.1)), ValueError, "betas must have 1 dimensions"),
    ("betas list", lambda: NoiseSchedule([0.1, 0.2]), TypeError, "betas must be a torch.Tensor"),
    ("betas NaN", lambda: NoiseSchedule(torch.tensor([0.1, math.nan])), ValueError, "NaN or Inf"),
    ("bad schedule option", lambda: make_betas("cosine", 10, beta_start=0.1), TypeError, "does not take"),
    ("t too large", lambda: S.q_sample(X, torch.tensor([0, 10])), ValueError, r"t must hold 0-based .* \[0, 9\]"),
    ("t negative", lambda: S.q_sample(X, torch.tensor([-1, 0])), ValueError, r"\[0, 9\].*got values in \[-1, 0\]"),
    ("t float", lambda: S.q_sample(X, torch.tensor([0.5, 1.0])), TypeError, "t must have an integer dtype"),
    ("t wrong count", lambda: S.q_sample(X, torch.tensor([0, 1, 2])), ValueError, "t must have 1 or 2 entries"),
    ("x0 NaN", lambda: S.q_sample(NAN, T2), ValueError, "x0 contains 32 NaN"),
    ("x0 integer", lambda: S.q_sample(torch.zeros(2, 1, 4, 4, dtype=torch.long), T2), TypeError, "x0 must have a floating"),
    ("x0 1-D", lambda: S.q_sample(torch.zeros(4), T2), ValueError, "x0 must have 2 or 3 or 4 or 5 dimensions"),
    ("noise shape", lambda: S.q_sample(X, T2, torch.zeros(2, 1, 4, 5)), ValueError, "noise must have the shape of x0"),
    ("prediction name", lambda: S.target(X, T2, X, "score"), ValueError, "prediction must be one of 'eps', 'x0', 'v'"),
    ("output shape", lambda: S.to_x0_and_eps(torch.zeros(2, 1, 4, 5), X, T2), ValueError, "model_output must have"),
    ("threshold", lambda: S.steps_until_noise(0.0), ValueError, r"threshold must be a finite number in \(0.0, 1.0\]"),
    # networks
    ("image size", lambda: NET(torch.zeros(1, 1, 27, 28), torch.tensor([0])), ValueError, "divisible by 2"),
    ("channels", lambda: NET(torch.zeros(1, 3, 28, 28), torch.tensor([0])), ValueError, "x must have 1 channel"),
    ("x 3-D", lambda: NET(torch.zeros(1, 28, 28), torch.tensor([0])), ValueError, "x must have 4 dimensions"),
    ("t not tensor", lambda: NET(torch.zeros(1, 1, 28, 28), 5), TypeError, "t must be a tensor"),
    ("labels to uncond", lambda: NET(IMG, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)),
     ValueError, "num_classes=None"),
    ("mults empty", lambda: UNetConfig(channel_mults=()), ValueError, "channel_mults must be a non-empty tuple"),
    ("attention level", lambda: UNetConfig(channel_mults=(1, 2), attention_levels=(2,)), ValueError,
     r"attention_levels must hold indices in \[0, 1\]"),
    ("dropout 1", lambda: UNetConfig(dropout=1.0), ValueError, r"dropout must be a finite number in \[0.0, 1.0\)"),
    ("odd embedding", lambda: sinusoidal_embedding(torch.arange(3), 7), ValueError, "dim must be even"),
    ("simple T", lambda: SimpleUNet(num_timesteps=0), ValueError, "num_timesteps must be an integer"),
    # losses
    ("loss prediction", lambda: diffusion_loss(NET, S, IMG, prediction="noise"), ValueError, "prediction must be one of"),
    ("to_uint8 bytes", lambda: to_uint8(torch.full((1, 1, 2, 2), 200.0)), ValueError, "look like bytes 0..255"),
    ("make_grid bytes", lambda: viz.make_grid(torch.full((1, 1, 2, 2), 255.0)), ValueError,
     r"images must hold pixels in \[-1, 1\], got values from 255 to 255, which look like bytes 0..255"),
    ("loss empty batch", lambda: diffusion_loss(NET, S, X[:0]), ValueError, r"x0 must hold at least one image, got shape \(0, 1, 4, 4\)"),
    ("loss x0 channels-last", lambda: diffusion_loss(NET, S, torch.zeros(2, 4, 4, 1)), ValueError,
     r"x0 must have 1 channel\(s\), got shape \(2, 4, 4, 1\).*use x0.permute\(0, 3, 1, 2\)"),
    ("loss x0 size", lambda: diffusion_loss(NET, S, torch.zeros(2, 1, 5, 5)), ValueError, "x0 has size 5x5"),
    ("loss model a class", lambda: diffusion_loss(UNet, S, X), TypeError, r"got the class UNet \(build one first"),
    ("predict x_t 3-D", lambda: predict(NET, torch.zeros(1, 4, 4), 1), ValueError, "x_t must have 4 dimensions"),
    ("predict x_t channels", lambda: predict(NET, torch.zeros(1, 3, 4, 4), 1), ValueError, "x_t must have 1 channel"),
    ("loss labels uncond", lambda: diffusion_loss(NET, S, IMG, torch.zeros(4, dtype=torch.long)), ValueError,
     "the model has no num_classes"),
    ("loss t range", lambda: diffusion_loss(NET, S, IMG, t=torch.full((4,), 10)), ValueError, r"\[0, 9\]"),
    ("loss x0 NaN", lambda: diffusion_loss(NET, S, torch.full((4, 1, 28, 28), math.nan)), ValueError, "NaN or Inf"),
    ("min snr gamma", lambda: min_snr_weight(S, T2, 0.0), ValueError, r"gamma must be a finite number in \(0.0, inf\)"),
    ("drop prob", lambda: drop_labels(torch.zeros(3, dtype=torch.long), 10, 1.5), ValueError, r"p must be .* \[0.0, 1.0\]"),
    # samplers
    ("sampler method", lambda: sample(NET, S, 2, method="euler"), ValueError, "method must be one of 'ddpm', 'ddim'"),
    ("ddim steps > T", lambda: sample(NET, S, 2, method="ddim", steps=11), ValueError, r"steps must be an integer in \[1, 10\]"),
    ("ddpm steps", lambda: sample(NET, S, 2, method="ddpm", steps=5), ValueError, "steps must be None or T=10"),
    ("guidance < 0", lambda: sample(COND, S, 2, y=torch.tensor([1, 2]), guidance_scale=-1.0), ValueError,
     r"guidance_scale must be a finite number in \[0.0, inf\)"),
    ("sample NaN model", lambda: sample(NanNet(), S, 2, device="cpu"), FloatingPointError,
     "sampling produced 1568 NaN or Inf values out of 1568"),
    ("guidance NaN", lambda: sample(COND, S, 2, guidance_scale=math.nan), ValueError, "guidance_scale must be a finite"),
    ("num_samples 0", lambda: sample(NET, S, 0), ValueError, r"num_samples must be an integer in \[1, inf\]"),
    ("sigma name", lambda: sample(NET, S, 1, sigma="small"), ValueError, "sigma must be one of 'beta_tilde', 'beta'"),
    ("eta negative", lambda: sample(NET, S, 1, method="ddim", eta=-0.1), ValueError, "eta must be a finite number"),
    ("y count", lambda: sample(COND, S, 2, y=torch.tensor([1])), ValueError, r"y must hold one label per sample \(2\)"),
    ("y on uncond", lambda: sample(NET, S, 2, y=torch.tensor([1, 2])), ValueError, "the model is unconditional"),
    ("image_shape", lambda: sample(NET, S, 1, image_shape=(28, 28)), ValueError, r"image_shape must be \(C, H, W\)"),
    ("ddpm_step t", lambda: ddpm_step(S, X, 10, X), ValueError, r"t must be an integer in \[0, 9\]"),
    ("ddim_step t_prev", lambda: ddim_step(S, X, 3, 3, X), ValueError, r"t_prev must be an integer in \[-1, 2\]"),
    ("ddim_timesteps 0", lambda: ddim_timesteps(10, 0), ValueError, r"steps must be an integer in \[1, 10\]"),
    # 2026-12-05 audit: nonsense that used to run silently, or failed deep inside torch without naming the argument
    ("model T != schedule T", lambda: sample(SimpleUNet(num_timesteps=5), S, 2, method="ddim", steps=3), ValueError,
     r"model was built for T=5 .* schedule has T=10"),
    ("guidance without y", lambda: sample(COND, S, 2, guidance_scale=3.0), ValueError,
     r"guidance_scale=3.0 needs class labels y"),
    ("guidance without y, unconditional", lambda: sample(NET, S, 2, guidance_scale=2.0), ValueError,
     "needs class labels y"),
    ("predict guidance without y", lambda: predict(NET, X, 3, guidance_scale=5.0), ValueError, "needs class labels y"),
    ("eta with ddpm", lambda: sample(NET, S, 2, eta=0.5), ValueError, r"eta=0.5 is DDIM's noise level .* method='ddpm'"),
    ("eta with dpm++2m", lambda: sample(NET, S, 2, method="dpm++2m", eta=1.0), ValueError, "use method='ddim'"),
    ("clip_x0 string", lambda: sample(NET, S, 2, clip_x0="false"), TypeError, "clip_x0 must be True or False"),
    ("return_trajectory string", lambda: sample(NET, S, 2, return_trajectory="no"), TypeError,
     "return_trajectory must be True or False"),
    ("ddpm_step clip_x0 string", lambda: ddpm_step(S, X, 3, X, clip_x0="no"), TypeError, "clip_x0 must be True or False"),
    ("schedule as a name", lambda: sample(NET, "linear", 2), TypeError,
     r"schedule must be a NoiseSchedule, such as NoiseSchedule.from_name\('linear', 1000\), got 'linear'"),
    ("ddpm_step schedule", lambda: ddpm_step("linear", X, 3, X), TypeError, "schedule must be a NoiseSchedule"),
    ("ddim_step schedule", lambda: ddim_step(None, X, 3, 2, X), TypeError, "schedule must be a NoiseSchedule"),
    ("dpm step schedule", lambda: dpm_solver_2m_step(10, X, 3, 2, X), TypeError, "schedule must be a NoiseSchedule"),
    ("loss schedule", lambda: diffusion_loss(NET, "linear", X), TypeError, "schedule must be a NoiseSchedule"),
    ("min_snr schedule", lambda: min_snr_weight("s", T2, 5.0), TypeError, "schedule must be a NoiseSchedule"),
    ("generator as a seed", lambda: sample(NET, S, 2, generator=0), TypeError,
     r"generator must be a torch.Generator or None, got 0; for the seed 0, pass torch.Generator\(\).manual_seed\(0\)"),
    ("q_sample generator", lambda: S.q_sample(X, T2, generator="g"), TypeError, "generator must be a torch.Generator"),
    ("loss generator", lambda: diffusion_loss(NET, S, X, generator=1), TypeError, "generator must be a torch.Generator"),
    ("drop_labels generator", lambda: drop_labels(T2, 10, 0.5, generator="g"), TypeError,
     "generator must be a torch.Generator"),
    ("UNet t fraction", lambda: NET(X, torch.tensor([0.5, 2.7])), TypeError, "t must have an integer dtype"),
    ("UNet t bool", lambda: NET(X, torch.tensor([True, False])), TypeError, "t must have an integer dtype"),
    ("UNet t negative", lambda: NET(X, torch.tensor([-5, -1])), ValueError, r"t must hold 0-based .* minimum of -5"),
    ("UNet t 2-D", lambda: NET(X, torch.tensor([[1], [2]])), ValueError, "t must have 0 or 1 dimensions"),
    ("UNet x float64", lambda: NET(X.double(), T2), TypeError, r"x is float64 \(double\).*x.float\(\)"),
    ("SimpleUNet x float64", lambda: SimpleUNet(num_timesteps=10)(X.double(), T2), TypeError, "x is float64"),
    ("ddim_timesteps T string", lambda: ddim_timesteps("10", 2), TypeError, "num_timesteps must be an integer"),
    ("ddim_timesteps T float", lambda: ddim_timesteps(10.5, 2), TypeError, "num_timesteps must be an integer"),
    ("DigitsInTurn string", lambda: DigitsInTurn("x"), TypeError, "model must be a class-conditional torch.nn.Module"),
    ("trainer resume string", lambda: Trainer(TINY, IMG, resume="no"), TypeError, "resume must be True or False"),
    ("trainer model string", lambda: Trainer(TINY, IMG, model="x"), TypeError, "model must be None .* or a torch.nn.Module"),
    ("load_model ema string", lambda: Trainer.load_model("never-read.pt", ema="no"), TypeError, "ema must be True or False"),
    ("linear_betas T 10**9", lambda: linear_betas(10**9), ValueError,
     "num_timesteps must be at most 100,000 .*got 1,000,000,000"),
    ("NoiseSchedule betas too long", lambda: NoiseSchedule(torch.full((100_001,), 0.01)), ValueError,
     "len\\(betas\\) must be at most 100,000 .*got 100,001"),
    ("cosine_betas T too large", lambda: cosine_betas(100_001), ValueError, "num_timesteps must be at most 100,000"),
    ("SimpleUNet T too large", lambda: SimpleUNet(num_timesteps=10**6), ValueError,
     "num_timesteps must be at most 100,000"),
    ("TrainConfig T too large", lambda: TrainConfig(num_timesteps=10**6), ValueError,
     "num_timesteps must be at most 100,000"),
    ("ddim_timesteps T too large", lambda: ddim_timesteps(10**6, 10), ValueError,
     "num_timesteps must be at most 100,000"),
    ("receptive_field size the UNet cannot halve", lambda: receptive_field(NET, size=9), ValueError,
     r"the probe image \(size=9, in_channels=1\) has size 9x9.*divisible by 2"),
    ("receptive_field model not a module", lambda: receptive_field(lambda x, t: x), TypeError,
     "model must be a torch.nn.Module"),
    ("receptive_field in_channels", lambda: receptive_field(NET, size=8, in_channels=3), ValueError,
     r"the probe image \(size=8, in_channels=3\) must have 1 channel"),
    ("backend_for device int", lambda: distributed.backend_for(3), ValueError,
     "device must be a torch device such as 'cpu'.*got 3"),
    ("any_across_ranks flag string", lambda: distributed.any_across_ranks("no"), TypeError,
     "flag must be True or False, got 'no'"),
    ("leave_without_teardown code 256", lambda: distributed.leave_without_teardown(256), ValueError,
     r"code must be an integer in \[0, 255\], got 256"),
    ("leave_without_teardown code string", lambda: distributed.leave_without_teardown("0"), TypeError,
     "code must be an integer, got '0'"),
    ("linear_betas T 0", lambda: linear_betas(0), ValueError,
     r"num_timesteps must be an integer in \[1, inf\], got 0"),
    ("linear_betas beta_end > 1", lambda: linear_betas(10, 0.5, 2.0), ValueError,
     r"beta_end must be a finite number in \(0.0, 1.0\), got 2.0"),
    ("cosine_betas T 0", lambda: cosine_betas(0), ValueError, "num_timesteps must be"),
    ("sigmoid_betas T float", lambda: sigmoid_betas(2.5), TypeError,
     "num_timesteps must be an integer"),
    ("target eps shape", lambda: S.target(X, T2, torch.zeros(3, 1, 4, 4), "eps"), ValueError,
     r"eps must have the shape of x0 \(2, 1, 4, 4\)"),
    ("target x0 list", lambda: S.target([1], T2, X, "x0"), TypeError, "x0 must be a torch.Tensor"),
    ("schedule.to gpu", lambda: S.to("gpu"), ValueError, "device must be a torch device such as 'cpu'"),
    ("has_native_bf16 gpu", lambda: has_native_bf16("gpu"), ValueError, "device must be a torch device"),
    ("preset_for gpu", lambda: preset_for("gpu"), ValueError, "device must be a torch device"),
    ("trainer device None", lambda: Trainer(TINY, IMG, device=None), ValueError,
     "device must be one of 'auto', 'cuda', 'mps', 'cpu'"),
    ("embedding t list", lambda: sinusoidal_embedding([1, 2], 8), TypeError, "t must be a torch.Tensor"),
    ("embedding t 2-D", lambda: sinusoidal_embedding(torch.zeros(2, 2), 8), ValueError, "t must have 1 dimensions"),
    ("embedding max_period 0", lambda: sinusoidal_embedding(T2, 8, max_period=0), ValueError,
     r"max_period must be a finite number in \(1.0, inf\)"),
    ("attention heads 0", lambda: SelfAttention(8, heads=0), ValueError, r"heads must be an integer in \[1, inf\]"),
    ("downsample channels", lambda: Downsample(-1), ValueError, r"channels must be an integer in \[1, inf\], got -1"),
    ("resblock in_ch 0", lambda: ResBlock(0, 8, 32), ValueError, r"in_ch must be an integer in \[1, inf\], got 0"),
    ("UNet misspelt setting", lambda: UNet(base_chanels=8), TypeError,
     r"unknown UNet setting\(s\) \['base_chanels'\]; the settings are in_channels, base_channels"),
    ("preset name list", lambda: get_preset(["cpu"]), ValueError, r"preset must be one of 'smoke', 'cpu', 'gpu'; got \['cpu'\]"),
    ("EMA model string", lambda: EMA("x", 0.9), TypeError, "model must be a torch.nn.Module"),
    ("preset by hand: sampler", lambda: Preset("p", "", TINY, sampler="euler"), ValueError,
     "sampler must be one of 'ddpm', 'ddim', 'dpm\\+\\+2m'"),
    ("preset by hand: steps", lambda: Preset("p", "", TINY, sampler_steps=-5), ValueError,
     r"sampler_steps must be an integer in \[1, inf\], got -5"),
    ("preset by hand: guidance", lambda: Preset("p", "", TINY, guidance_scale=-2), ValueError,
     "guidance_scale must be a finite number in"),
    ("preset by hand: eval_samples", lambda: Preset("p", "", TINY, eval_samples=1), ValueError,
     r"eval_samples must be an integer in \[2, inf\], got 1"),
    ("preset by hand: train", lambda: Preset("p", "", {"steps": 1}), TypeError, "train must be a TrainConfig"),
    ("preset by hand: name not str", lambda: Preset(1, "", TINY), TypeError, "name must be a str, got 1"),
    ("preset by hand: blank name", lambda: Preset(" ", "", TINY), ValueError, "name must be a non-empty str"),
    ("preset by hand: description", lambda: Preset("p", None, TINY), TypeError, "description must be a str, got None"),
    # data
    ("split", lambda: load_mnist("validation"), ValueError, "split must be one of 'train', 'test'"),
    ("limit 0", lambda: load_mnist("test", limit=0), ValueError, r"limit must be an integer in \[1, inf\]"),
    ("mnist root missing", lambda: load_mnist("test", "/no/such/folder", allow_subset=True, download=False),
     NotADirectoryError, "root must be an existing folder holding the MNIST IDX files, got '/no/such/folder', "
     "which does not exist"),
    ("mnist root a file", lambda: load_mnist("test", __file__, allow_subset=True, download=False), NotADirectoryError,
     "root must be an existing folder .*, which is a file"),
    # training
    ("config schedule", lambda: TrainConfig(schedule="cos"), ValueError, "schedule must be one of"),
    ("config memory_format", lambda: TrainConfig(memory_format="nhwc"), ValueError,
     "memory_format must be one of 'auto', 'channels_last', 'contiguous'; got 'nhwc'"),
    ("load_model memory_format", lambda: Trainer.load_model("never-read.pt", memory_format="NHWC"), ValueError,
     "memory_format must be one of 'auto', 'channels_last', 'contiguous'; got 'NHWC'"),
    ("load_pretrained memory_format", lambda: load_pretrained("mnist-cpu", memory_format=None), ValueError,
     "memory_format must be one of 'auto', 'channels_last', 'contiguous'; got None"),
    ("apply_memory_format model", lambda: apply_memory_format("unet.pt", "auto", "cpu"), TypeError,
     "model must be a torch.nn.Module, got str"),
    ("apply_memory_format device", lambda: apply_memory_format(NET, "auto", "gpu"), ValueError,
     "device must be a torch device such as 'cpu', 'cuda'.*got 'gpu'"),
    ("config lr", lambda: TrainConfig(lr=0.0), ValueError, r"lr must be a finite number in \(0.0, inf\)"),
    ("config batch", lambda: TrainConfig(batch_size=0), ValueError, r"batch_size must be an integer in \[1, inf\]"),
    ("config ema", lambda: TrainConfig(ema_decay=1.0), ValueError, r"ema_decay must be .* \[0.0, 1.0\)"),
    ("config attention str", lambda: TrainConfig(attention_levels="2"), TypeError,
     r"attention_levels must be a tuple of integers \(or one integer\), such as \(1, 2\), got '2'"),
    ("config mults float", lambda: UNetConfig(channel_mults=(1, 2.0)), TypeError,
     r"channel_mults must be a tuple of integers .* got \(1, 2.0\)"),
    ("config amp", lambda: TrainConfig(amp="fp16"), ValueError, "amp must be one of 'auto', 'bf16', 'off'"),
    ("config on_nan", lambda: TrainConfig(on_nan="ignore"), ValueError, "on_nan must be one of 'raise', 'skip'"),
    ("config unknown key", lambda: TrainConfig.from_dict({"epochs": 3}), ValueError, r"unknown TrainConfig setting\(s\) \['epochs'\]"),
    ("trainer config type", lambda: Trainer({"steps": 1}, IMG), TypeError, "config must be a TrainConfig"),
    ("trainer images", lambda: Trainer(TINY, torch.zeros(4, 28, 28)), ValueError, "images must have 4 dimensions"),
    ("trainer labels", lambda: Trainer(TrainConfig(**{**TINY.to_dict(), "class_conditional": True}), IMG), ValueError,
     "labels are required"),
    ("device name", lambda: select_device("tpu"), ValueError, "device must be one of 'auto', 'cuda', 'mps', 'cpu'"),
    ("seed negative", lambda: seed_everything(-1), ValueError, "seed must be an integer"),
    ("ema decay", lambda: EMA(torch.nn.Linear(1, 1), 1.5), ValueError, "decay must be"),
    ("preset name", lambda: get_preset("tpu"), ValueError, "preset must be one of 'smoke', 'cpu', 'gpu'"),
    ("checkpoint missing", lambda: load_checkpoint("/nonexistent/ckpt.pt"), FileNotFoundError, "checkpoint not found"),
    # metrics and pictures
    ("fd one row", lambda: metrics.frechet_distance(torch.zeros(1, 4), torch.zeros(5, 4)), ValueError, "at least 2 rows"),
    ("fd widths", lambda: metrics.frechet_distance(torch.randn(5, 4), torch.randn(5, 3)), ValueError, "same width"),
    ("kid subsets", lambda: metrics.kernel_inception_distance(torch.randn(5, 4), torch.randn(5, 4), 0), ValueError,
     r"subsets must be an integer in \[1, 10000\], got 0"),
    ("eval shape", lambda: metrics.evaluate_samples(torch.zeros(4, 1, 32, 32)), ValueError, r"\(N, 1, 28, 28\)"),
    ("eval labels", lambda: metrics.evaluate_samples(IMG, torch.zeros(3, dtype=torch.long)), ValueError,
     r"labels must hold one label per sample \(4\)"),
    ("grid empty", lambda: viz.make_grid(torch.zeros(0, 1, 4, 4)), ValueError, "at least one image"),
    ("strip t", lambda: viz.forward_strip(S, IMG[:1], timesteps=(0, 10)), ValueError, r"timesteps\[1\] must be .* \[0, 9\], got 10"),
    ("loss empty", lambda: viz.plot_loss([]), ValueError, "history must hold at least one"),
    ("grid channels-last", lambda: viz.make_grid(torch.zeros(2, 28, 28, 1)), ValueError, r"permute\(0, 3, 1, 2\)"),
    ("strip one int", lambda: viz.forward_strip(S, IMG[:1], timesteps=5), TypeError, "timesteps must be a sequence"),
    ("schedules not a dict", lambda: viz.plot_schedules(S), TypeError, "schedules must map names to NoiseSchedules"),
    ("animation of a tuple", lambda: viz.reverse_animation((IMG, [(0, IMG)])), ValueError,
     r"\(t, x_t\) pairs .* final, trajectory = sample"),
    # pixels on the wrong scale, flags a shell user writes, network sizes, labels
    ("train on bytes", lambda: Trainer(TINY, IMG + 255, device="cpu"), ValueError,
     r"images must hold pixels in \[-1, 1\].* x / 127.5 - 1"),
    ("train on float64", lambda: Trainer(TINY, IMG.double(), device="cpu"), TypeError, r"images\.float\(\)"),
    ("train on nothing", lambda: Trainer(TINY, IMG[:0], device="cpu"), ValueError, "at least one image"),
    ("eval on bytes", lambda: metrics.evaluate_samples(IMG + 255), ValueError, r"samples must hold pixels in \[-1, 1\]"),
    ("bool as string", lambda: TrainConfig(class_conditional="false"), TypeError,
     "class_conditional must be True or False, got 'false'"),
    ("odd width", lambda: TrainConfig(base_channels=33), ValueError, "base_channels must be even"),
    ("heads vs width", lambda: UNetConfig(base_channels=30, channel_mults=(1, 2, 3)), ValueError,
     r"heads must divide .* level 2 .* = 90, got heads=4"),
    ("zero heads", lambda: UNetConfig(heads=0), ValueError, r"heads must be an integer in \[1, inf\]"),
    ("groups float", lambda: UNetConfig(groups=8.0), TypeError, "groups must be an integer"),
    ("unet from dict", lambda: UNet({"base_channels": 8}), TypeError, r"config must be a UNetConfig .*unet_config\(\)"),
    ("label above 9", lambda: Trainer(TrainConfig(**{**TINY.to_dict(), "class_conditional": True}), IMG,
                                      torch.tensor([0, 1, 2, 12]), device="cpu"), ValueError,
     "labels must be digits from 0 to 9, got values from 0 to 12"),
    ("scalar wraps", lambda: S.scalar("betas", -1), ValueError, r"t must be an integer in \[0, 9\], got -1"),
    ("scalar past T", lambda: S.scalar("alpha_bar", 10), ValueError, r"t must be an integer in \[-1, 9\], got 10"),
    ("loss output shape", lambda: diffusion_loss(lambda x, t: x.mean(dim=(2, 3)), S, X), ValueError,
     r"model must return a tensor of the input's shape \(2, 1, 4, 4\) .* got shape \(2, 1\)"),
    ("device gpu", lambda: sample(NET, S, 2, steps=2, method="ddim", image_shape=(1, 4, 4), device="gpu"), ValueError,
     r"device must be a torch device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got 'gpu'"),
    ("mnist device", lambda: load_mnist("test", device="GPU"), ValueError, "device must be a torch device"),
    ("seed net past its T", lambda: SimpleUNet(num_timesteps=10)(X, torch.tensor([3, 12])), ValueError,
     r"t must hold 0-based timestep indices in \[0, 9\]"),
    ("kid widths", lambda: metrics.kernel_inception_distance(torch.randn(5, 4), torch.randn(5, 3)), ValueError,
     "same width"),
    ("checkpoint path int", lambda: load_checkpoint(5), TypeError, r"path must be a checkpoint file \(a str or a pathlib.Path\), got 5"),
    ("checkpoint folder None", lambda: prune_checkpoints(None, 1), TypeError, "folder must be a folder"),
    ("trainer out_dir int", lambda: Trainer(TINY, IMG, out_dir=3), TypeError, r"out_dir must be None or a folder"),
    ("classifier path int", lambda: metrics.load_classifier(7), TypeError, r"path must be None or a .safetensors file"),
    ("classifier path missing", lambda: metrics.load_classifier("no_such_weights.safetensors"), FileNotFoundError,
     "classifier weights not found: path='no_such_weights.safetensors'"),
    ("gaussians one row per class", lambda: metrics.fit_digit_gaussians(torch.randn(3, 4), torch.tensor([0, 1, 2]),
     torch.randn(5, 4)), ValueError, "features must vary within a class.*3 classes"),
    ("predict y unconditional", lambda: predict(NET, X, 1, torch.tensor([1, 2])), ValueError, "model is unconditional"),
    ("predict t float", lambda: predict(NET, X, 1.5), TypeError, "t must be an integer, got 1.5"),
    ("prune keep 0", lambda: prune_checkpoints("/tmp", 0), ValueError, r"keep_last must be an integer in \[1, inf\]"),
    ("config from a path", lambda: TrainConfig.from_dict("cfg.json"), TypeError, "values must be a dict of settings"),
    ("lr at negative step", lambda: TINY.lr_at(-5), ValueError, r"step must be an integer in \[0, inf\], got -5"),
    ("image shape an int", lambda: sample(NET, S, 2, image_shape=28), ValueError, r"image_shape must be \(C, H, W\)"),
    ("ddim eta above 1", lambda: sample(NET, S, 2, method="ddim", steps=2, eta=3.0, image_shape=(1, 4, 4)), ValueError,
     r"eta must be a finite number in \[0.0, 1.0\]"),
    # found by the review of 2026-12-04
    ("linear beta_start negative", lambda: make_betas("linear", 10, beta_start=-0.5), ValueError,
     r"beta_start must be a finite number in \(0.0, 1.0\), got -0.5"),
    ("cosine s negative", lambda: make_betas("cosine", 10, s=-1), ValueError, r"s must be a finite number in \[0.0, 1.0\]"),
    ("cosine max_beta 1", lambda: NoiseSchedule.from_name("cosine", 10, max_beta=1.0), ValueError,
     r"max_beta must be a finite number in \(0.0, 1.0\), got 1.0"),
    ("min-snr t past T", lambda: min_snr_weight(S, torch.tensor([10]), 5.0), ValueError, r"t must hold 0-based .* \[0, 9\]"),
    ("min-snr t negative", lambda: min_snr_weight(S, torch.tensor([-1]), 5.0), ValueError, r"got values in \[-1, -1\]"),
    ("min-snr t float", lambda: min_snr_weight(S, torch.tensor([2.0]), 5.0), TypeError, "t must have an integer dtype"),
    ("label_drop_prob above 1", lambda: diffusion_loss(NET, S, X, label_drop_prob=7.0), ValueError,
     r"label_drop_prob must be a finite number in \[0.0, 1.0\], got 7.0"),
    ("velocity names x0", lambda: S.velocity(NAN, T2, X), ValueError, "x0 contains 32 NaN"),
    ("eps shape", lambda: S.predict_x0_from_eps(X, T2, torch.zeros(1, 1, 2, 2)), ValueError,
     r"eps must have the shape of x_t \(2, 1, 4, 4\), got \(1, 1, 2, 2\)"),
    ("posterior x0 a list", lambda: S.q_posterior_mean_variance([0], X, T2), TypeError, "x0 must be a torch.Tensor"),
    ("model_output None", lambda: S.to_x0_and_eps(None, X, T2), TypeError, "model_output must be a torch.Tensor"),
    ("t a string", lambda: S.q_sample(X, "3"), TypeError, "t must be an integer or a torch.Tensor"),
    ("t a bool tensor", lambda: ddpm_step(S, X, torch.tensor(True), X), TypeError, "t must be an integer"),
    ("ddpm steps float", lambda: sample(NET, S, 2, steps=10.0, image_shape=(1, 4, 4)), TypeError,
     "steps must be an integer, got 10.0"),
    ("dpm previous not a pair", lambda: dpm_solver_2m_step(S, X, 5, 3, X, previous=X), TypeError,
     r"previous must be None or a pair \(t_last, x0_hat_last\)"),
    ("predict label past null", lambda: predict(COND, X, 1, torch.tensor([0, 11])), ValueError,
     r"y must hold labels in \[0, 10\] .* got values in \[0, 11\]"),
    ("predict label count", lambda: predict(COND, X, 1, torch.tensor([0, 1, 2])), ValueError,
     r"y must hold one label per sample \(2\), got 3"),
    ("sample a function", lambda: sample(lambda x, t: x, S, 2), TypeError, "model must be a torch.nn.Module"),
    ("grid nrow 0", lambda: viz.make_grid(X, nrow=0), ValueError, r"nrow must be an integer in \[1, inf\], got 0"),
    ("grid padding negative", lambda: viz.make_grid(X, padding=-3), ValueError, r"padding must be an integer in \[0, 1000\], got -3"),
    ("grid NaN", lambda: viz.make_grid(NAN), ValueError, "images contains 32 NaN"),
    ("show no images", lambda: viz.show_images(torch.zeros(0, 1, 4, 4)), ValueError, "at least one image"),
    ("show size negative", lambda: viz.show_images(X, size=-1), ValueError, r"size must be a finite number in \(0.0, 10.0\], got -1.0"),
    ("save_grid no path", lambda: viz.save_grid(X, None), ValueError, "path must be a file name ending in .png"),
    ("strip schedule a name", lambda: viz.forward_strip("linear", X), TypeError, "schedule must be a NoiseSchedule"),
    ("strip bad step", lambda: viz.forward_strip(S, X, (0, 3, 12)), ValueError, r"timesteps\[2\] must be an integer in \[0, 9\]"),
    ("loss of strings", lambda: viz.plot_loss("abc"), TypeError, "history must be a sequence of loss values"),
    ("loss with None", lambda: viz.plot_loss([0.5, None]), TypeError, "history must hold numbers"),
    ("schedules log_snr string", lambda: viz.plot_schedules({"l": S}, log_snr="no"), TypeError, "log_snr must be True or False"),
    ("animation interval", lambda: viz.reverse_animation([(0, X), (-1, X)], interval=-5), ValueError,
     r"interval must be an integer in \[1, inf\]"),
    ("badge of None", lambda: colab_badge_url(None), ValueError, "notebook_name must be a notebook's file name"),
    ("checkpoint step negative", lambda: checkpoint_path("/tmp", -5), ValueError, r"step must be an integer in \[0, inf\]"),
    ("checkpoint step string", lambda: checkpoint_path("/tmp", "7"), TypeError, "step must be an integer"),
    ("unet label past null", lambda: COND(X, T2, torch.tensor([1, 11])), ValueError,
     r"y must hold class labels in \[0, 9\], or 10 for the null class .* got values in \[1, 11\]"),
    ("unet label negative", lambda: COND(X, T2, torch.tensor([-1, 0])), ValueError, r"y must hold class labels"),
    ("unet unshuffle hint", lambda: UNet(UNetConfig(base_channels=8, channel_mults=(1, 2, 2), pixel_unshuffle=2))(
        torch.zeros(1, 1, 28, 28), torch.tensor([0])), ValueError,
     r"divisible by 8 \(for 28x28 with pixel_unshuffle=2, channel_mults may have at most 2 entries"),
    ("simple unet hidden 0", lambda: SimpleUNet(hidden=0), ValueError, r"hidden must be an integer in \[1, inf\]"),
    ("simple unet hidden str", lambda: SimpleUNet(hidden="a"), TypeError, "hidden must be an integer"),
    ("simple unet channels", lambda: SimpleUNet(num_timesteps=10)(torch.zeros(2, 3, 8, 8), T2), ValueError,
     r"x must have 1 channel\(s\), got shape \(2, 3, 8, 8\)"),
    ("drop_labels float labels", lambda: drop_labels(torch.zeros(3), 10, 0.5), TypeError, "y must have an integer dtype"),
    ("drop_labels label above the null class", lambda: drop_labels(torch.tensor([12, 2]), 10, 0.5), ValueError,
     r"y must hold labels in \[0, 10\] \(10: the null class\), got values in \[2, 12\]"),
    ("drop_labels negative label, p 0", lambda: drop_labels(torch.tensor([-3, 2]), 10, 0.0), ValueError,
     r"y must hold labels in \[0, 10\] .*got values in \[-3, 2\]"),
    ("noise_like x not a tensor", lambda: noise_like(3), TypeError, "x must be a torch.Tensor, got int"),
    ("distributed init device int", lambda: distributed.init(3), ValueError,
     "device must be a torch device such as 'cpu'.*got 3"),
    # found by the review of 2026-12-05
    ("loss min_snr_gamma negative", lambda: diffusion_loss(NET, S, X, min_snr_gamma=-1.0), ValueError,
     r"min_snr_gamma must be a finite number in \(0.0, inf"),
    ("loss label_drop_prob without y", lambda: diffusion_loss(NET, S, X, label_drop_prob=0.1), ValueError,
     r"label_drop_prob=0.1 drops class labels, but no labels were given \(y=None\)"),
    ("q_sample noise float64", lambda: S.q_sample(X, T2, X.double()), TypeError,
     r"noise is torch.float64 but x0 is torch.float32, so x_t would be torch.float64"),
    ("q_sample noise NaN", lambda: S.q_sample(X, T2, NAN), ValueError, "noise contains 32 NaN"),
    ("q_sample noise elsewhere", lambda: S.q_sample(X, T2, torch.zeros(2, 1, 4, 4, device="meta")), ValueError,
     r"noise must be on x0's device \(cpu\), got meta"),
    ("extract a fraction", lambda: extract(S.alpha_bar, torch.tensor([0.27]), X.shape), TypeError,
     "t must have an integer dtype"),
    ("ddim with sigma", lambda: sample(NET, S, 2, method="ddim", steps=2, sigma="beta", image_shape=(1, 4, 4)),
     ValueError, r"sigma='beta' chooses the variance of DDPM's steps and has no effect with method='ddim'"),
    ("kid generator not on the CPU", lambda: metrics.kernel_inception_distance(
        torch.randn(4, 3), torch.randn(4, 3), generator=_not_cpu_generator()), TypeError,
     "generator must be None or a torch.Generator on the CPU"),
    ("digits in turn t count", lambda: DigitsInTurn(COND)(X, torch.tensor([1, 2, 3])), ValueError,
     "t must have 1 or 2 entries"),
    ("digits in turn t float", lambda: DigitsInTurn(COND)(X, torch.tensor([0.5, 0.5])), TypeError,
     "t must have an integer dtype"),
    ("UNet float64, x float32", lambda: UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1).double()(X, T2),
     TypeError, r"x is torch.float32, but the model's weights are torch.float64; give both one dtype"),
    ("UNet x bf16 outside autocast", lambda: NET(X.bfloat16(), T2), TypeError,
     r"x is torch.bfloat16, but the model's weights are torch.float32; .* or run the model under torch.autocast"),
    # review of 2026-12-05 (a probe of every public callable): each of these was torch's or Python's own error,
    # which names no argument, or no error at all
    ("sample on a missing card", lambda: sample(NET, S, 2, image_shape=(1, 4, 4), device=MISSING), ValueError,
     f"device='{MISSING}' is not available on this machine; use 'cpu'"),
    ("sample elsewhere than the model", lambda: sample(NET, S, 2, image_shape=(1, 4, 4), device="meta"), ValueError,
     r"device='meta', but the model's weights are on cpu; move the model first \(model.to\('meta'\)\)"),
    ("load_mnist on a missing card", lambda: load_mnist("test", allow_subset=True, limit=2, device=MISSING),
     ValueError, f"device='{MISSING}' is not available"),
    ("load_pretrained on a missing card", lambda: load_pretrained("mnist-cpu", device=MISSING), ValueError,
     f"device='{MISSING}' is not available"),
    ("load_classifier on a missing card", lambda: metrics.load_classifier(device=MISSING), ValueError,
     f"device='{MISSING}' is not available"),
    ("schedule to a missing card", lambda: S.to(MISSING), ValueError, f"device='{MISSING}' is not available"),
    ("preset_for a missing card", lambda: preset_for(MISSING), ValueError, f"device='{MISSING}' is not available"),
    ("UNet x on another device", lambda: NET(X.to("meta"), T2), ValueError,
     r"x is on meta, but the model's weights are on cpu; move one of them: x.to\('cpu'\) or model.to\('meta'\)"),
    ("trainer images channels-last", lambda: Trainer(TINY, IMG.permute(0, 2, 3, 1)), ValueError,
     r"images must have 1 channel\(s\), got shape \(4, 28, 28, 1\); that looks channels-last.*"
     r"use images.permute\(0, 3, 1, 2\)"),
    ("sample image_shape channels", lambda: sample(NET, S, 2, image_shape=(3, 4, 4)), ValueError,
     r"image_shape must have 1 channel\(s\), got shape \(3, 4, 4\)$"),
    ("sample image_shape size", lambda: sample(NET, S, 2, image_shape=(1, 5, 5)), ValueError,
     r"image_shape has size 5x5, but this UNet halves the size 1 time"),
    ("loss bytes 0..255", lambda: diffusion_loss(NET, S, torch.full((2, 1, 4, 4), 255.0)), ValueError,
     r"x0 must hold pixels in \[-1, 1\].*from bytes 0..255 use x / 127.5 - 1"),
    ("loss x0 float64 named x0", lambda: diffusion_loss(NET, S, X.double()), TypeError,
     r"x0 is float64 \(double\), but the model's weights are torch.float32; convert the input with x0.float\(\)"),
    ("loss model None", lambda: diffusion_loss(None, S, X), TypeError, "model must be a network .* got None"),
    ("loss SimpleUNet of another T", lambda: diffusion_loss(SimpleUNet(1000), S, X), ValueError,
     r"the model was built for T=1000 timesteps \(model.num_timesteps\) but the schedule has T=10"),
    ("extract past the end", lambda: extract(S.betas, torch.tensor([10]), X.shape), ValueError,
     r"t must hold 0-based timestep indices in \[0, 9\] \(T = 10\); got values in \[10, 10\]"),
    ("extract negative", lambda: extract(S.betas, torch.tensor([-1]), X.shape), ValueError,
     r"t must hold 0-based timestep indices in \[0, 9\].*got values in \[-1, -1\]"),
    ("extract a list", lambda: extract([0.1], T2, X.shape), TypeError, "a must be a torch.Tensor, got list"),
    ("extract no shape", lambda: extract(S.betas, T2, None), TypeError, "shape must be the shape of the tensor"),
    ("ddpm_step NaN output", lambda: ddpm_step(S, NAN, 3, X), ValueError, "model_output contains 32 NaN or Inf"),
    ("ddpm_step x_t None", lambda: ddpm_step(S, X, 3, None), TypeError, "x_t must be a torch.Tensor, got NoneType"),
    ("ddim_step t a tensor", lambda: ddim_step(S, X, torch.tensor(5), 7, X), ValueError,
     r"t_prev must be an integer in \[-1, 4\], got 7"),
    ("posterior x0 NaN", lambda: S.q_posterior_mean_variance(NAN, X, T2), ValueError, "x0 contains 32 NaN or Inf"),
    ("attention groups 0", lambda: SelfAttention(8, groups=0), ValueError, r"groups must be an integer in \[1, inf\]"),
    ("resblock dropout 1", lambda: ResBlock(8, 8, 32, dropout=1.0), ValueError,
     r"dropout must be a finite number in \[0.0, 1.0\), got 1.0"),
    ("EMA update of another model", lambda: EMA(torch.nn.Linear(1, 1), 0.9).update(torch.nn.Linear(2, 1), 1),
     ValueError, r"model must be the network this EMA was made from \(2 weight tensors\)"),
    ("EMA update of a string", lambda: EMA(torch.nn.Linear(1, 1), 0.9).update("m", 1), TypeError,
     "model must be the torch.nn.Module this EMA averages, got 'm'"),
    ("show labels an int", lambda: viz.show_images(X, labels=5), TypeError,
     "labels must be a sequence with one entry per image .* got 5"),
    ("show row_labels a str", lambda: viz.show_images(X, row_labels="ab"), TypeError,
     "row_labels must be a sequence with one entry per row"),
    ("sample a model returning a tuple", lambda: sample(_TupleNet(), S, 2, image_shape=(1, 4, 4)), ValueError,
     r"model must return a tensor of the input's shape \(2, 1, 4, 4\) \(its prediction for every pixel\), got \(tensor"),
    ("predict a string model", lambda: predict("net", X, 3), TypeError, "model must be a network .* got 'net'"),
    ("count_parameters a string", lambda: count_parameters("net"), TypeError, "model must be a torch.nn.Module"),
    ("model_has_dropout a string", lambda: model_has_dropout("net"), TypeError, "model must be a torch.nn.Module"),
    ("trainer model without weights", lambda: Trainer(TINY, IMG, model=torch.nn.Identity()), ValueError,
     "model has no parameters to train"),
    ("trainer float64 model", lambda: Trainer(TINY, IMG, model=UNet(base_channels=8, channel_mults=(1,)).double()),
     TypeError, r"model's weights are torch.float64, but the Trainer trains float32 networks .* pass model.float\(\)"),
    ("trainer load_state a string", lambda: Trainer(TINY, IMG).load_state("ckpt.pt"), TypeError,
     "state must be a dict as Trainer.state_dict"),
    ("trainer load_state partial", lambda: Trainer(TINY, IMG).load_state({"config": TINY.to_dict()}), CheckpointError,
     r"the state lacks 'model', 'ema', 'optimizer', 'lr_scheduler', 'step', 'history', 'rng': it was not written"),
    ("ema update float64", lambda: EMA(torch.nn.Linear(2, 2), 0.9).update(torch.nn.Linear(2, 2).double(), 1), TypeError,
     r"model's weights are torch.float64 on cpu, but this EMA's are torch.float32 on cpu"),
    ("trainer load_state step", lambda: _load_changed(step="x"), CheckpointError, r"the state has step='x'; a Trainer"),
    ("trainer load_state history", lambda: _load_changed(history=None), CheckpointError,
     "the state has history=None; a Trainer state's history is a list of losses"),
    ("trainer load_state rng", lambda: _load_changed(rng={}), CheckpointError,
     r"the state has rng=\{\}; a Trainer state's rng is a dict of generator states"),
    ("resblock emb of another width", lambda: ResBlock(8, 8, 16)(torch.zeros(2, 8, 4, 4), torch.zeros(2, 10)),
     ValueError, r"emb must be the time embedding, a tensor of shape \(B, emb_dim\) = \(2, 16\), got \(2, 10\)"),
    ("resblock emb a list", lambda: ResBlock(8, 8, 16)(torch.zeros(2, 8, 4, 4), [0]), ValueError,
     r"emb must be the time embedding, a tensor .* got \[0\]"),
    ("resblock x float64", lambda: ResBlock(8, 8, 16)(torch.zeros(2, 8, 4, 4, dtype=torch.float64), torch.zeros(2, 16)),
     TypeError, r"x is float64 \(double\), but the model's weights are torch.float32; convert the input with x.float\(\)"),
    ("resblock emb float64", lambda: ResBlock(8, 8, 16)(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, dtype=torch.float64)),
     TypeError, r"emb is float64 \(double\)"),
    ("attention x float64", lambda: SelfAttention(8)(torch.zeros(1, 8, 4, 4, dtype=torch.float64)), TypeError,
     r"x is float64 \(double\)"),
    ("attention on a 3-D x", lambda: SelfAttention(8)(torch.zeros(8, 4, 4)), ValueError,
     r"x must be a feature map of shape \(B, 8, H, W\) for this SelfAttention, got shape \(8, 4, 4\)"),
    ("upsample a 3-D x", lambda: Upsample(4)(torch.zeros(4, 4, 4)), ValueError,
     r"x must be a feature map of shape \(B, 4, H, W\) for this Upsample"),
    ("downsample other channels", lambda: Downsample(4)(torch.zeros(1, 3, 4, 4)), ValueError,
     r"x must be a feature map of shape \(B, 4, H, W\) for this Downsample, got shape \(1, 3, 4, 4\)"),
    ("read_idx a str", lambda: read_idx("train-images-idx3-ubyte"), TypeError, "data must be the bytes of an IDX file"),
    ("scalar of a list", lambda: S.scalar(["betas"], 1), ValueError, r"name must be one of betas, .*; got \['betas'\]"),
    ("animation of an iterator", lambda: viz.reverse_animation(iter([(0, X)])), ValueError,
     r"trajectory must be a non-empty list of \(t, x_t\) pairs, .* got <list_iterator"),
    ("animation with a str t", lambda: viz.reverse_animation([("a", X)]), ValueError,
     r"trajectory must hold \(t, x_t\) pairs .* got an item \('a', "),
    ("save_checkpoint a list", lambda: save_checkpoint([1], "x.pt"), TypeError, "state must be a dict, such as"),
    ("check_same_config None", lambda: check_same_config(None, {}), TypeError,
     r"saved must be a config as a dict \(TrainConfig.to_dict\(\)\), got NoneType"),
    # review, 2026-12-06: the rare raw errors left alone on 2026-12-05
    ("check_image_shape of one 2-D image", lambda: UNet(UNetConfig(base_channels=8, channel_mults=(1,)))
     .check_image_shape((28, 28)), ValueError,   # was: "not enough values to unpack (expected 3, got 2)"
     r"x must be images of shape \(N, C, H, W\) or one image \(C, H, W\), got shape \(28, 28\); 28x28 pixels need "
     r"a channel dimension: \(1, 28, 28\) for one image"),
    ("noise_like of integer pixels", lambda: noise_like(torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), TypeError,
     r"x must have a floating-point dtype, got torch.uint8"),   # was: "normal_kernel_cpu" not implemented for 'Byte'
    ("check_same_config ignore a str", lambda: check_same_config({"lr": 1}, {"lr": 2}, ignore="lr"), TypeError,
     r"ignore must be a tuple of setting names, got 'lr' \(for one name: ignore=\('lr',\)\)"),  # was: l and r
    ("Trainer out_dir empty", lambda: Trainer(TINY, IMG, out_dir=""), ValueError,   # was: the current folder
     r"out_dir must be a folder, got an empty or blank string '' \(for the current folder, pass '.'\)"),
    ("load_mnist root blank", lambda: load_mnist("train", root="  "), ValueError,
     r"root must be a folder, got an empty or blank string '  '"),
    # 2026-12-06, the rest of that list
    ("classifier features of a 3-D batch", lambda: metrics.MNISTClassifier().features(torch.zeros(3, 28, 28)),
     ValueError, r"x must have 4 dimensions, got shape \(3, 28, 28\)"),  # was: "expected input[1, 3, 28, 28] to have 1
    ("classifier on RGB digits", lambda: metrics.MNISTClassifier()(torch.zeros(2, 3, 28, 28)),  # channels, but got 3"
     ValueError, r"x must have shape \(N, 1, 28, 28\): a batch of MNIST digits, got \(2, 3, 28, 28\)"),
    ("save_checkpoint of a function", lambda: save_checkpoint({"meta": {"fn": [abs]}}, "x.pt"), TypeError,
     r"state\['meta'\]\['fn'\]\[0\] \(builtin_function_or_method\) cannot go into a checkpoint: load_checkpoint reads "
     r"with torch.load\(weights_only=True\).*Nothing was written"),  # was: a lambda raised pickle's AttributeError
    ("save_checkpoint of a generator", lambda: save_checkpoint({"rng": torch.Generator()}, "x.pt"), TypeError,
     r"state\['rng'\] \(Generator\) cannot go into a checkpoint.*a generator's get_state\(\)"),  # was: saved, and
    ("uses_channels_last of no device", lambda: uses_channels_last("channels_last", "gpu"), ValueError,  # unreadable
     r"device must be a torch device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got 'gpu'"),  # was: True
    ("schedule of meta betas", lambda: NoiseSchedule(torch.full((10,), 0.1, device="meta")), ValueError,
     r"betas is on the meta device \(a shape without values\)"),  # was: "Tensor.item\(\) cannot be called on meta"
    ("sample 10**12 images at once", lambda: sample(NET, S, 10**12, method="ddim", steps=1),  # 3 PB > 2**47 bytes
     MemoryError, r"num_samples=1,000,000,000,000 images of shape \(1, 28, 28\) do not fit in the memory of cpu at "
     r"once \(.*can't allocate memory.*\); draw them in batches"),  # was: only torch's "can't allocate memory"
    # 2026-12-06, found by calling every public function with absurd values: torch's allocator named bytes, not the
    # parameter ("you tried to allocate 4000000000000 bytes", "Storage size calculation overflowed"), KID ran for
    # ever, and a list as a path failed as "unhashable type: 'list'"
    ("ResBlock 10**12 channels", lambda: ResBlock(10**12, 8, 16), ValueError,
     r"in_ch must be an integer in \[1, 65,536\] \(a layer this wide would not fit in memory; .*got 1,000,000,000,000"),
    ("Downsample 10**12 channels", lambda: Downsample(10**12), ValueError, r"channels must be an integer in \[1, 65,536\]"),
    ("SimpleUNet 10**12 hidden", lambda: SimpleUNet(hidden=10**12), ValueError, r"hidden must be an integer in \[1, 65,536\]"),
    ("UNet 10**12 base channels", lambda: UNet(base_channels=10**12), ValueError,
     r"base_channels must be an integer in \[1, 65,536\]"),
    ("embedding 10**12 wide", lambda: sinusoidal_embedding(T2, 10**12), ValueError, r"dim must be an integer in \[1, 65,536\]"),
    ("KID 10**12 subsets", lambda: metrics.kernel_inception_distance(torch.randn(20, 4), torch.randn(20, 4), subsets=10**12),
     ValueError, r"subsets must be an integer in \[1, 10000\], got 1000000000000"),
    ("grid padding 10**12", lambda: viz.make_grid(X, padding=10**12), ValueError,
     r"padding must be an integer in \[0, 1000\], got 1000000000000"),
    ("save_atomically to a list", lambda: save_atomically({"a": 1}, []), TypeError, r"path must be .*got \[\]"),
    ("receptive field of 10**12 pixels", lambda: receptive_field(SimpleUNet(), size=10**12), ValueError,
     r"size must be an integer in \[1, 4096\], got 1000000000000"),   # was: "Storage size calculation overflowed"
    ("show_images of a tensor title", lambda: viz.show_images(X, title=torch.zeros(2)), TypeError,
     r"title must be a str or None, got a tensor of shape \(2,\)"),   # was: "Boolean value of Tensor ... ambiguous"
    ("show_images 10**12 inches", lambda: viz.show_images(X, size=1e12), ValueError,
     r"size must be a finite number in \(0.0, 10.0\]"),   # was: matplotlib's "incompatible constructor arguments"
    ("evaluate with a list as root", lambda: metrics.evaluate_samples(-torch.ones(2, 1, 28, 28), root=[]), TypeError,
     r"root must be None or a folder that holds MNIST .* got \[\]"),   # was: "unhashable type: 'list'"
    ("UNet 10**12 times wider", lambda: UNetConfig(channel_mults=(1, 10**12)), ValueError,
     r"channel_mults times base_channels must stay within 65,536 channels per level, got base_channels=32"),
    ("UNet 10**12 res blocks", lambda: UNetConfig(num_res_blocks=10**12), ValueError,   # was: minutes of building
     r"num_res_blocks must be an integer in \[1, 64\]"),
    ("UNet 10**12 classes", lambda: UNetConfig(num_classes=10**12), ValueError, r"num_classes must be an integer in "
     r"\[1, 65536\]"),
    ("UNet 10**12 fold", lambda: UNetConfig(pixel_unshuffle=10**12), ValueError,   # was: "Overflow when unpacking"
     r"pixel_unshuffle must be an integer in \[1, 64\]"),
    ("TrainConfig extra a tensor", lambda: TrainConfig(extra=torch.zeros(2)), TypeError,   # was: "cannot be
     r"extra must be a dict of plain values"),                                         # converted to Scalar"
]


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("name,call,error,pattern", CASES, ids=[case[0] for case in CASES])
def test_bad_input_raises_clear_error(name, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_skip_value_checks_skips_only_value_reads_and_only_inside():
    with skip_value_checks():
        S.q_sample(NAN, T2)  # the NaN check reads values: skipped
        check_timesteps("t", torch.tensor([0, 99]), 10)  # so is the timestep range
        with pytest.raises(ValueError, match="x0 must have 2 or 3 or 4 or 5 dimensions"):
            S.q_sample(torch.zeros(3), T2)  # shape checks stay on
    with pytest.raises(ValueError, match="NaN or Inf"):
        S.q_sample(NAN, T2)
    with pytest.raises(ValueError, match=r"in \[0, 9\]"):
        check_timesteps("t", torch.tensor([0, 99]), 10)
    with pytest.raises(RuntimeError), skip_value_checks():  # an error inside the block ...
        raise RuntimeError
    with pytest.raises(ValueError, match="NaN or Inf"):  # ... does not leave the checks off
        S.q_sample(NAN, T2)


def test_one_integer_is_a_one_level_tuple():
    """--set attention_levels=1 on the command line gives the int 1: it means (1,)."""
    from ddpm_helpers.cli import _parse_overrides

    values = _parse_overrides(["attention_levels=1", "channel_mults=1,2"])
    config = TrainConfig.from_dict({**TINY.to_dict(), **values})
    assert config.attention_levels == (1,) and config.channel_mults == (1, 2)
    assert UNetConfig(channel_mults=[1, 2], attention_levels=1).attention_levels == (1,)


def test_good_values_of_other_types_are_accepted():
    """NumPy scalars and one-number tensors are numbers; any integer index dtype is an index (review, 2026-12-04)."""
    import numpy as np

    from ddpm_helpers._validate import check_float, check_int

    assert check_float("eta", np.float32(0.5)) == 0.5 and check_float("eta", torch.tensor(0.25)) == 0.25
    assert check_float("eta", np.int64(0)) == 0.0 and check_int("t", np.int64(3)) == 3
    assert check_timesteps("t", np.int64(3), 10).tolist() == [3]
    x_next, _ = ddim_step(S, X, 5, 3, X, eta=np.float32(0.0))
    assert x_next.shape == X.shape
    assert UNetConfig(channel_mults=(1, np.int64(2))).channel_mults == (1, 2)  # plain ints, for the checkpoint
    assert type(UNetConfig(channel_mults=(1, np.int64(2))).channel_mults[1]) is int
    assert sample(NET, S, 1, method="ddim", steps=1, image_shape=(1, np.int64(4), 4)).shape == (1, 1, 4, 4)


def test_same_device_reads_cuda_as_the_current_card(monkeypatch):
    """torch.device("cuda") != torch.device("cuda:0"), yet a model moved to "cuda" has its weights on cuda:0: the
    device checks of sample() and the UNet must not call that a mismatch (review, 2026-12-05)."""
    from ddpm_helpers._validate import same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    cuda, cuda0, cuda1 = torch.device("cuda"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert same_device(cuda, cuda1) and same_device(cuda1, cuda) and same_device(cuda, cuda)
    assert not same_device(cuda, cuda0) and not same_device(cuda0, cuda1) and not same_device(cuda, torch.device("cpu"))
    assert same_device(torch.device("cpu"), torch.device("cpu", 0)) and same_device(torch.device("mps"), torch.device("mps", 0))


def test_an_out_dir_that_is_a_file_or_a_map_location_that_is_no_device_is_named(tmp_path):
    """Review, 2026-12-05: these read "not writable ([Errno 17] File exists)" and "truncated or corrupted"."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("a file, not a folder")
    with pytest.raises(NotADirectoryError, match=r"out_dir '.*notes.txt' is a file, not a folder"):
        Trainer(TINY, IMG, out_dir=a_file)
    with pytest.raises(TypeError, match=r"map_location must be a device such as 'cpu' or 'cuda' .* got 5"):
        load_checkpoint(a_file, map_location=5)
    with pytest.raises(IsADirectoryError, match=r"path '.*' is a folder; give the file to write, such as"):
        save_atomically({"a": 1}, tmp_path)
    assert not list(tmp_path.glob("*.tmp"))   # refused before writing anything


def test_uint8_timesteps_index_like_long():
    """PyTorch reads a uint8 index tensor as a mask: with as many images as steps, q_sample used to return the
    table itself (every t) instead of entry 3 ten times."""
    x0, noise = torch.zeros(10, 1, 2, 2), torch.ones(10, 1, 2, 2)
    t = torch.full((10,), 3)
    want = S.q_sample(x0, t, noise)
    assert torch.equal(S.q_sample(x0, t.to(torch.uint8), noise), want)
    assert torch.allclose(want, torch.full_like(want, float(S.sqrt_one_minus_alpha_bar[3])))
    assert torch.equal(min_snr_weight(S, t.to(torch.uint8), 5.0), min_snr_weight(S, t, 5.0))
    assert check_timesteps("t", torch.tensor([1, 2], dtype=torch.int16), 10).dtype == torch.long


def test_sampling_a_model_without_parameters_runs_on_the_cpu():
    class Zero(torch.nn.Module):  # predicts no noise at all
        def forward(self, x, t):
            return torch.zeros_like(x)

    out = sample(Zero(), S, 2, method="ddim", steps=3, image_shape=(1, 4, 4))
    assert out.device.type == "cpu" and out.shape == (2, 1, 4, 4)


def test_receptive_field_works_for_any_number_of_steps():
    from ddpm_helpers.unet import receptive_field

    assert int(receptive_field(SimpleUNet(num_timesteps=1)).sum()) == 81   # t = 1 used to be out of range for T = 1


def test_a_checkpoint_folder_or_an_unusable_map_location_is_named_not_reported_as_a_corrupt_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a checkpoint file; .* latest_checkpoint"):
        load_checkpoint(tmp_path)
    path = tmp_path / "step_00000001.pt"
    path.write_bytes(b"not read: the arguments are checked first")
    with pytest.raises(ValueError, match="map_location must be a torch device such as 'cpu'.*got 'gpu'"):
        load_checkpoint(path, map_location="gpu")
    absent = [f"cuda:{torch.cuda.device_count()}"]  # one past the last GPU, or 'cuda:0' on a machine with none
    if not torch.cuda.is_available():
        absent.append("cuda")
    if not torch.backends.mps.is_available():  # review, 2026-12-05: these read as "truncated or corrupted"
        absent.append("mps")
    for device in absent:
        with pytest.raises(ValueError, match=f"map_location='{device}' is not available on this machine; use 'cpu'"):
            load_checkpoint(path, map_location=device)


def test_select_device_takes_a_torch_device_or_an_indexed_name_as_documented():
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    assert select_device("cpu:0") == torch.device("cpu:0")
    with pytest.raises(ValueError, match="device must be a torch device such as"):
        select_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' was requested but is not available here"):
            select_device("cuda:0")


def test_a_file_of_another_kind_is_named_for_what_it_is(tmp_path):
    """Review of bad inputs, 2026-12-05: a text file given as a checkpoint was said to hold 'objects that
    torch.load(weights_only=True) refuses', a checkpoint of another program ended in KeyError: 'config' (a traceback
    on the command line), and the classifier loader passed on safetensors' 'header too large' and torch's list of
    missing keys without naming the file."""
    text = tmp_path / "notes.txt"
    text.write_text("# my notes\n")
    with pytest.raises(CheckpointError, match=r"notes.txt is not a checkpoint: torch.save writes a zip archive, and "
                                              r"this file begins with b'# my'"):
        load_checkpoint(text)
    other = save_checkpoint({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"not one of the Trainer's: it has no config or ema \(its entries: "
                                              r"\['format_version', 'weights'\]\)"):
        Trainer.load_model(other)
    with pytest.raises(ValueError, match=r"other.pt' is not a safetensors file of classifier weights"):
        metrics.load_classifier(other)
    unet = tmp_path / "unet.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in NET.state_dict().items()}, str(unet))
    with pytest.raises(ValueError, match=r"unet.safetensors' holds weights of another network, not of MNISTClassifier"):
        metrics.load_classifier(unet)
