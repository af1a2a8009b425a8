"""Figures for the pipeline: training curves, prediction grids, evaluation and EDA plots.

Every function takes in-memory data and writes one PNG. Figures are built with the
object-oriented API (``Figure`` + Agg canvas), so nothing touches pyplot's global figure
registry or the user's backend, and a figure is freed as soon as it is written. The PNG is
rendered in memory and written atomically, so a crashed stage never leaves half a file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from fishseg.fsutil import atomic_write_bytes
from fishseg.training.history import HISTORY_COLUMNS

# One palette for every figure, so train/val and the splits read the same everywhere.
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
LR_COLOR = "#7f7f7f"
IOU_COLOR = "#2a9d8f"
DICE_COLOR = "#e9c46a"
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
SPLIT_ORDER = ("train", "val", "test")

# Overlay colours (RGB 0-255). The photos show fish on a blue surface, where blue or cyan
# would vanish: ground truth is magenta and FN yellow.
GT_RGB = (255, 0, 200)
TP_RGB = (0, 200, 0)
FP_RGB = (230, 0, 0)
FN_RGB = (255, 215, 0)
PRED_EDGE_RGB = (0, 255, 60)
OVERLAY_ALPHA = 0.55
# The zoom of a prediction grid row shows this fraction of the photo's width and height.
ZOOM_FRACTION = 0.25

PER_SPECIES_COLUMNS = ("species", "n_images", "iou", "dice")
INDEX_COLUMNS = ("species", "fg_frac", "split")

__all__ = [
    "edge_window",
    "plot_confusion",
    "plot_curves",
    "plot_dataset_overview",
    "plot_prediction_grid",
    "plot_sample_pairs",
    "plot_species_bars",
    "select_examples",
]


# --------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: Path, dpi: int) -> None:
    """Render ``fig`` to PNG bytes and write them atomically (temp file beside, then rename)."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        atomic_write_bytes(Path(out_png), buf.getvalue())
    finally:
        # Drop artists and image buffers now rather than at garbage collection.
        fig.clear()


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(df.columns)}")


def _placeholder(out_png: Path, dpi: int, title: str, message: str) -> None:
    """An explicit 'nothing to show' figure, so a declared output always exists."""
    fig = _new_figure(6, 2.5)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, transform=ax.transAxes)
    _save(fig, out_png, dpi)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An (H, W, 3) uint8 view of a grey, RGB or RGBA image (uint8 or float in [0, 1])."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return img


def _as_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask; any non-zero value is fish (so 0/1 and 0/255 masks both work)."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.any(axis=2) if m.shape[2] > 1 else m[:, :, 0]
    if m.shape != shape:
        raise ValueError(f"mask shape {m.shape} does not match image shape {shape}")
    return m > 0


def _tint(image: np.ndarray, where: np.ndarray, rgb: tuple[int, int, int], alpha: float) -> np.ndarray:
    """Blend ``rgb`` into ``image`` at ``where`` (returns a new uint8 array)."""
    out = image.astype(np.float32)
    out[where] = (1.0 - alpha) * out[where] + alpha * np.asarray(rgb, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _outline(ax: Axes, mask: np.ndarray, rgb: tuple[int, int, int], width: float = 1.5) -> None:
    # contour() needs both levels present; an all-fish or empty mask has no boundary.
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[np.asarray(rgb) / 255.0], linewidths=width)


