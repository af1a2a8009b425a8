"""Loader throughput: prepared memory-mapped arrays vs decoding PNGs per item.

Both loaders serve the same pairs (the train split of a synthetic data set that the
pipeline's own download and split code makes) with the same augmentation
(``fishseg.training.augment``, one seed per item and epoch), the same sampler and the same
DataLoader settings; the only difference is where an item comes from: a row of the
split stage's arrays, or the 590x445 PNG pair decoded and resized on every read (what a
loader without the split stage's preparation does).

    python benchmarks/loader_speed.py [--photos 6] [--copies 4] [--size 96 128] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common
import cv2
import numpy as np
import torch

from fishseg.dataset.arrays import load_split, read_index
from fishseg.dataset.index import read_mask, read_rgb, resize_mask
from fishseg.training.augment import build_augmentation
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader, seed_transform


class PngDataset(torch.utils.data.Dataset):
    """Decode + resize per item, then the pipeline's augmentation: the baseline."""

    def __init__(self, files: list[tuple[Path, Path]], size: tuple[int, int], transform) -> None:
        self.files, self.size, self.transform = files, size, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        height, width = self.size
        image_path, mask_path = self.files[index]
        # The split stage's decode and resize, done here on every read.
        image = cv2.resize(read_rgb(image_path), (width, height), interpolation=cv2.INTER_AREA)
        mask = resize_mask(read_mask(mask_path)[0], self.size)
        seed_transform(self.transform, seed)
        out = self.transform(image=image, mask=mask)
        image = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return image, torch.from_numpy(np.ascontiguousarray(out["mask"]))[None]


def images_per_second(dataset, workers: int, batch_size: int, epochs: int) -> float:
    """Items per second over ``epochs`` full passes, after one warm-up pass (worker start-up)."""
    sampler = EpochSampler(len(dataset), shuffle=True, seed=0)
    loader = make_loader(dataset, sampler, batch_size=batch_size, num_workers=workers, pin_memory=False)
    sampler.set_epoch(0)
    for _ in loader:
        pass
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for _ in loader:
            pass
    return len(dataset) * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=6, help="synthetic photos per species (9 species)")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per photo")
    parser.add_argument("--size", type=int, nargs=2, default=[96, 128], help="training size: height width")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    size = tuple(args.size)
    torch.set_num_threads(1)  # loaders are CPU work per item; keep the comparison about that

    params = _common.params_with(
        data={
            "source": "synthetic",
            "image_size": list(size),
            "synthetic": {"photos_per_species": args.photos, "copies_per_photo": args.copies},
        }
    )
    augmentation = build_augmentation(params.augment, size)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _common.synthetic_project(Path(tmp), params)
        split = load_split(paths, "train")
        index = read_index(paths).set_index("id")
        files = [(paths.root / index.at[i, "image"], paths.root / index.at[i, "mask"]) for i in split.ids]
        arrays = SegmentationDataset(split, augmentation)
        pngs = PngDataset(files, size, augmentation)
        for a, b in zip(arrays[(3, 7)], pngs[(3, 7)], strict=True):  # same item, same augmentation
            assert torch.equal(a, b)

        print(
            f"loader images/s, {len(split)} train pairs, {size[0]}x{size[1]}, batch {args.batch_size}, augmentation on"
        )
        print(f"{'workers':>8} {'prepared arrays':>16} {'PNG decode':>12} {'ratio':>7}")
        for workers in args.workers:
            fast = images_per_second(arrays, workers, args.batch_size, args.epochs)
            slow = images_per_second(pngs, workers, args.batch_size, args.epochs)
            print(f"{workers:>8} {fast:>16.0f} {slow:>12.0f} {fast / slow:>6.1f}x")


if __name__ == "__main__":
    main()
