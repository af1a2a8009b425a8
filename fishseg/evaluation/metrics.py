"""Segmentation metrics from pixel confusion counts.

Counts are kept per image (tp, fp, fn, tn), so the same numbers give the dataset
("micro") scores and the mean of per-image scores, and sums reduce across processes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def confusion_counts(logits: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image ``[tp, fp, fn, tn]`` (B, 4) int64 for logits/masks of shape (B, 1, H, W)."""
    pred = torch.sigmoid(logits.float()) >= threshold
    truth = masks >= 0.5
    dims = tuple(range(1, pred.ndim))
    tp = (pred & truth).sum(dims)
    fp = (pred & ~truth).sum(dims)
    fn = (~pred & truth).sum(dims)
    tn = (~pred & ~truth).sum(dims)
    return torch.stack([tp, fp, fn, tn], dim=1).long()


def _ratio(num: np.ndarray, den: np.ndarray, empty: float = 1.0) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    # An empty prediction of an empty mask is perfect, not undefined.
    return np.where(den > 0, num / np.maximum(den, 1), empty)


def scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, Dice, precision, recall, pixel accuracy for each row of ``[tp, fp, fn, tn]``."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 4)
    tp, fp, fn, tn = counts.T
    return {
        "iou": _ratio(tp, tp + fp + fn),
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "pixel_accuracy": _ratio(tp + tn, counts.sum(axis=1)),
    }


def summarize(per_image: np.ndarray) -> dict[str, float]:
    """Dataset scores (from summed counts) plus ``iou_per_image``/``dice_per_image`` means."""
    per_image = np.asarray(per_image).reshape(-1, 4)
    total = scores(per_image.sum(axis=0))
    out = {name: float(values[0]) for name, values in total.items()}
    each = scores(per_image)
    out["iou_per_image"] = float(each["iou"].mean()) if len(per_image) else 0.0
    out["dice_per_image"] = float(each["dice"].mean()) if len(per_image) else 0.0
    return out


def image_scores(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image IoU and Dice (B,) from ``[tp, fp, fn, tn]`` counts, on the counts' device."""
    c = counts.double()
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.ones_like(tp))
    dice = torch.where(union > 0, 2 * tp / (2 * tp + fp + fn).clamp(min=1), torch.ones_like(tp))
    return iou, dice


class EpochMeter:
    """Sums over an epoch that reduce across processes by addition.

    ``[loss_sum, items, tp, fp, fn, tn, iou_image_sum, dice_image_sum]``
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.sums = torch.zeros(8, dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor | float, counts: torch.Tensor) -> None:
        counts = counts.to(self.sums.device)
        b = counts.shape[0]
        iou, dice = image_scores(counts)
        loss_t = torch.as_tensor(loss, dtype=torch.float64, device=self.sums.device).detach()
        self.sums += torch.cat(
            [
                torch.stack(
                    [loss_t * b, torch.tensor(float(b), dtype=torch.float64, device=self.sums.device)]
                ),
                counts.sum(0).double(),
                torch.stack([iou.sum(), dice.sum()]),
            ]
        )

    def reduce_from_all_processes(self) -> None:
        """Sum the meter over every process of the run, in place (nothing to do in one process)."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)

    def result(self) -> dict[str, float]:
        s = self.sums.cpu().numpy()
        n = max(s[1], 1.0)
        total = scores(s[2:6])
        return {
            "loss": float(s[0] / n),
            "iou": float(total["iou"][0]),
            "dice": float(total["dice"][0]),
            "iou_per_image": float(s[6] / n),
            "dice_per_image": float(s[7] / n),
        }
