"""ddpm_helpers.viz: figure shapes follow the image grid; animations keep their own resolution."""

import base64
import gc
import struct

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_helpers import viz  # noqa: E402
from ddpm_helpers.schedules import NoiseSchedule  # noqa: E402


@pytest.mark.parametrize("n, nrow", [(8, 8), (16, None), (64, 16), (4, 1)])
def test_show_images_figure_has_the_grids_aspect_ratio(n, nrow):
    images = torch.rand(n, 1, 28, 28) * 2 - 1
    grid = viz.make_grid(images, nrow)
    fig = viz.show_images(images, nrow=nrow)
    width, height = fig.get_size_inches()
    plt.close(fig)
    expected = grid.shape[1] / grid.shape[0]   # a one-row strip is wide and flat, not a square with blank bands
    if height > 1.0:                           # (1 inch is the floor for very flat strips)
        assert width / height == pytest.approx(expected, rel=0.01)
    else:
        assert width / height <= expected


def trajectory(steps=50, n=4):
    generator = torch.Generator().manual_seed(0)
    return [(t, torch.randn(n, 1, 28, 28, generator=generator)) for t in range(steps - 1, -2, -1)]


def png_sizes(html):
    """(width, height) of every embedded PNG frame of an animation's HTML (read from each PNG's header)."""
    sizes = []
    for part in html.split("data:image/png;base64,")[1:]:
        head = base64.b64decode(part[:48])
        sizes.append(struct.unpack(">II", head[16:24]))
    return sizes


def test_reverse_animation_frames_and_resolution_ignore_rcparams():
    traj = trajectory(steps=100, n=16)
    for dpi in (50, 100):
        anim = viz.reverse_animation(traj, max_frames=40, dpi=dpi)
        with plt.rc_context({"savefig.dpi": 300}):   # a learner's own setting must not blow the page up
            html = anim.to_jshtml()
        sizes = png_sizes(html)
        assert 20 <= len(sizes) <= 41 and {w for w, _ in sizes} == {4 * dpi}, (dpi, set(sizes))
        assert len(html) < 2_500_000, (dpi, len(html))   # sharp pixels of noise compress (about 1.2 MB here)


@pytest.mark.filterwarnings("ignore:Animation was deleted")
def test_reverse_animation_keeps_the_first_and_last_state():
    traj = trajectory(steps=100)
    anim = viz.reverse_animation(traj, max_frames=10)
    frames = list(anim.new_frame_seq())
    assert len(frames) == 10   # max_frames, no more (it was 11 before 2026-12-04)
    with pytest.raises(ValueError, match="dpi"):
        viz.reverse_animation(traj, dpi=0)
    with pytest.raises(ValueError, match="trajectory"):
        viz.reverse_animation([])
    del anim, frames   # never rendered: collect it here, under this test's filter, not during the next test
    gc.collect()


@pytest.mark.parametrize("with_titles", [False, True])
def test_row_labels_sit_left_of_their_rows_in_order(with_titles):
    images = torch.rand(12, 1, 28, 28) * 2 - 1
    names = ["DDPM", "DDIM 10 steps", "DPM++(2M) 10 steps"]
    fig = viz.show_images(images, nrow=4, row_labels=names, labels=list(range(12)) if with_titles else None)
    fig.canvas.draw()
    texts = [t for ax in fig.axes for t in ax.texts]
    assert [t.get_text() for t in texts] == names
    boxes = [t.get_window_extent() for t in texts]
    image_left = min(ax.get_window_extent().x0 for ax in fig.axes)
    assert all(b.x1 <= image_left + 1 for b in boxes)                  # left of the images
    assert [b.y0 for b in boxes] == sorted((b.y0 for b in boxes), reverse=True)   # first label on top
    assert all(b.x0 >= 0 for b in boxes)                              # and inside the figure
    plt.close(fig)
    with pytest.raises(ValueError, match=r"row_labels must have one entry per row of the grid \(3 rows of 4\), got 2"):
        viz.show_images(images, nrow=4, row_labels=names[:2])


@pytest.mark.filterwarnings("ignore:Animation was deleted")
@pytest.mark.parametrize("states,max_frames", [(11, 4), (11, 3), (11, 10), (41, 40), (5, 40), (2, 2)])
def test_reverse_animation_keeps_at_most_max_frames_first_and_last(states, max_frames):
    traj = [(states - 2 - i, torch.zeros(1, 1, 4, 4)) for i in range(states)]   # t from states-2 down to -1
    anim = viz.reverse_animation(traj, max_frames=max_frames)
    shown = list(anim.new_frame_seq())
    assert len(shown) == min(states, max_frames)      # the budget is used, never exceeded
    # each frame's title is its state's t: the noise first, the clean image last, in order (review, 2026-12-05:
    # the count alone would pass with the last frames dropped)
    titles = [anim._func(i)[1].get_text() for i in shown]
    assert titles[0] == f"t = {states - 2}" and titles[-1] == "clean"
    ts = [int(text[4:]) for text in titles[:-1]]
    assert ts == sorted(set(ts), reverse=True)
    plt.close("all")
    del anim, shown   # never rendered: collect it here, under this test's filter
    gc.collect()