def _image_axes(
    ax: Axes, image: np.ndarray, title: str | None = None, interpolation: str = "nearest"
) -> None:
    ax.imshow(image, interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _grid_shape(n: int, max_cols: int = 6) -> tuple[int, int]:
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return math.ceil(n / cols), cols


# --------------------------------------------------------------------------- training


def plot_curves(history: pd.DataFrame, out_png: Path, dpi: int) -> None:
    """Loss, IoU and Dice per epoch (train and val) and the learning rate, as a 2x2 grid.

    The epoch with the best validation IoU (the one kept as the model) is marked.
    """
    _require_columns(history, HISTORY_COLUMNS, "training history")
    hist = history.sort_values("epoch").reset_index(drop=True)
    if hist.empty:
        _placeholder(out_png, dpi, "Training curves", "no epochs recorded")
        return
    epochs = hist["epoch"].to_numpy()
    # Markers help when there are only a few epochs; on long runs they clutter.
    marker = "o" if len(hist) <= 30 else None
    fig = _new_figure(11, 7.5)
    axes = fig.subplots(2, 2, sharex=True)
    _score_panels(axes, hist, epochs, marker)
    _lr_panel(axes[1, 1], epochs, hist["lr"].to_numpy(dtype=float), marker)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    # Integer epoch ticks: fractional epochs mean nothing.
    axes[1, 0].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(f"Training curves ({len(hist)} epochs)", fontsize=13)
    _save(fig, out_png, dpi)


def _score_panels(axes: Any, hist: pd.DataFrame, epochs: np.ndarray, marker: str | None) -> None:
    """Loss, IoU and Dice (train solid, val) with the best val IoU epoch marked."""
    best_val = hist["val_iou"].to_numpy(dtype=float)
    best_epoch = int(epochs[int(np.nanargmax(best_val))]) if np.isfinite(best_val).any() else None
    panels = (
        (axes[0, 0], "loss", "Loss"),
        (axes[0, 1], "iou", "IoU"),
        (axes[1, 0], "dice", "Dice"),
    )
    for ax, key, label in panels:
        ax.plot(epochs, hist[f"train_{key}"], color=TRAIN_COLOR, marker=marker, ms=3, label="train")
        ax.plot(epochs, hist[f"val_{key}"], color=VAL_COLOR, marker=marker, ms=3, label="val")
        ax.set_title(label)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if key != "loss":
            ax.set_ylim(-0.02, 1.02)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="k", ls="--", lw=0.8, alpha=0.6)
        ax.legend(loc="best", fontsize=9)
    if best_epoch is not None:
        val = float(np.nanmax(best_val))
        axes[0, 1].annotate(
            f"best val IoU {val:.3f}\n(epoch {best_epoch})",
            xy=(best_epoch, val),
            xytext=(0.5, 0.12),
            textcoords="axes fraction",
            ha="center",
            fontsize=9,
            arrowprops={"arrowstyle": "->", "color": "k", "lw": 0.8},
        )


def _lr_panel(ax: Axes, epochs: np.ndarray, lr: np.ndarray, marker: str | None) -> None:
    ax.plot(epochs, lr, color=LR_COLOR, marker=marker, ms=3)
    ax.set_title("Learning rate")
    ax.set_ylabel("lr")
    # A log scale only pays off when the schedule spans more than a decade.
    positive = lr[np.isfinite(lr) & (lr > 0)]
    if positive.size == lr.size and positive.size and positive.max() / positive.min() > 10:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


# --------------------------------------------------------------------------- predictions


