"""Loader throughput: prepared memory-mapped arrays vs decoding PNGs per item.

Both loaders serve the same pairs with the same augmentation (``fishseg.augment``, one
seed per item and epoch), the same sampler and the same DataLoader settings; the only
difference is where an item comes from: a row of the split stage's arrays, or a
590x445 PNG pair decoded and resized on every read (what a loader without the split
stage's preparation does).

    python benchmarks/loader_speed.py [--n 192] [--size 96 128] [--epochs 3] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on the import path)
import cv2
import numpy as np
import torch

from fishseg.augment import build_augmentation
from fishseg.data import EpochSampler, SegmentationDataset, make_loader
from fishseg.dataset_index import decode_pairs, read_mask, read_rgb, scan_pairs
from fishseg.params import AugmentParams
from fishseg.prepared import PreparedSplit, save_split


class PngDataset(torch.utils.data.Dataset):
    """Decode + resize per item, then the pipeline's augmentation: the baseline."""

    def __init__(self, pairs: list, size: tuple[int, int], transform) -> None:
        self.pairs, self.size, self.transform = pairs, size, transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        height, width = self.size
        pair = self.pairs[index]
        image = cv2.resize(read_rgb(pair.image), (width, height), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(read_mask(pair.mask)[0], (width, height), interpolation=cv2.INTER_NEAREST)
        self.transform.set_random_seed(seed)
        out = self.transform(image=image, mask=mask)
        image = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(out["mask"]))[None]


def prepare_arrays(raw: Path, out: Path, size: tuple[int, int]) -> tuple[PreparedSplit, list]:
    """What the split stage does once: decode, resize, store; then open memory-mapped."""
    scan = scan_pairs(raw)
    decoded = list(decode_pairs(scan.pairs, size, []))
    out.mkdir(parents=True)
    save_split(
        out,
        np.stack([d.image for d in decoded]),
        np.stack([d.mask for d in decoded]),
        [str(i) for i in range(len(decoded))],
    )
    images = np.load(out / "images.npy", mmap_mode="r")
    masks = np.load(out / "masks.npy", mmap_mode="r")
    return PreparedSplit(images, masks, [str(i) for i in range(len(images))]), scan.pairs


def images_per_second(dataset, n: int, workers: int, batch_size: int, epochs: int) -> float:
    """Items per second over ``epochs`` full passes, after one warm-up pass (worker start-up)."""
    sampler = EpochSampler(n, shuffle=True, seed=0)
    loader = make_loader(dataset, sampler, batch_size=batch_size, num_workers=workers, pin_memory=False)
    sampler.set_epoch(0)
    for _ in loader:
        pass
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return n * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=192, help="image/mask pairs")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="training size: height width")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    size = tuple(args.size)
    torch.set_num_threads(1)  # loaders are CPU work per item; keep the comparison about that

    augmentation = build_augmentation(AugmentParams(), size)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        _common.write_png_archive(raw, args.n)
        prepared, pairs = prepare_arrays(raw, Path(tmp) / "prepared", size)
        arrays = SegmentationDataset(prepared, augmentation)
        pngs = PngDataset(pairs, size, augmentation)
        for a, b in zip(arrays[(3, 7)], pngs[(3, 7)], strict=True):  # same item, same augmentation
            assert torch.equal(a, b)

        print(
            f"loader images/s, {args.n} pairs, {size[0]}x{size[1]}, batch {args.batch_size}, augmentation on"
        )
        print(f"{'workers':>8} {'prepared arrays':>16} {'PNG decode':>12} {'ratio':>7}")
        for workers in args.workers:
            fast = images_per_second(arrays, len(pairs), workers, args.batch_size, args.epochs)
            slow = images_per_second(pngs, len(pairs), workers, args.batch_size, args.epochs)
            print(f"{workers:>8} {fast:>16.0f} {slow:>12.0f} {fast / slow:>6.1f}x")


if __name__ == "__main__":
    main()
