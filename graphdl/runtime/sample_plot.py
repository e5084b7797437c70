"""The PNG `graphdl sample` writes, chosen by the shape of the samples.

- [N, 2]: a scatter of the points (the real data of a split beside them in another
  colour, when given; or each point coloured by an integer label, such as the class of
  the digit an autoencoder encoded, with a legend of the labels);
- [N, H, W], [N, H, W, C] (C = 1, 3 or 4), or [N, D] with D a perfect square (or an
  explicit H x W = D): a grid of images, about sqrt(N) columns;
- [N, D] otherwise: a grid of small line plots (signals such as MNIST-1D's);
- integer [N, H, W]: class maps (a segmentation's class per pixel), each class in its own
  colour with a legend, the input image and the true map (`truth`) beside each.

When the graph's input has the output's shape (a reconstruction: the input came from a
data split or a file), each input is drawn beside its output. Large N are cut to the
first MAX_IMAGES images or MAX_LINES plots (the .npy holds them all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphdl.runtime.writing import write_figure

MAX_IMAGES = 256
MAX_LINES = 64


class LayoutError(Exception):
    """Samples of a shape no plot fits, or a --shape that does not match them."""


@dataclass(frozen=True)
class Layout:
    """How to draw [N, ...] samples: "scatter", "images" (each as `image_shape`) or
    "lines"."""

    kind: str
    image_shape: tuple[int, ...] = ()

    def describe(self, n: int, paired: bool) -> str:
        shown = {"scatter": n, "images": min(n, MAX_IMAGES), "classes": min(n, MAX_IMAGES),
                 "lines": min(n, MAX_LINES)}[self.kind]
        what = {"scatter": "a scatter of", "images": "a grid of", "lines": "line plots of",
                "classes": "a grid of class maps of"}
        first = "" if shown == n else f"the first {shown} of "
        pairs = " beside their inputs" if paired else ""
        return f"{what[self.kind]} {first}{n} samples{pairs}"


def choose_layout(shape: tuple[int, ...], image: tuple[int, int] | None = None,
                  integer: bool = False) -> Layout:
    """The plot for samples of `shape` ([N, ...]); `image` is --shape H,W for [N, D];
    `integer` samples of [N, H, W] are class maps."""
    if len(shape) < 2:
        raise LayoutError(f"the samples have shape {shape}; sample plots a batch [N, ...] "
                          "with at least one axis per sample")
    rest = shape[1:]
    if integer and len(rest) == 2 and image is None:
        return Layout("classes", rest)
    if image is not None:
        h, w = image
        if h < 1 or w < 1 or math.prod(rest) != h * w:
            raise LayoutError(f"--shape {h},{w}: the samples have shape {shape}, "
                              f"{math.prod(rest)} values each, not {h} x {w} = {h * w}")
        return Layout("images", (h, w))
    if len(rest) == 1:
        d = rest[0]
        if d == 2:
            return Layout("scatter")
        side = math.isqrt(d)
        if side > 1 and side * side == d:
            return Layout("images", (side, side))
        return Layout("lines")
    if len(rest) == 2:
        return Layout("images", rest)
    if len(rest) == 3 and rest[2] in (1, 3, 4):
        return Layout("images", rest if rest[2] != 1 else rest[:2])
    raise LayoutError(f"the samples have shape {shape}; sample draws [N, 2] points, images "
                      "[N, H, W] or [N, H, W, C] with C = 1, 3 or 4, or [N, D] vectors")


def plot_samples(samples: np.ndarray, layout: Layout, path: Path, *, title: str,
                 inputs: np.ndarray | None = None, real: np.ndarray | None = None,
                 real_name: str = "real", labels: np.ndarray | None = None,
                 label_name: str = "label", class_names: list[str] | None = None) -> None:
    """Write the PNG of `samples` to `path`; `inputs` (same shape) are drawn beside them,
    `real` [M, 2] points under a scatter, and `labels` [N] (integers) colour its points.
    For class maps, `inputs` are images [N, H, W(, C)], `labels` the true maps [N, H, W]
    and `class_names` name the classes in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if layout.kind == "classes":
        fig = _class_grid(plt, np.asarray(samples), inputs, labels, label_name, class_names)
        fig.suptitle(title, fontsize=10)
        write_figure(fig, path)
        return
    samples = np.asarray(samples, np.float32)
    if layout.kind == "scatter":
        fig = _scatter(plt, samples, inputs, real, real_name, labels, label_name)
    elif layout.kind == "images":
        fig = _image_grid(plt, samples, inputs, layout.image_shape)
    else:
        fig = _line_grid(plt, samples, inputs)
    fig.suptitle(title, fontsize=10)
    write_figure(fig, path)


def _scatter(plt, points, inputs, real, real_name, labels=None, label_name="label"):
    fig, ax = plt.subplots(figsize=(5, 5) if labels is None else (6.5, 5))
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=4, c="tab:orange", alpha=0.5, linewidths=0,
                   label=f"{real_name} ({len(real)})")
    if inputs is not None:
        ax.scatter(inputs[:, 0], inputs[:, 1], s=4, c="tab:gray", alpha=0.5, linewidths=0,
                   label=f"inputs ({len(inputs)})")
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, c="tab:blue", alpha=0.5, linewidths=0,
                   label=f"samples ({len(points)})")
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(loc="upper right", fontsize=8, markerscale=3)
        return fig
    values = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    size = 10 if len(points) <= 2000 else 4  # a few hundred codes: dots big enough to see
    for i, value in enumerate(values):
        mine = labels == value
        ax.scatter(points[mine, 0], points[mine, 1], s=size, color=cmap(i % cmap.N),
                   alpha=0.7, linewidths=0, label=f"{label_name} = {value} ({int(mine.sum())})")
    ax.set_aspect("equal", adjustable="datalim")
    # outside the axes: ten classes would hide the points they name
    fig.subplots_adjust(left=0.08, right=0.74)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, markerscale=2,
              frameon=False)
    return fig