def select_examples(ious: np.ndarray, k: int, seed: int) -> dict[str, np.ndarray]:
    """Indices of ``k`` random (seeded), best (highest IoU) and worst (lowest IoU) samples.

    Each array holds ``min(k, N)`` indices (fewer for best/worst when some IoUs are NaN,
    which are never ranked). Best is ordered best-first, worst worst-first, random by
    index; ties keep index order, so the choice is deterministic.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores = np.asarray(ious, dtype=np.float64).ravel()
    n = scores.size
    finite = np.flatnonzero(np.isfinite(scores))
    # Stable sorts keep the lower index first among equal scores.
    ascending = finite[np.argsort(scores[finite], kind="stable")]
    descending = finite[np.argsort(-scores[finite], kind="stable")]
    rng = np.random.default_rng(seed)
    random = np.sort(rng.choice(n, size=min(k, n), replace=False)) if n else np.empty(0, np.intp)
    return {
        "random": random.astype(np.intp),
        "best": descending[:k].astype(np.intp),
        "worst": ascending[:k].astype(np.intp),
    }


def _error_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    out = _tint(image, truth & pred, TP_RGB, OVERLAY_ALPHA)
    out = _tint(out, ~truth & pred, FP_RGB, OVERLAY_ALPHA)
    return _tint(out, truth & ~pred, FN_RGB, OVERLAY_ALPHA)


def edge_window(truth: np.ndarray, pred: np.ndarray, fraction: float = ZOOM_FRACTION) -> tuple[slice, slice]:
    """Rows and columns of the window (``fraction`` of each side) worth zooming into.

    The window holding the most wrong pixels (false positives and negatives); with none,
    the most of the true fish's edge; with no fish either, the middle. The window is then
    centred on what it holds. Ties take the top-left-most window: the choice is deterministic.
    """
    h, w = truth.shape
    wh, ww = max(1, min(h, round(h * fraction))), max(1, min(w, round(w * fraction)))
    weight = truth != pred
    if not weight.any():
        weight = _edge(truth)
    if not weight.any():
        top, left = (h - wh) // 2, (w - ww) // 2
        return slice(top, top + wh), slice(left, left + ww)
    # Sum of the weight in the window whose top-left corner is at each pixel.
    integral = np.pad(weight.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[wh:, ww:] - integral[:-wh, ww:] - integral[wh:, :-ww] + integral[:-wh, :-ww]
    top, left = (int(v) for v in np.unravel_index(int(np.argmax(sums)), sums.shape))
    # Centre the window on what it holds, so the edge is not on the window's own border.
    ys, xs = np.nonzero(weight[top : top + wh, left : left + ww])
    top = int(np.clip(round(top + ys.mean() - (wh - 1) / 2), 0, h - wh))
    left = int(np.clip(round(left + xs.mean() - (ww - 1) / 2), 0, w - ww))
    return slice(top, top + wh), slice(left, left + ww)


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return mask & ~inner


def _zoom_axes(ax: Axes, image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> tuple[slice, slice]:
    """The photo, untinted, magnified around :func:`edge_window`, with both edges drawn on it."""
    rows, cols = edge_window(truth, pred)
    ax.imshow(image[rows, cols], interpolation="nearest")
    _outline(ax, truth[rows, cols], GT_RGB, width=1.2)
    _outline(ax, pred[rows, cols], PRED_EDGE_RGB, width=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"zoom: x {cols.start}-{cols.stop}, y {rows.start}-{rows.stop}", fontsize=9)
    return rows, cols


def _mark_window(ax: Axes, rows: slice, cols: slice) -> None:
    box = Rectangle(
        (cols.start - 0.5, rows.start - 0.5),
        cols.stop - cols.start,
        rows.stop - rows.start,
        fill=False,
        edgecolor="white",
        linewidth=1.2,
        linestyle="--",
    )
    ax.add_patch(box)


def _checked_rows(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], probs: Sequence[np.ndarray], threshold: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(image, truth, prediction) per row, each row's three at one size (a ValueError says which is not)."""
    rows = []
    for i, (image, mask, prob) in enumerate(zip(images, masks, probs, strict=True)):
        rgb = _as_rgb(image)
        truth = _as_mask(mask, rgb.shape[:2])
        prob = np.asarray(prob, dtype=np.float32)
        if prob.shape != truth.shape:
            raise ValueError(f"probs[{i}] shape {prob.shape} does not match image shape {truth.shape}")
        rows.append((rgb, truth, prob >= threshold))
    return rows


