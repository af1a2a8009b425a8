"""The training history: one row per epoch, ``plots/train/history.csv`` (charted by the plot stage)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fishseg.fsutil import atomic_write_text

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_iou", "train_dice", "val_loss", "val_iou", "val_dice")


def history_row(epoch: int, lr: float, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
    """The epoch's row, rounded to 6 digits (the CSV and MLflow show the same numbers)."""
    row = {"epoch": epoch, "lr": lr}
    for split, scores in (("train", train), ("val", val)):
        row.update({f"{split}_{name}": scores[name] for name in ("loss", "iou", "dice")})
    return {k: round(float(row[k]), 6) for k in HISTORY_COLUMNS}


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    frame = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    frame["epoch"] = frame["epoch"].astype(int)
    atomic_write_text(path, frame.to_csv(index=False))
