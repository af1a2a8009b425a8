"""Tests for fishseg.report.charts: every figure is written, decodes, and has a sensible size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fishseg.report import charts as plots

DPI = 50
N, H, W = 6, 32, 48
SPECIES = ["Red Mullet", "Shrimp", "Sea Bass"]


def _read_png(path: Path) -> np.ndarray:
    assert path.is_file(), f"{path} was not written"
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    # No temp file left beside the output.
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    return img


def _assert_size(img: np.ndarray, min_w: int, min_h: int) -> None:
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h, (w, h)
    assert w <= 5000 and h <= 5000, (w, h)
    # Not a blank canvas: something was drawn.
    assert img[..., :3].std() > 0.01


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    masks = np.zeros((N, H, W), np.uint8)
    probs = np.zeros((N, H, W), np.float32)
    for i in range(N):
        masks[i] = ((yy - H / 2) ** 2 / 80 + (xx - W / 2 - i) ** 2 / 200 < 1).astype(np.uint8)
        # Shifted ellipse: gives TP, FP and FN pixels.
        probs[i] = np.clip(1.2 - ((yy - H / 2) ** 2 / 80 + (xx - W / 2 + 2) ** 2 / 200), 0, 1)
    return {"images": images, "masks": masks, "probs": probs}


def _history(epochs: int) -> pd.DataFrame:
    e = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": e,
            "lr": 1e-3 * 0.5 ** (e - 1),
            "train_loss": 1.0 / e,
            "train_iou": 1 - 0.8 / e,
            "train_dice": 1 - 0.6 / e,
            "val_loss": 1.1 / e,
            "val_iou": 1 - 0.9 / e,
            "val_dice": 1 - 0.7 / e,
        }
    )


def test_plot_curves(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "curves.png"
    plots.plot_curves(_history(8).sample(frac=1, random_state=0), out, DPI)
    _assert_size(_read_png(out), 400, 300)


def test_plot_curves_single_epoch_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    out.write_bytes(b"stale")
    plots.plot_curves(_history(1), out, DPI)
    _read_png(out)


def test_plot_curves_missing_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_dice"):
        plots.plot_curves(_history(3).drop(columns="val_dice"), tmp_path / "c.png", DPI)
    assert not (tmp_path / "c.png").exists()


def test_plot_prediction_grid(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    out = tmp_path / "grid.png"
    titles = [f"{i:05d} | {SPECIES[i % 3]} | IoU {0.5 + i / 20:.3f}" for i in range(N)]
    plots.plot_prediction_grid(
        arrays["images"], arrays["masks"], arrays["probs"], titles, out, DPI, threshold=0.4
    )
    img = _read_png(out)
    _assert_size(img, 300, 400)
    # One row per sample: taller than wide for six rows.
    assert img.shape[0] > img.shape[1]


def test_plot_prediction_grid_subset_and_empty(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    idx = np.array([4, 1])
    out = tmp_path / "two.png"
    plots.plot_prediction_grid(
        arrays["images"][idx], arrays["masks"][idx], arrays["probs"][idx], ["a", "b"], out, DPI
    )
    _read_png(out)
    empty = tmp_path / "empty.png"
    plots.plot_prediction_grid(arrays["images"][:0], arrays["masks"][:0], arrays["probs"][:0], [], empty, DPI)
    _read_png(empty)


def test_plot_prediction_grid_rejects_mismatch(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        plots.plot_prediction_grid(
            arrays["images"], arrays["masks"], arrays["probs"], ["x"], tmp_path / "g.png", DPI
        )
    with pytest.raises(ValueError, match="shape"):
        plots.plot_prediction_grid(
            arrays["images"][:1],
            arrays["masks"][:1],
            arrays["probs"][:1, :, :10],
            ["x"],
            tmp_path / "g.png",
            DPI,
        )
    assert not (tmp_path / "g.png").exists()


def test_prediction_grid_rows_of_different_sizes(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Original photos differ in size: each row is drawn at its own, with a zoom column."""
    big = np.kron(arrays["images"][0], np.ones((3, 3, 1), np.uint8))  # 96x144
    big_mask = np.kron(arrays["masks"][0], np.ones((3, 3), np.uint8))
    big_prob = np.kron(arrays["probs"][0], np.ones((3, 3), np.float32))
    out = tmp_path / "sizes.png"
    plots.plot_prediction_grid(
        [arrays["images"][1], big],
        [arrays["masks"][1], big_mask],
        [arrays["probs"][1], big_prob],
        ["a", "b"],
        out,
        DPI,
    )
    img = _read_png(out)
    # Four panels a row: wider than tall for two rows.
    assert img.shape[1] > img.shape[0]


def test_edge_window_by_hand() -> None:
    truth = np.zeros((40, 80), bool)
    truth[10:30, 20:60] = True
    pred = truth.copy()
    pred[10:30, 60:70] = True  # a false-positive band right of the fish
    rows, cols = plots.edge_window(truth, pred, fraction=0.25)
    assert (rows.stop - rows.start, cols.stop - cols.start) == (10, 20)
    # The window sits on the band and holds as much of it as a window can (10 rows x 10 columns).
    assert (truth != pred)[rows, cols].sum() == 100 and cols.start >= 50
    # No errors: the window shows the fish's edge; no fish at all: the middle.
    rows, cols = plots.edge_window(truth, truth, fraction=0.25)
    assert truth[rows, cols].any() and not truth[rows, cols].all()
    assert plots.edge_window(np.zeros((40, 80), bool), np.zeros((40, 80), bool), 0.25) == (
        slice(15, 25),
        slice(30, 50),
    )