def plot_prediction_grid(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    titles: Sequence[str],
    out_png: Path,
    dpi: int,
    threshold: float = 0.5,
) -> None:
    """One row per sample: image | ground truth | prediction coloured TP/FP/FN | zoom on an edge.

    Each row is an (H, W, 3) uint8 image with its (H, W) {0, 1} mask and (H, W) fish
    probabilities, all at one size (rows may differ): the original photos and the
    full-resolution predictions make the edges worth looking at. A pixel is predicted fish
    when ``prob >= threshold``. The zoom (its window dashed on the prediction) shows the
    photo untinted where the prediction is most wrong, with the true edge (magenta) and
    the predicted edge (green) drawn on it. ``titles`` label the rows (id, IoU).
    """
    n = len(images)
    if not (len(masks) == len(probs) == len(titles) == n):
        raise ValueError(
            f"images, masks, probs and titles differ in length: {n}, {len(masks)}, {len(probs)}, {len(titles)}"
        )
    if n == 0:
        _placeholder(out_png, dpi, "Predictions", "no samples")
        return
    rows = _checked_rows(images, masks, probs, threshold)
    aspect = float(np.median([image.shape[0] / image.shape[1] for image, _, _ in rows]))
    col_w = 3.2
    # Leave room per row for the titles and for the legend at the bottom.
    fig = _new_figure(4 * col_w, n * (col_w * aspect + 0.45) + 0.6)
    axes = fig.subplots(n, 4, squeeze=False)
    for i, (image, truth, pred) in enumerate(rows):
        # Photos are shrunk to fit their panel: smooth them rather than drop pixels.
        _image_axes(axes[i, 0], image, str(titles[i]), interpolation="antialiased")
        _image_axes(axes[i, 1], _tint(image, truth, GT_RGB, OVERLAY_ALPHA), "ground truth", "antialiased")
        _outline(axes[i, 1], truth, GT_RGB)
        overlay = _error_overlay(image, truth, pred)
        _image_axes(axes[i, 2], overlay, f"prediction (p >= {threshold:g})", interpolation="antialiased")
        _mark_window(axes[i, 2], *_zoom_axes(axes[i, 3], image, truth, pred))
    legend = [
        Patch(color=np.asarray(GT_RGB) / 255, label="ground truth"),
        Patch(color=np.asarray(TP_RGB) / 255, label="true positive"),
        Patch(color=np.asarray(FP_RGB) / 255, label="false positive"),
        Patch(color=np.asarray(FN_RGB) / 255, label="false negative"),
        Line2D([], [], color=np.asarray(GT_RGB) / 255, label="true edge (zoom)"),
        Line2D([], [], color=np.asarray(PRED_EDGE_RGB) / 255, label="predicted edge (zoom)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=6, fontsize=9, frameon=False)
    _save(fig, out_png, dpi)


# --------------------------------------------------------------------------- evaluation


def plot_species_bars(per_species: pd.DataFrame, out_png: Path, dpi: int) -> None:
    """Horizontal IoU and Dice bars per species, best species at the top, values printed."""
    _require_columns(per_species, PER_SPECIES_COLUMNS, "per-species table")
    if per_species.empty:
        _placeholder(out_png, dpi, "Test IoU and Dice per species", "no species")
        return
    # Ascending IoU puts the best species at the top: barh draws from the bottom up.
    df = per_species.sort_values(["iou", "species"], ascending=[True, False]).reset_index(drop=True)
    y = np.arange(len(df))
    bar_h = 0.38
    fig = _new_figure(8, 1.2 + 0.55 * len(df))
    ax = fig.add_subplot()
    for offset, key, color, label in (
        (bar_h / 2, "iou", IOU_COLOR, "IoU"),
        (-bar_h / 2, "dice", DICE_COLOR, "Dice"),
    ):
        values = df[key].to_numpy(dtype=float)
        bars = ax.barh(y + offset, np.nan_to_num(values), height=bar_h, color=color, label=label)
        labels = ["n/a" if not np.isfinite(v) else f"{v:.3f}" for v in values]
        ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
    ax.set_yticks(y, [f"{s} (n={int(c)})" for s, c in zip(df["species"], df["n_images"], strict=True)])
    macro = float(np.nanmean(df["iou"].to_numpy(dtype=float))) if df["iou"].notna().any() else float("nan")
    if np.isfinite(macro):
        ax.axvline(macro, color="k", ls="--", lw=0.8, alpha=0.6, label=f"mean IoU {macro:.3f}")
    # Room to the right of a full bar for its printed value.
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("score")
    ax.grid(True, axis="x", alpha=0.3)
    # Outside the axes: inside, it would hide the printed values of some bar.
    fig.legend(loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    ax.set_title("Test IoU and Dice per species")
    _save(fig, out_png, dpi)


def plot_confusion(confusion: np.ndarray, out_png: Path, dpi: int) -> None:
    """2x2 pixel confusion heatmap: counts and row-normalised percentages.

    ``confusion`` is ``[[tn, fp], [fn, tp]]``: rows are the actual class (background,
    fish), columns the predicted one. Colour shows the row-normalised rate.
    """
    cm = np.asarray(confusion)
    if cm.shape != (2, 2):
        raise ValueError(f"confusion must be 2x2 [[tn, fp], [fn, tp]], got shape {cm.shape}")
    if (cm < 0).any():
        raise ValueError("confusion counts must be non-negative")
    counts = cm.astype(np.int64)
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(row_sums > 0, counts / np.maximum(row_sums, 1), np.nan)

    fig = _new_figure(5.6, 4.6)
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0.0, vmax=1.0)
    names = ["background", "fish"]
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    cell_names = [["TN", "FP"], ["FN", "TP"]]
    for r in range(2):
        for c in range(2):
            rate = rates[r, c]
            pct = "n/a" if not np.isfinite(rate) else f"{100 * rate:.1f}%"
            # White text on dark cells, black on light ones.
            color = "white" if np.isfinite(rate) and rate > 0.5 else "black"
            ax.text(
                c,
                r,
                f"{cell_names[r][c]}\n{counts[r, c]:,}\n({pct})",
                ha="center",
                va="center",
                color=color,
                fontsize=11,
            )
    fig.colorbar(im, ax=ax, label="share of actual class")
    total = int(counts.sum())
    acc = (counts[0, 0] + counts[1, 1]) / total if total else float("nan")
    ax.set_title(f"Pixel confusion (test)\n{total:,} pixels, accuracy {acc:.3f}", fontsize=11)
    _save(fig, out_png, dpi)


# --------------------------------------------------------------------------- data


def _ordered_splits(splits: Sequence[str]) -> list[str]:
    present = set(splits)
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def _split_color(split: str, i: int) -> Any:
    return SPLIT_COLORS.get(split, f"C{(i + 3) % 10}")


def plot_dataset_overview(
    index: pd.DataFrame, out_png: Path, dpi: int, stats: Mapping[str, Any] | None = None
) -> None:
    """Images per species stacked by split, and the foreground-fraction histogram per split.

    ``stats`` (the train statistics, optional) adds the train mean foreground fraction
    and the channel mean/std to the figure.
    """
    _require_columns(index, INDEX_COLUMNS, "dataset index")
    if index.empty:
        _placeholder(out_png, dpi, "Dataset overview", "no images")
        return
    splits = _ordered_splits(index["split"].astype(str).tolist())
    counts = pd.crosstab(index["species"], index["split"].astype(str)).reindex(columns=splits, fill_value=0)
    # Largest species at the top of the horizontal bars.
    counts = counts.loc[counts.sum(axis=1).sort_values(kind="stable").index]

    fig = _new_figure(13, max(4.5, 1.5 + 0.4 * len(counts)))
    ax_bar, ax_hist = fig.subplots(1, 2, width_ratios=[1.2, 1])
    _species_bars(ax_bar, counts, splits, len(index))
    _foreground_histogram(ax_hist, index, splits, stats)
    title = "Dataset overview"
    if stats is not None and "mean" in stats and "std" in stats:
        mean = ", ".join(f"{float(v):.3g}" for v in stats["mean"])
        std = ", ".join(f"{float(v):.3g}" for v in stats["std"])
        title += f"   (train RGB mean [{mean}], std [{std}])"
    fig.suptitle(title, fontsize=13)
    _save(fig, out_png, dpi)


def _species_bars(ax: Axes, counts: pd.DataFrame, splits: list[str], total: int) -> None:
    """Horizontal bars per species, stacked by split, with each species' total at its end."""
    left = np.zeros(len(counts))
    y = np.arange(len(counts))
    for i, split in enumerate(splits):
        values = counts[split].to_numpy()
        ax.barh(y, values, left=left, color=_split_color(split, i), label=f"{split} ({values.sum()})")
        left += values
    for yi, species_total in zip(y, left, strict=True):
        ax.text(species_total, yi, f" {int(species_total)}", va="center", fontsize=8)
    ax.set_yticks(y, counts.index.astype(str))
    ax.set_xlabel("images")
    ax.set_xlim(0, left.max() * 1.12 if left.max() > 0 else 1)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    ax.set_title(f"Images per species and split ({total} total)")


def _foreground_histogram(
    ax: Axes, index: pd.DataFrame, splits: list[str], stats: Mapping[str, Any] | None
) -> None:
    """The foreground fraction per split, as each split's share of images."""
    fg = index["fg_frac"].to_numpy(dtype=float)
    hi = float(np.nanmax(fg)) if np.isfinite(fg).any() else 1.0
    # Few bins for small datasets, or every bar is noise.
    n_bins = int(np.clip(round(math.sqrt(len(index))), 8, 30))
    bins = np.linspace(0.0, max(hi * 1.05, 1e-3), n_bins + 1)
    for i, split in enumerate(splits):
        values = index.loc[index["split"].astype(str) == split, "fg_frac"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        # Share of each split's images, so splits of different sizes compare directly.
        weights = np.full(values.size, 1.0 / values.size)
        ax.hist(
            values,
            bins=bins,
            weights=weights,
            histtype="step",
            lw=1.8,
            color=_split_color(split, i),
            label=split,
        )
    if stats is not None and stats.get("fg_frac") is not None:
        train_fg = float(stats["fg_frac"])
        ax.axvline(train_fg, color="k", ls="--", lw=0.8, label=f"train mean {train_fg:.3f}")
    ax.set_xlabel("foreground fraction (fish pixels / all pixels)")
    ax.set_ylabel("share of split's images")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title("Foreground fraction per split")


def plot_sample_pairs(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], titles: Sequence[str], out_png: Path, dpi: int
) -> None:
    """A grid of raw images, each with its mask tinted and outlined (images may differ in size)."""
    n = len(images)
    if not (len(masks) == len(titles) == n):
        raise ValueError(f"images, masks and titles differ in length: {n}, {len(masks)}, {len(titles)}")
    if n == 0:
        _placeholder(out_png, dpi, "Sample images", "no samples")
        return
    rgb = [_as_rgb(img) for img in images]
    fish = [_as_mask(m, img.shape[:2]) for m, img in zip(masks, rgb, strict=True)]
    rows, cols = _grid_shape(n)
    # Size cells by the median aspect ratio so typical images fill their cell.
    aspect = float(np.median([img.shape[0] / img.shape[1] for img in rgb]))
    cell_w = 3.0
    fig = _new_figure(cols * cell_w, rows * (cell_w * aspect + 0.4) + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        _image_axes(ax, _tint(rgb[i], fish[i], GT_RGB, 0.25), str(titles[i]))
        _outline(ax, fish[i], GT_RGB)
    fig.suptitle(f"Sample images with ground-truth masks ({n})", fontsize=12)
    _save(fig, out_png, dpi)