def _image_grid(plt, samples, inputs, image_shape):
    count = min(len(samples), MAX_IMAGES)
    images = samples[:count].reshape(count, *image_shape)
    if inputs is not None:  # each input, a gap, its output: one wider cell
        before = np.asarray(inputs[:count], np.float32).reshape(count, *image_shape)
        gap = np.full_like(images[:, :, :1], np.nan)
        images = np.concatenate([before, gap, images], axis=2)
    low, high = _value_range(images)
    cols = max(1, round(math.sqrt(count))) if inputs is None else \
        max(1, round(math.sqrt(count / 2)))
    rows = -(-count // cols)
    h, w = images.shape[1:3]
    pad = 1
    colour = images.ndim == 4
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:]),
                     np.nan, np.float32)
    for i in range(count):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
               pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    scale = min(10.0, max(3.0, 0.06 * max(canvas.shape[:2])))  # inches of the longer side
    width = scale * canvas.shape[1] / max(canvas.shape[:2])
    height = scale * canvas.shape[0] / max(canvas.shape[:2])
    fig = plt.figure(figsize=(width, height + 0.4))  # 0.4 inch above for the title
    ax = fig.add_axes((0.0, 0.0, 1.0, height / (height + 0.4)))
    if colour:  # RGB(A) in [0, 1]; the gaps white
        shown = np.nan_to_num((canvas - low) / max(high - low, 1e-12), nan=1.0)
        ax.imshow(np.clip(shown, 0, 1), interpolation="nearest")
    else:
        cmap = plt.get_cmap("gray").with_extremes(bad="white")
        ax.imshow(np.ma.masked_invalid(canvas), cmap=cmap, vmin=low, vmax=high,
                  interpolation="nearest")
    ax.set_axis_off()
    return fig


def _class_grid(plt, maps, inputs, truth, truth_name, class_names):
    """Rows of (input | truth | prediction) cells, in RGB: the input grey, each class of
    the maps one colour of tab10/tab20 (the same colour in truth and prediction)."""
    count = min(len(maps), MAX_IMAGES)
    panels = [np.asarray(maps[:count])]
    titles = ["predicted"]
    if truth is not None:
        panels.insert(0, np.asarray(truth[:count]))
        titles.insert(0, truth_name)
    classes = int(max(p.max() for p in panels)) + 1 if panels[0].size else 1
    classes = max(classes, len(class_names or ()))
    cmap = plt.get_cmap("tab10" if classes <= 10 else "tab20")
    palette = np.array([cmap(i % cmap.N)[:3] for i in range(classes)], np.float32)
    cells = [palette[np.clip(p, 0, classes - 1)] for p in panels]  # [count, H, W, 3] each
    if inputs is not None:
        x = np.asarray(inputs[:count], np.float32)
        x = x if x.ndim == 4 else x[..., None]
        x = np.repeat(x[..., :1], 3, axis=-1) if x.shape[-1] != 3 else x
        low, high = _value_range(x)
        cells.insert(0, np.clip((x - low) / max(high - low, 1e-12), 0, 1))
        titles.insert(0, "input")
    gap = np.ones_like(cells[0][:, :, :1])
    row = [cells[0]]
    for cell in cells[1:]:
        row += [gap, cell]
    images = np.concatenate(row, axis=2)
    cols = max(1, round(math.sqrt(count / len(cells))))
    rows = -(-count // cols)
    h, w = images.shape[1:3]
    pad = 2
    canvas = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i in range(count):
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h,
               pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    scale = min(12.0, max(4.0, 0.03 * max(canvas.shape[:2])))
    width = scale * canvas.shape[1] / max(canvas.shape[:2])
    height = scale * canvas.shape[0] / max(canvas.shape[:2])
    fig = plt.figure(figsize=(width + 1.6, height + 0.6))  # room for the legend, the title
    ax = fig.add_axes((0.0, 0.0, width / (width + 1.6), height / (height + 0.6)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    from matplotlib.patches import Patch
    names = [class_names[i] if class_names and i < len(class_names) else str(i)
             for i in range(classes)]
    handles = [Patch(color=palette[i], label=f"{i} {names[i]}" if class_names else names[i])
               for i in range(classes)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False,
               title=" | ".join(titles), title_fontsize=7)
    return fig


def _value_range(images: np.ndarray) -> tuple[float, float]:
    """[0, 1] or [-1, 1] when the values lie in it (a sigmoid's or tanh's output keeps its
    meaning), else their own range."""
    finite = images[np.isfinite(images)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    if low >= -1 and high <= 1:
        return -1.0, 1.0
    return low, high if high > low else low + 1


def _line_grid(plt, samples, inputs):
    count = min(len(samples), MAX_LINES)
    cols = max(1, round(math.sqrt(count)))
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.1 * rows + 0.4),
                             squeeze=False, sharex=True)
    flat = samples.reshape(len(samples), -1)
    before = None if inputs is None else np.asarray(inputs, np.float32).reshape(len(inputs), -1)
    for i, ax in enumerate(axes.flat):
        if i < count:
            if before is not None:
                ax.plot(before[i], color="tab:gray", linewidth=0.8)
            ax.plot(flat[i], color="tab:blue", linewidth=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