def test_a_row_wider_than_the_images_is_one_row_of_them_not_a_huge_white_canvas():
    from ddpm_helpers.viz import make_grid

    images = torch.zeros(3, 1, 4, 4)
    assert make_grid(images, nrow=10**8).shape == make_grid(images, nrow=3).shape == (2 + 4 + 2, 3 * (4 + 2) + 2)


def test_forward_strip_takes_low_precision_images_and_draws_its_noise_on_the_generator():
    """The noise has the images' dtype (q_sample refuses noise that would change x_t's dtype), and a seeded
    generator gives the same strip twice."""
    from ddpm_helpers.schedules import NoiseSchedule

    s = NoiseSchedule.from_name("linear", 100)
    x0 = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for images in (x0, x0.bfloat16(), x0.double()):
        plt.close(viz.forward_strip(s, images, (0, 50, 99)))
    drawn = []
    for _ in range(2):
        fig = viz.forward_strip(s, x0, (0, 50, 99), generator=torch.Generator().manual_seed(3))
        drawn.append(fig.axes[2].images[0].get_array().copy())
        plt.close(fig)
    assert (drawn[0] == drawn[1]).all()


def test_column_labels_sit_over_the_centres_of_their_columns():
    """col_labels (notebooks 05 and 06: the digit each column's images were asked for) name the columns of the grid
    in order, each over the middle of its column (review, 2026-12-05)."""
    images = torch.rand(23, 1, 28, 28) * 2 - 1
    fig = viz.show_images(images, nrow=10, col_labels=range(10))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]
    grid_width = viz.make_grid(images, nrow=10).shape[1]
    centres = [2 + 30 * c + 13.5 for c in range(10)]   # 2 px of padding before each 28-px image
    assert list(ax.get_xticks()) == centres and centres[-1] + 14.5 + 2 == grid_width
    plt.close(fig)
    with pytest.raises(ValueError, match=r"col_labels must have one entry per column of the grid \(10\), got 3"):
        viz.show_images(images, nrow=10, col_labels=[1, 2, 3])
    with pytest.raises(ValueError, match="not both"):
        viz.show_images(images[:10], nrow=10, col_labels=range(10), labels=range(10))
    with pytest.raises(TypeError, match="labels must be a non-empty sequence"):
        viz.label_columns(ax, 5)


def points_under_legends(fig):
    """(axes title, line label, number of points) for every plotted line whose points lie inside its axes' legend box."""
    fig.canvas.draw()
    covered = []
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent()
        for line in ax.get_lines():
            xy = line.get_transform().transform(line.get_xydata())  # display coordinates, axhline's too
            inside = int(((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)).sum())
            if inside:
                covered.append((ax.get_title(), line.get_label(), inside))
    return covered


@pytest.mark.parametrize("names", [("linear", "cosine", "sigmoid"), ("linear",), ("cosine",)])
def test_schedule_plot_legends_cover_no_curve(names):
    """Notebook 01 asks the learner to read where the curves cross 1/2; the middle panel's six-entry legend used to
    hide the cosine sqrt(alpha_bar) curve and the dotted line at 1/2 there."""
    fig = viz.plot_schedules({name: NoiseSchedule.from_name(name, 1000) for name in names})
    try:
        assert points_under_legends(fig) == []
    finally:
        plt.close(fig)


def test_make_grid_maps_minus_one_to_black_and_one_to_white_in_reading_order():
    """Pixels in [-1, 1] become [0, 1] by (x + 1) / 2 (-1 black, 0 mid-grey, 1 white), image i goes to row i // nrow
    and column i % nrow, and the padding is white."""
    images = torch.tensor([-1.0, 0.0, 1.0, -0.5, 0.5]).reshape(5, 1, 1, 1).expand(5, 1, 2, 2)
    grid = viz.make_grid(images, nrow=3, padding=1)     # 2 rows of 3 cells of 2x2 pixels
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1)
    cells = [grid[1 + 3 * r : 3 + 3 * r, 1 + 3 * c : 3 + 3 * c] for r in range(2) for c in range(3)]
    for cell, value in zip(cells, [0.0, 0.5, 1.0, 0.25, 0.75, 1.0]):   # the sixth cell is empty: white
        assert torch.equal(cell, torch.full((2, 2), value))
    assert (grid[0] == 1).all() and (grid[:, 0] == 1).all()


def test_plot_loss_draws_each_step_and_the_moving_mean_at_each_windows_last_step():
    history = [1.0, 9.0, 2.0, 2.0, 30.0, 1.0]
    fig = viz.plot_loss(history, smooth=3)
    raw, mean = fig.axes[0].get_lines()
    assert list(raw.get_ydata()) == history
    assert list(mean.get_xdata()) == [2, 3, 4, 5]
    assert mean.get_ydata() == pytest.approx([4.0, 13 / 3, 34 / 3, 11.0])   # means, not medians (2, 2, 2, 2)
    plt.close(fig)