def test_error_overlay_colours() -> None:
    image = np.zeros((1, 4, 3), np.uint8)
    truth = np.array([[True, True, False, False]])
    pred = np.array([[True, False, True, False]])
    out = plots._error_overlay(image, truth, pred)
    # TP green, FN yellow, FP red, TN untouched.
    assert out[0, 0, 1] > out[0, 0, 0] and out[0, 0, 1] > out[0, 0, 2]
    assert out[0, 1, 0] > 0 and out[0, 1, 1] > 0 and out[0, 1, 2] == 0
    assert out[0, 2, 0] > out[0, 2, 1] and out[0, 2, 0] > out[0, 2, 2]
    assert (out[0, 3] == 0).all()


def test_select_examples_best_worst_exact() -> None:
    ious = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.95, 0.2])
    sel = plots.select_examples(ious, k=3, seed=0)
    assert sel["best"].tolist() == [5, 1, 3]
    assert sel["worst"].tolist() == [2, 6, 4]
    assert set(sel) == {"random", "best", "worst"}
    assert len(sel["random"]) == 3
    assert len(set(sel["random"].tolist())) == 3
    assert all(0 <= i < len(ious) for i in sel["random"])
    for arr in sel.values():
        assert np.issubdtype(arr.dtype, np.integer)


def test_select_examples_random_deterministic() -> None:
    ious = np.linspace(0, 1, 50)
    a = plots.select_examples(ious, k=5, seed=7)["random"]
    b = plots.select_examples(ious, k=5, seed=7)["random"]
    np.testing.assert_array_equal(a, b)
    draws = {tuple(plots.select_examples(ious, k=5, seed=s)["random"].tolist()) for s in range(5)}
    assert len(draws) > 1


def test_select_examples_k_larger_than_n_and_zero() -> None:
    ious = np.array([0.3, 0.1, 0.2])
    sel = plots.select_examples(ious, k=10, seed=1)
    assert sel["best"].tolist() == [0, 2, 1]
    assert sel["worst"].tolist() == [1, 2, 0]
    assert sorted(sel["random"].tolist()) == [0, 1, 2]
    assert all(len(v) == 0 for v in plots.select_examples(ious, k=0, seed=1).values())
    assert all(len(v) == 0 for v in plots.select_examples(np.array([]), k=3, seed=1).values())
    with pytest.raises(ValueError):
        plots.select_examples(ious, k=-1, seed=1)


def test_select_examples_ties_and_nan() -> None:
    ious = np.array([0.5, np.nan, 0.5, 0.9, 0.5])
    sel = plots.select_examples(ious, k=2, seed=0)
    assert sel["best"].tolist() == [3, 0]
    assert sel["worst"].tolist() == [0, 2]
    assert 1 not in plots.select_examples(ious, k=5, seed=0)["best"]


def test_plot_species_bars(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "species": ["Shrimp", "Red Mullet", "Hourse Mackerel", "Sea Bass"],
            "n_images": [10, 12, 9, 11],
            "iou": [0.61, 0.88, 0.74, np.nan],
            "dice": [0.75, 0.93, 0.85, np.nan],
        }
    )
    out = tmp_path / "species.png"
    plots.plot_species_bars(df, out, DPI)
    _assert_size(_read_png(out), 300, 150)


def test_plot_confusion(tmp_path: Path) -> None:
    out = tmp_path / "confusion.png"
    plots.plot_confusion(np.array([[900_000, 12_345], [6_789, 80_000]]), out, DPI)
    _assert_size(_read_png(out), 200, 200)
    # A class absent from the test pixels must not break the figure.
    plots.plot_confusion(np.array([[100, 0], [0, 0]]), tmp_path / "degenerate.png", DPI)
    _read_png(tmp_path / "degenerate.png")


def test_plot_confusion_rejects_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2x2"):
        plots.plot_confusion(np.zeros((3, 3)), tmp_path / "c.png", DPI)
    with pytest.raises(ValueError, match="non-negative"):
        plots.plot_confusion(np.array([[1, -1], [0, 1]]), tmp_path / "c.png", DPI)


def _index(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    species = [SPECIES[i % 3] for i in range(n)]
    split = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15])
    return pd.DataFrame(
        {
            "id": [f"{i:05d}" for i in range(n)],
            "species": species,
            "image": [f"data/raw/{s}/{i:05d}.png" for i, s in enumerate(species)],
            "mask": [f"data/raw/{s} GT/{i:05d}.png" for i, s in enumerate(species)],
            "width": 590,
            "height": 445,
            "fg_frac": rng.uniform(0.02, 0.3, size=n),
            "group": [f"g{i // 2}" for i in range(n)],
            "split": split,
        }
    )


def test_plot_dataset_overview(tmp_path: Path) -> None:
    index = _index()
    # A split with no images (here val) must simply be absent from the figure.
    index = index[index["split"] != "val"]
    out = tmp_path / "overview.png"
    stats = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.25], "fg_frac": 0.12}
    plots.plot_dataset_overview(index, out, DPI, stats=stats)
    img = _read_png(out)
    _assert_size(img, 400, 200)
    assert img.shape[1] > img.shape[0]


def test_plot_sample_pairs(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    images = list(arrays["images"][:5]) + [np.zeros((40, 30, 3), np.uint8)]
    # Raw Kaggle masks are 0/255; the last one is empty and a different size.
    masks = [m * 255 for m in arrays["masks"][:5]] + [np.zeros((40, 30), np.uint8)]
    titles = [f"{SPECIES[i % 3]} #{i}" for i in range(6)]
    out = tmp_path / "samples.png"
    plots.plot_sample_pairs(images, masks, titles, out, DPI)
    _assert_size(_read_png(out), 200, 150)
    with pytest.raises(ValueError, match="does not match"):
        plots.plot_sample_pairs(images[:1], [np.zeros((3, 3))], ["x"], tmp_path / "bad.png", DPI)
