"""Pictures: image grids, schedule and SNR plots, forward-process strips, reverse-process animations.

Every function returns the matplotlib Figure (or animation) it made, so a notebook can show it
and a script can save it; nothing here calls ``plt.show()``.
"""

from __future__ import annotations

import io
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # matplotlib falls back to a headless backend by itself
import torch
from matplotlib import animation
from matplotlib.lines import Line2D

from ._validate import _show, check_bool, check_float, check_int, check_tensor, refuse_byte_pixels
from .checkpoint import write_atomically
from .schedules import NoiseSchedule, noise_like


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile images (N, C, H, W) in [-1, 1] into one (H', W') float tensor in [0, 1] (first channel).
    ``nrow`` images per row (None: a square-ish grid; more than N: one row of all N), ``padding`` pixels of white
    between them."""
    _check_images(images)
    n, c, h, w = images.shape
    nrow = min(_check_nrow(nrow, n), max(n, 1))  # columns beyond the N images would only be white
    padding = check_int("padding", padding, min_value=0, max_value=1000)
    ncol_rows = (n + nrow - 1) // nrow
    grid = torch.ones(ncol_rows * (h + padding) + padding, nrow * (w + padding) + padding)
    pixels = ((images[:, 0].detach().float().cpu().clamp(-1, 1) + 1) / 2)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def label_columns(ax: plt.Axes, labels: Sequence, image_width: int = 28, padding: int = 2) -> None:
    """Write ``labels[c]`` above column ``c`` of a :func:`make_grid` picture drawn with ``ax.imshow`` (say, the
    digit each column's images were asked for); ``image_width`` and ``padding`` as the grid was made."""
    if isinstance(labels, str) or not hasattr(labels, "__len__") or len(labels) == 0:
        raise TypeError(f"labels must be a non-empty sequence, one label per column, got {labels!r}")
    check_int("image_width", image_width, min_value=1)
    check_int("padding", padding, min_value=0, max_value=1000)
    step = image_width + padding
    ax.set_axis_on()
    ax.set_xticks([padding + step * c + image_width / 2 - 0.5 for c in range(len(labels))],
                  [str(label) for label in labels])
    ax.set_yticks([])
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _check_images(images: torch.Tensor) -> None:
    """Images to draw: (N, C, H, W), N >= 1, floating point and finite (a NaN has no grey level)."""
    check_tensor("images", images, ndim=4, floating=True, finite=True)
    refuse_byte_pixels("images", images)
    n, c = images.shape[:2]
    if n == 0:
        raise ValueError("images must hold at least one image, got 0")
    if c not in (1, 3) and images.shape[-1] in (1, 3):
        raise ValueError(f"images must be (N, C, H, W), channels first, got shape {tuple(images.shape)}, which looks "
                         "channels-last: use images.permute(0, 3, 1, 2)")


def _check_nrow(nrow: int | None, n: int) -> int:
    """Images per row: ``nrow`` (a positive integer), or a square-ish grid of ``n`` images when it is None."""
    return int(n**0.5 + 0.999) if nrow is None else check_int("nrow", nrow, min_value=1)


def show_images(
    images: torch.Tensor,
    nrow: int | None = None,
    title: str | None = None,
    labels: Sequence | None = None,
    size: float = 0.6,
    row_labels: Sequence | None = None,
    col_labels: Sequence | None = None,
) -> plt.Figure:
    """A grid of images in [-1, 1] (clamped, so out-of-range pixels never wrap around).

    ``labels``: a title over each image; ``row_labels``: a label left of each row of the grid (say, the sampler
    that drew that row); ``col_labels``: one above each column (say, the digit its images were asked for).
    ``nrow`` is the number of images per row.
    """
    _check_images(images)
    n = images.shape[0]
    nrow = _check_nrow(nrow, n)
    check_float("size", size, min_value=0.0, max_value=10.0, min_inclusive=False)   # inches per image
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {_show(title)}")
    rows = (n + nrow - 1) // nrow
    for name, value, per in (("labels", labels, "image"), ("row_labels", row_labels, "row"),
                             ("col_labels", col_labels, "column")):
        if value is not None and (isinstance(value, str) or not hasattr(value, "__len__")):
            raise TypeError(f"{name} must be a sequence with one entry per {per} (a list, a tuple or a 1-D tensor), "
                            f"got {value!r}")
    if col_labels is not None and len(col_labels) != min(nrow, n):
        raise ValueError(f"col_labels must have one entry per column of the grid ({min(nrow, n)}), got {len(col_labels)}")
    if col_labels is not None and labels is not None:
        raise ValueError("give labels (a title over each image) or col_labels (one over each column), not both")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must have one entry per row of the grid ({rows} rows of {nrow}), "
                         f"got {len(row_labels)}")
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
        fig, axes = plt.subplots(rows, nrow, figsize=(nrow * size * 1.6, rows * size * 1.9), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for i, ax in zip(range(n), axes.flat):
            ax.imshow(images[i, 0].detach().float().cpu().clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_title(str(labels[i]), fontsize=8)
        for r, text in enumerate(row_labels or []):
            axes[r, 0].text(-0.1, 0.5, str(text), transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9)
    else:
        grid = make_grid(images, nrow)
        width = max(2.0, grid.shape[1] / 28 * size * 1.6)
        height = max(1.0, width * grid.shape[0] / grid.shape[1]) + (0.4 if title else 0.0) + (0.3 if col_labels is not None else 0.0)  # the grid's shape
        margin = 0.0 if row_labels is None else 0.08 * max(len(str(t)) for t in row_labels) + 0.2  # inches of text
        fig, ax = plt.subplots(figsize=(width + margin, height))
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
        pad, h = 2, images.shape[2]   # make_grid's padding and the image height: the centre of row r
        for r, text in enumerate(row_labels or []):
            ax.text(-pad, pad + r * (h + pad) + h / 2, str(text), ha="right", va="center", fontsize=9)
        if col_labels is not None:
            label_columns(ax, col_labels, images.shape[3], pad)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if row_labels is not None and labels is None:  # tight_layout leaves the labels outside: make room on the left
        fig.subplots_adjust(left=margin / fig.get_size_inches()[0])
    return fig


def grid_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """The PNG file of a grid of images in [-1, 1], one image pixel per file pixel times 2."""
    grid = make_grid(images, nrow)
    buffer = io.BytesIO()
    plt.imsave(buffer, grid.repeat_interleave(2, 0).repeat_interleave(2, 1).numpy(), cmap="gray", vmin=0, vmax=1,
               format="png")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> None:
    """Write :func:`grid_png` to ``path``, whole or not at all (a stopped run leaves the earlier file)."""
    if not isinstance(path, (str, os.PathLike)) or Path(path).suffix.lower() != ".png":
        raise ValueError(f"path must be a file name ending in .png, got {path!r}")
    png = grid_png(images, nrow)
    write_atomically({path: lambda fh: fh.write(png)})


def plot_schedules(schedules: dict[str, NoiseSchedule], log_snr: bool = True) -> plt.Figure:
    """Panels over the 0-based index t: beta_t, alpha_bar_t (with sqrt(alpha_bar) dashed) and, with ``log_snr``,
    log-SNR.

    Each schedule has its own colour and marker, so the curves stay apart in greyscale and for colour-blind
    readers; a dotted line marks alpha_bar = 1/2 (half the signal's variance left)."""
    check_bool("log_snr", log_snr)
    if not isinstance(schedules, Mapping):
        raise TypeError(f"schedules must map names to NoiseSchedules, such as {{'cosine': schedule}}, got "
                        f"{type(schedules).__name__}")
    if not schedules:
        raise ValueError("schedules must map at least one name to a NoiseSchedule")
    fig, axes = plt.subplots(1, 3 if log_snr else 2, figsize=(13 if log_snr else 9, 3.6))
    for i, (name, s) in enumerate(schedules.items()):
        if not isinstance(s, NoiseSchedule):
            raise TypeError(f"schedules[{name!r}] must be a NoiseSchedule, got {type(s).__name__}")
        t = torch.arange(s.num_timesteps).numpy()  # numpy for matplotlib, which warns on tensors
        style = dict(marker="osD^vP*X"[i % 8], markevery=max(1, s.num_timesteps // 8), markersize=5)
        (line,) = axes[0].plot(t, s.betas.cpu().numpy(), label=name, **style)
        axes[1].plot(t, s.alpha_bar.cpu().numpy(), color=line.get_color(), label=rf"{name}: $\bar\alpha_t$", **style)
        axes[1].plot(t, s.sqrt_alpha_bar.cpu().numpy(), color=line.get_color(), ls="--",
                     label=rf"{name}: $\sqrt{{\bar\alpha_t}}$")
        if log_snr:
            axes[2].plot(t, s.log_snr.cpu().numpy(), color=line.get_color(), label=name, **style)
    axes[0].set(title=r"$\beta_t$ (log scale)", xlabel="t (0-based)", ylabel=r"$\beta_t$", yscale="log")
    axes[1].set(title=r"signal kept: $\bar\alpha_t$ and $\sqrt{\bar\alpha_t}$", xlabel="t (0-based)")
    axes[1].axhline(0.5, color="gray", lw=0.8, ls=":")
    if log_snr:
        axes[2].set(title=r"log-SNR $=\log\frac{\bar\alpha_t}{1-\bar\alpha_t}$", xlabel="t (0-based)",
                    ylabel="log-SNR")
        axes[2].axhline(0, color="gray", lw=0.5)
    # the other panels name the colours; the middle one names its three line styles, a legend clear of the curves
    axes[1].legend(handles=[Line2D([], [], color="k", label=r"$\bar\alpha_t$"),
                            Line2D([], [], color="k", ls="--", label=r"$\sqrt{\bar\alpha_t}$"),
                            Line2D([], [], color="gray", lw=0.8, ls=":", label=r"$\bar\alpha_t = 1/2$")],
                   fontsize=9, loc="upper right")
    for ax in axes:
        if ax is not axes[1]:
            ax.legend(fontsize=9 if len(schedules) <= 3 else 8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def forward_strip(
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    timesteps: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> plt.Figure:
    """Rows of images (one row per image in ``x0``) noised by q(x_t | x_0) at each of ``timesteps``, same noise per row.

    Pixels are shown on the grey scale of [-1, 1], so noise beyond it is clipped to black or white (at the last
    steps about a third of the pixels of N(0, 1) noise); the figure says so under the strip.

    ``timesteps=None`` spreads eight steps over the schedule: (0, 50, 100, 200, 400, 600, 800, 999) for T = 1000,
    the same fractions of T otherwise."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, such as NoiseSchedule.from_name('linear', 1000), "
                        f"got {_show(schedule)}")
    check_tensor("x0", x0, ndim=4, floating=True, finite=True)
    if timesteps is None:
        T = schedule.num_timesteps
        timesteps = sorted({min(T - 1, round(f * T)) for f in (0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)} | {T - 1})
    if isinstance(timesteps, int) or not isinstance(timesteps, Sequence):
        raise TypeError(f"timesteps must be a sequence of 0-based steps, such as (0, 100, 500), got {timesteps!r}")
    timesteps = [check_int(f"timesteps[{i}]", t, min_value=0, max_value=schedule.num_timesteps - 1)
                 for i, t in enumerate(timesteps)]
    n, k = x0.shape[0], len(timesteps)
    x0 = x0.detach().cpu()  # drawn on the CPU; the noise from generator's device (noise_like checks it)
    noise = noise_like(x0, generator)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.3 * (k + 1), 1.35 * n + 0.3), squeeze=False)
    for r in range(n):
        axes[r, 0].imshow(x0[r, 0].float().numpy(), cmap="gray", vmin=-1, vmax=1)
        for c, t in enumerate(timesteps, start=1):
            xt = schedule.q_sample(x0[r : r + 1], torch.tensor([t]), noise[r : r + 1])
            axes[r, c].imshow(xt[0, 0].detach().float().clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            if r == 0:
                axes[r, c].set_title(f"t = {t}\n" + rf"$\sqrt{{\bar\alpha_t}}$ = {float(schedule.sqrt_alpha_bar[t]):.2f}",
                                     fontsize=9)
        if r == 0:
            axes[r, 0].set_title("$x_0$\n", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0.2 / fig.get_size_inches()[1], 1, 1))
    fig.text(0.5, 0.005, "pixels shown on [-1, 1]: noise beyond it is clipped to black or white", ha="center",
             va="bottom", fontsize=8, color="dimgray")
    return fig


def plot_loss(history: Sequence[float], smooth: int = 50, title: str = "training loss") -> plt.Figure:
    """The per-step loss (light) and its moving average over ``smooth`` steps (dark), log scale."""
    if isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
        raise TypeError(f"history must be a sequence of loss values, such as trainer.history, got {_show(history)}")
    history = [v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in history]  # loss tensors too
    if len(history) == 0:
        raise ValueError("history must hold at least one loss value, got an empty sequence")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in history):
        bad = next(v for v in history if not isinstance(v, numbers.Real) or isinstance(v, bool))
        raise TypeError(f"history must hold numbers (the loss of each step), got an item {_show(bad)}")
    check_int("smooth", smooth, min_value=1)
    h = torch.tensor(history, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(h.numpy(), alpha=0.3, lw=0.7, label="per step")
    if len(h) >= smooth:
        avg = h.unfold(0, smooth, 1).mean(1)
        ax.plot(torch.arange(smooth - 1, len(h)).numpy(), avg.numpy(), lw=1.5, label=f"mean of {smooth}")
    ax.set(yscale="log", xlabel="step", ylabel="MSE", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reverse_animation(
    trajectory: Sequence[tuple[int, torch.Tensor]],
    nrow: int | None = None,
    max_frames: int = 40,
    interval: int = 120,
    dpi: int = 100,
) -> animation.FuncAnimation:
    """Animate a sampler's trajectory (from ``sample(..., return_trajectory=True)``): noise to digits.

    Show it inline with ``IPython.display.HTML(anim.to_jshtml())`` or save with
    ``anim.save("reverse.gif", writer="pillow")``. At most ``max_frames`` frames are kept. ``dpi`` sets the
    frames' resolution (the figure is 4 inches wide), whatever ``rcParams["savefig.dpi"]`` says. Pixels are drawn
    as sharp squares (no smoothing), which is also what keeps the page light: noise smoothed at a high resolution
    compresses badly (30 frames of 16 noisy digits at 100 dpi: 1.2 MB of notebook this way, 4.7 MB smoothed).
    """
    if isinstance(trajectory, torch.Tensor) or not isinstance(trajectory, Sequence) or not trajectory:
        raise ValueError("trajectory must be a non-empty list of (t, x_t) pairs, the second value of "
                         f"sample(..., return_trajectory=True), got {_show(trajectory)}")
    bad = next((item for item in trajectory if not (isinstance(item, tuple) and len(item) == 2
                                                     and isinstance(item[0], numbers.Integral)
                                                     and not isinstance(item[0], bool)
                                                     and isinstance(item[1], torch.Tensor) and item[1].ndim == 4)), None)
    if bad is not None:
        raise ValueError(f"trajectory must hold (t, x_t) pairs with x_t of shape (N, C, H, W), got an item "
                         f"{_show(bad)}; unpack sample()'s result: final, trajectory = sample(..., "
                         "return_trajectory=True)")
    check_int("max_frames", max_frames, min_value=2)
    check_int("interval", interval, min_value=1)
    check_int("dpi", dpi, min_value=10)
    # evenly spread indices, the first and the last state always among them, never more than max_frames
    keep = torch.linspace(0, len(trajectory) - 1, min(max_frames, len(trajectory))).round().long().unique()
    frames = [trajectory[i] for i in keep.tolist()]
    grids = [make_grid(x, nrow).numpy() for _, x in frames]
    height, width = grids[0].shape
    fig, ax = plt.subplots(figsize=(4, 4 * height / width + 0.3), dpi=dpi)
    ax.axis("off")
    image = ax.imshow(grids[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    title = ax.set_title("")

    def update(i: int):
        image.set_data(grids[i])
        t = frames[i][0]
        title.set_text("clean" if t < 0 else f"t = {t}")
        return image, title

    anim = _FixedDpiAnimation(fig, update, frames=len(frames), interval=interval, blit=False)
    anim.dpi = dpi
    plt.close(fig)
    return anim


class _FixedDpiAnimation(animation.FuncAnimation):
    """A FuncAnimation whose ``to_jshtml``/``to_html5_video``/``save`` draw frames at its own ``dpi``, whatever
    ``rcParams["savefig.dpi"]`` says (matplotlib otherwise uses that setting)."""

    dpi: int = 100

    def save(self, *args, **kwargs):
        kwargs.setdefault("dpi", self.dpi)
        return super().save(*args, **kwargs)

    def to_jshtml(self, *args, **kwargs):
        with plt.rc_context({"savefig.dpi": self.dpi}):
            return super().to_jshtml(*args, **kwargs)

    def to_html5_video(self, *args, **kwargs):
        with plt.rc_context({"savefig.dpi": self.dpi}):
            return super().to_html5_video(*args, **kwargs)
