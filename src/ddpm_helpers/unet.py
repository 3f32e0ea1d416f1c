r"""The denoising network: a small U-Net for 28x28 digits, built from named pieces.

``model(x_t, t, y=None)`` takes images ``x_t`` (B, C, H, W), 0-based timestep indices ``t`` (B,)
(long) and, for a class-conditional model, labels ``y`` (B,) in [0, num_classes] where the value
``num_classes`` is the *null class* used for classifier-free guidance. It returns a tensor with the
shape of ``x_t``: the predicted noise, clean image or velocity, whichever it was trained for.

Also here: :class:`SimpleUNet`, the seed article's network design (four 3x3 convolutions; 64 channels
wide here, the seed's is 32-64-32), kept as a labelled baseline. It is not a U-Net: no down-sampling,
no skips, a 9x9 receptive field.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import (MAX_CHANNELS, _read_values, _show, as_int_tuple, check_bool, check_float,
                        check_input_like_weights, check_int, check_module, check_num_timesteps, check_plain,
                        check_tensor, check_timesteps, check_width, labels_outside)


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    r"""Transformer-style embedding of timesteps (Vaswani et al. 2017), shape (B, dim).

    Entry ``i < dim/2`` is :math:`\sin(t\,\omega_i)` and entry ``i + dim/2`` is :math:`\cos(t\,\omega_i)`,
    with frequencies :math:`\omega_i = \text{max\_period}^{-i/(dim/2)}` from 1 down to ~1/max_period.
    """
    check_tensor("t", t, ndim=1)
    check_int("dim", dim, min_value=2)
    check_width("dim", dim)   # and at most MAX_CHANNELS
    check_float("max_period", max_period, min_value=1.0, min_inclusive=False)
    if dim % 2:
        raise ValueError(f"dim must be even (sin and cos halves), got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def _check_feature_map(x: torch.Tensor, channels: int, block: nn.Module) -> None:
    """A building block's input: a (B, C, H, W) tensor with the block's C, on its weights' device and of their dtype
    (torch's own errors name neither)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else _show(x)
        raise ValueError(f"x must be a feature map of shape (B, {channels}, H, W) for this {type(block).__name__}, "
                         f"got {got}")
    check_input_like_weights("x", x, block)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, then GroupNorm with the time embedding as a per-channel scale and shift
    (FiLM: ``norm(h) * (1 + scale) + shift``) -> SiLU -> dropout -> conv, plus a skip path."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0, groups: int = 8):
        super().__init__()
        for name, value in (("in_ch", in_ch), ("out_ch", out_ch), ("emb_dim", emb_dim)):
            check_width(name, value)
        check_int("groups", groups, min_value=1)
        check_float("dropout", dropout, min_value=0.0, max_value=1.0, max_inclusive=False)  # 1.0 drops everything
        self.norm1 = _norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # the residual branch starts at zero: each block starts as its skip path (the identity where in_ch ==
        # out_ch), which keeps early training stable
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, self.conv1.in_channels, self)
        if (not isinstance(emb, torch.Tensor) or emb.ndim != 2 or emb.shape[0] not in (1, x.shape[0])
                or emb.shape[1] != self.emb.in_features):
            got = tuple(emb.shape) if isinstance(emb, torch.Tensor) else _show(emb)
            raise ValueError(f"emb must be the time embedding, a tensor of shape (B, emb_dim) = ({x.shape[0]}, "
                             f"{self.emb.in_features}), got {got}")
        check_input_like_weights("emb", emb, self)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map, with a residual path."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8):
        super().__init__()
        check_width("channels", channels)
        check_int("heads", heads, min_value=1)
        check_int("groups", groups, min_value=1)
        if channels % heads:
            raise ValueError(f"heads must divide channels ({channels}), got heads={heads}")
        self.heads = heads
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, self.qkv.in_channels, self)
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        check_width("channels", channels)
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, self.conv.in_channels, self)
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        check_width("channels", channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_feature_map(x, self.conv.in_channels, self)  # a 3-D x would be stretched along W only
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass
class UNetConfig:
    in_channels: int = 1                 # 1 for MNIST
    base_channels: int = 32              # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 2)  # one entry per resolution: 28 -> 14 -> 7
    num_res_blocks: int = 2              # ResBlocks per resolution on the way down
    attention_levels: tuple[int, ...] | None = None  # resolutions (indices into channel_mults) with attention;
    #                                                   None = only the lowest resolution
    dropout: float = 0.1
    num_classes: int | None = None       # e.g. 10 for class-conditional MNIST; label num_classes = "no label"
    groups: int = 8                      # GroupNorm groups (a layer of C channels uses gcd(groups, C) of them)
    heads: int = 4                       # attention heads
    pixel_unshuffle: int = 1             # 2: fold each 2x2 patch into channels first (28x28x1 -> 14x14x4), 4x cheaper
    extra: dict = field(default_factory=dict)  # free-form notes, saved with checkpoints

    def __post_init__(self) -> None:
        self.channel_mults = as_int_tuple("channel_mults", self.channel_mults)
        if self.attention_levels is None:
            self.attention_levels = (len(self.channel_mults) - 1,)
        self.attention_levels = as_int_tuple("attention_levels", self.attention_levels)
        # stored as plain Python numbers: the config goes into every checkpoint, and torch.load(weights_only=True)
        # refuses NumPy scalars, which would make a run impossible to resume (review, 2026-12-05)
        self.in_channels = check_width("in_channels", self.in_channels)
        self.base_channels = check_width("base_channels", self.base_channels)
        # upper bounds far past any sensible network (the course uses 1 or 2 blocks, folds of 1 or 2): beyond them
        # torch would fail while allocating, naming bytes instead of the setting (or take minutes to build it)
        self.num_res_blocks = check_int("num_res_blocks", self.num_res_blocks, min_value=1, max_value=64)
        self.pixel_unshuffle = check_int("pixel_unshuffle", self.pixel_unshuffle, min_value=1, max_value=64)
        self.dropout = check_float("dropout", self.dropout, min_value=0.0, max_value=1.0, max_inclusive=False)
        check_plain("extra", self.extra, top=True)
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            raise ValueError(f"channel_mults must be a non-empty tuple of positive ints, got {self.channel_mults}")
        if self.base_channels * max(self.channel_mults) > MAX_CHANNELS:
            raise ValueError(f"channel_mults times base_channels must stay within {MAX_CHANNELS:,} channels per "
                             f"level, got base_channels={self.base_channels} and channel_mults={self.channel_mults}")
        for level in self.attention_levels:
            if not isinstance(level, int) or not 0 <= level < len(self.channel_mults):
                raise ValueError(
                    f"attention_levels must hold indices in [0, {len(self.channel_mults) - 1}], "
                    f"got {self.attention_levels}"
                )
        if self.num_classes is not None:
            self.num_classes = check_int("num_classes", self.num_classes, min_value=1, max_value=MAX_CHANNELS)
        self.groups = check_int("groups", self.groups, min_value=1)
        self.heads = check_int("heads", self.heads, min_value=1)
        if self.base_channels % 2:
            raise ValueError(f"base_channels must be even (the time embedding has a sine and a cosine half of "
                             f"base_channels / 2 each), got {self.base_channels}")
        for level in {*self.attention_levels, len(self.channel_mults) - 1}:  # the middle block always attends
            channels = self.base_channels * self.channel_mults[level]
            if channels % self.heads:
                raise ValueError(f"heads must divide the channels of every level with attention: level {level} has "
                                 f"base_channels * channel_mults[{level}] = {channels}, got heads={self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


class UNet(nn.Module):
    """A DDPM U-Net (Ho et al. 2020, appendix B), sized for small images.

    Down path: per resolution, ``num_res_blocks`` ResBlocks (+ attention where configured), then a
    stride-2 Downsample; every output is kept as a skip. Middle: ResBlock, attention, ResBlock. Up
    path: per resolution, ``num_res_blocks + 1`` ResBlocks, each fed the concatenation of the current
    features and one skip, then an Upsample. Works for any H, W divisible by ``downsample_factor``.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            unknown = sorted(set(kwargs) - {f.name for f in fields(UNetConfig)})
            if unknown:
                raise TypeError(f"unknown UNet setting(s) {unknown}; the settings are "
                                f"{', '.join(f.name for f in fields(UNetConfig))}")
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a UNetConfig or keyword arguments, not both")
        elif not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig (from a TrainConfig: config.unet_config(); from a dict: "
                            f"UNet(**values)), got {type(config).__name__}")
        self.config = cfg = config
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, emb_dim) if cfg.num_classes else None
        packed = cfg.in_channels * cfg.pixel_unshuffle**2
        self.conv_in = nn.Conv2d(packed, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [ch]
        cur = ch
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                out = cfg.base_channels * mult
                self.down.append(self._block(cur, out, emb_dim, level))
                cur = out
                skip_channels.append(cur)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(Downsample(cur))
                skip_channels.append(cur)

        self.mid = nn.ModuleList([
            ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups),
            SelfAttention(cur, cfg.heads, cfg.groups),
            ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups),
        ])

        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mults))):
            out = cfg.base_channels * cfg.channel_mults[level]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(self._block(cur + skip_channels.pop(), out, emb_dim, level))
                cur = out
            if level > 0:
                self.up.append(Upsample(cur))

        self.norm_out = _norm(cur, cfg.groups)
        self.conv_out = nn.Conv2d(cur, packed, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _block(self, in_ch: int, out_ch: int, emb_dim: int, level: int) -> nn.Module:
        cfg = self.config
        res = ResBlock(in_ch, out_ch, emb_dim, cfg.dropout, cfg.groups)
        if level in cfg.attention_levels:
            return nn.ModuleList([res, SelfAttention(out_ch, cfg.heads, cfg.groups)])
        return nn.ModuleList([res])

    @property
    def downsample_factor(self) -> int:
        """H and W must be divisible by this: 2 per down-sampling, times the pixel-unshuffle factor."""
        return 2 ** (len(self.config.channel_mults) - 1) * self.config.pixel_unshuffle

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    def check_image_shape(self, shape: tuple[int, ...], name: str = "x") -> None:
        """Raise, naming ``name``, unless ``shape`` (``(N, C, H, W)`` or ``(C, H, W)``) has this UNet's channels and
        an H and W that its down-sampling divides."""
        cfg, f = self.config, self.downsample_factor
        if len(shape) not in (3, 4):
            raise ValueError(f"{name} must be images of shape (N, C, H, W) or one image (C, H, W), got shape "
                             f"{tuple(shape)}" + (f"; {shape[0]}x{shape[1]} pixels need a channel dimension: "
                                                   f"(1, {shape[0]}, {shape[1]}) for one image" if len(shape) == 2 else ""))
        c, h, w = shape[-3:]
        if c != cfg.in_channels:
            hint = ""
            if shape[-1] == cfg.in_channels:
                hint = "; that looks channels-last (H, W, C), but the course stores images channels-first (C, H, W)"
                hint += f": use {name}.permute(0, 3, 1, 2)" if len(shape) == 4 else ""
            raise ValueError(f"{name} must have {cfg.in_channels} channel(s), got shape {tuple(shape)}{hint}")
        if h % f or w % f:
            p = cfg.pixel_unshuffle
            # the most levels this size allows: halvings after the unshuffle that leave whole pixels
            fits = max((n for n in range(1, 8) if h % (p * 2 ** (n - 1)) == 0 and w % (p * 2 ** (n - 1)) == 0),
                       default=0)
            hint = (f"for {h}x{w} with pixel_unshuffle={p}, channel_mults may have at most {fits} entries"
                    if fits else f"{h}x{w} is not divisible by pixel_unshuffle={p}")
            raise ValueError(
                f"{name} has size {h}x{w}, but this UNet halves the size {len(cfg.channel_mults) - 1} time(s) after a "
                f"pixel-unshuffle by {p}, so H and W must be divisible by {f} ({hint}; or pad the images)"
            )

    def check_input(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                    name: str = "x") -> torch.Tensor:
        """Validate the inputs of :meth:`forward` (``name``: what the caller calls ``x``) and return ``t`` as a
        (B,) tensor."""
        check_tensor(name, x, ndim=4, floating=True)
        cfg = self.config
        self.check_image_shape(tuple(x.shape), name)
        check_input_like_weights(name, x, self)
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"t must be a tensor of 0-based timestep indices, got {type(t).__name__}")
        # integer indices, as every schedule table is indexed (a fraction t / T by mistake would run silently)
        check_tensor("t", t, ndim=(0, 1), floating=False)
        if t.numel() and _read_values(t) and int(t.min()) < 0:
            raise ValueError(f"t must hold 0-based timestep indices (>= 0), got a minimum of {int(t.min())}")
        t = t.reshape(-1)
        if t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must have 1 or {x.shape[0]} entries (one per image), got {t.numel()}")
        if y is not None:
            if cfg.num_classes is None:
                raise ValueError("y (class labels) was given, but this UNet was built with num_classes=None")
            check_tensor("y", y, ndim=(0, 1), floating=False)
            if y.numel() not in (1, x.shape[0]):
                raise ValueError(f"y must have 1 or {x.shape[0]} entries (one label per image), got {y.numel()}")
            outside = labels_outside(y, cfg.num_classes)
            if outside:
                raise ValueError(f"y must hold class labels in [0, {cfg.num_classes - 1}], or {cfg.num_classes} for "
                                 f"the null class (unconditional), got values in [{outside[0]}, {outside[1]}]")
        return t.to(x.device).expand(x.shape[0])  # a CPU t with a CUDA x is a learner's loop, not an error

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = self.check_input(x, t, y)
        # the embedding is float32; cast it to the input's dtype so that a UNet made .double() (or .half()) runs too
        emb = self.time_mlp(sinusoidal_embedding(t, self.config.base_channels).to(x.dtype))
        if self.label_emb is not None:
            if y is None:  # unconditional call of a conditional model: use the null class
                y = torch.full((x.shape[0],), self.config.num_classes, device=x.device, dtype=torch.long)
            # nn.Embedding takes only int32 and int64 indices; MNIST's own label file is uint8
            emb = emb + self.label_emb(y.reshape(-1).to(x.device, torch.long).expand(x.shape[0]))

        p = self.config.pixel_unshuffle
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        skips = [h]
        for module in self.down:
            h = self._run(module, h, emb)
            skips.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for module in self.up:
            if isinstance(module, Upsample):
                h = module(h)
            else:
                h = self._run(module, torch.cat([h, skips.pop()], dim=1), emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out

    @staticmethod
    def _run(module: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(module, Downsample):
            return module(h)
        h = module[0](h, emb)
        return module[1](h) if len(module) > 1 else h


class SimpleUNet(nn.Module):
    """The seed article's denoiser design, kept as a baseline: same design, wider, any image size.

    Like the seed: four 3x3 convolutions with ReLU; the timestep enters as one extra constant input
    channel t/T; no down-sampling and no skip connections, so each output pixel sees only a 9x9 patch:
    it cannot learn the shape of a whole digit. Unlike the seed: every hidden layer has ``hidden``
    channels (default 64, so 64-64-64: 75,649 parameters for one input channel, against the seed's
    32-64-32 with 37,857), and the time channel takes the input's own H and W instead of a
    hard-coded 28. Notebook 04 sets the seed's exact network beside it and measures the 9x9 field of
    both; notebook 08 trains it and shows its samples.

    ``forward(x, t, y=None)``: ``x`` (B, in_channels, H, W), ``t`` (B,) or (1,) 0-based indices,
    ``y`` ignored (unconditional); returns (B, in_channels, H, W).
    """

    def __init__(self, num_timesteps: int = 300, in_channels: int = 1, hidden: int = 64):
        super().__init__()
        self.num_timesteps = check_num_timesteps(num_timesteps)
        self.in_channels = check_width("in_channels", in_channels)
        check_width("hidden", hidden)
        self.num_classes = None
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + 1, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, in_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_tensor("x", x, ndim=4, floating=True)
        check_input_like_weights("x", x, self)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channel(s), got shape {tuple(x.shape)}")
        t = check_timesteps("t", t, self.num_timesteps, batch=x.shape[0])  # T here must be the schedule's T
        t = t.expand(x.shape[0]).to(x.dtype) / self.num_timesteps
        t_channel = t[:, None, None, None].expand(-1, 1, x.shape[2], x.shape[3])  # was: .expand(..., 28, 28)
        return self.net(torch.cat([x, t_channel], dim=1))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    check_module("model", model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def receptive_field(
    model: nn.Module, size: int = 28, in_channels: int = 1, *, strip_norms: bool = True
) -> torch.Tensor:
    """Which input pixels can change the centre output pixel: a (size, size) boolean map.

    ``model`` is called as ``model(x, t)`` with ``x`` of shape (1, in_channels, size, size) and ``t`` of
    shape (1,); its output must be (1, C, size, size).

    Found by back-propagating from the centre output to the input of a copy of ``model`` whose
    weights are re-drawn at random (a fresh UNet's zero-initialised output layers would otherwise hide
    every path). So it is measured, not computed by hand; it is a property of the architecture.

    With ``strip_norms=True`` (the default) every ``nn.GroupNorm`` of the copy is replaced by
    ``nn.Identity`` first. A GroupNorm's mean and variance are taken over all positions, so any model
    that contains one passes *some* gradient to every input pixel, and the map would be the whole image
    for a single ResBlock. That link runs only through two numbers per group (a mean and a variance);
    stripping the norms shows what the convolutions, down-sampling and attention can see. Pass
    ``strip_norms=False`` to measure the model exactly as it is. A model without GroupNorms (such as
    :class:`SimpleUNet`) gives the same map either way.
    """
    check_module("model", model)
    check_int("size", size, min_value=1, max_value=4096)   # the map is size x size; MNIST's is 28
    check_width("in_channels", in_channels)
    check_bool("strip_norms", strip_norms)
    if isinstance(model, UNet):  # named as the caller knows them, not as the UNet's x
        model.check_image_shape((in_channels, size, size), f"the probe image (size={size}, in_channels={in_channels})")
    probe = copy.deepcopy(model).float().eval().cpu()  # a small CPU probe, whatever device the model is on
    if strip_norms:
        _replace_group_norms(probe)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in probe.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    x = torch.randn(1, in_channels, size, size, generator=gen).requires_grad_(True)
    out = probe(x, torch.tensor([0]))  # any valid t: index 0 exists for every T
    out[0, :, size // 2, size // 2].sum().backward()
    return x.grad[0].abs().sum(0) > 0


def _replace_group_norms(module: nn.Module) -> None:
    """Replace every ``nn.GroupNorm`` inside ``module`` (in place) by ``nn.Identity``."""
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, nn.Identity())
        else:
            _replace_group_norms(child)
