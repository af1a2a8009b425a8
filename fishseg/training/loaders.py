"""Datasets and loaders over the prepared arrays.

Items are read from memory-mapped ``.npy`` arrays (no decoding), augmented on the CPU
and returned as uint8 tensors; conversion to float and normalisation happen on the
device, per batch. Every random choice derives from ``(seed, epoch, index)``, so a run
is reproducible whatever the number of workers and after a resume.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fishseg.dataset.arrays import PreparedSplit, load_split
from fishseg.errors import FishsegError
from fishseg.params import Params
from fishseg.paths import Paths
from fishseg.training.augment import build_augmentation
from fishseg.training.runtime import Runtime

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed per (run seed, epoch, item)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


def seed_transform(transform: A.Compose, seed: int) -> None:
    """Make ``transform``'s next call depend on ``seed`` alone.

    One generator pair shared by all the transforms: seeding each one on its own
    (``Compose.set_random_seed``) takes longer than the flips and colour shifts
    themselves at training sizes.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


class SegmentationDataset(Dataset):
    """(image uint8 (3,H,W), mask uint8 (1,H,W)) pairs; keys are ``(index, seed)`` tuples."""

    def __init__(self, split: PreparedSplit, transform: A.Compose | None = None) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        image = np.asarray(self.split.images[index])
        mask = np.asarray(self.split.masks[index])
        if self.transform is not None:
            seed_transform(self.transform, seed)
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        # Memory-mapped rows are read-only: copy before handing them to torch.
        mask = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True))[None]
        return image, mask


class EpochSampler(Sampler):
    """Shuffles per epoch, shards across ranks, and hands each item its augmentation seed.

    ``set_epoch`` works with persistent workers because sampling happens in the main
    process. Shards are padded to equal length (as DistributedSampler does) so every
    rank runs the same number of steps.
    """

    def __init__(
        self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = math.ceil(n / world_size) if pad else len(range(rank, n, world_size))
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; ``start`` skips this rank's first items (resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.pad and self.world_size > 1:
            extra = self.per_rank * self.world_size - self.n
            order = np.concatenate([order, order[:extra]])
        for index in order[self.rank :: self.world_size][self.start : self.per_rank]:
            yield int(index), sample_seed(self.seed, self.epoch, int(index))


def make_loader(
    dataset: SegmentationDataset,
    sampler: EpochSampler,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    drop_last: bool = False,
) -> DataLoader:
    """A loader with worker processes kept alive across epochs when there are any."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        drop_last=drop_last,
    )


@dataclass(frozen=True)
class TrainingData:
    """What training reads: the train and val splits and the train split's statistics."""

    train: PreparedSplit
    val: PreparedSplit
    stats: dict

    @property
    def ids(self) -> dict[str, list[str]]:
        return {"train": self.train.ids, "val": self.val.ids}


def load_training_data(paths: Paths) -> TrainingData:
    """The prepared train/val arrays and ``data/stats.json``; a clear error when a stage has not run."""
    if not paths.stats_json.is_file():
        raise FishsegError(f"{paths.stats_json}: missing; run the stats stage first (dvc repro stats)")
    stats = json.loads(paths.stats_json.read_text())
    data = TrainingData(load_split(paths, "train"), load_split(paths, "val"), stats)
    if len(data.train) == 0:
        raise FishsegError("the train split is empty; add data or lower split.val/split.test")
    if len(data.val) == 0:
        log.warning("the val split is empty; the model of the last epoch is kept")
    return data


def build_loaders(params: Params, data: TrainingData, runtime: Runtime) -> tuple[DataLoader, DataLoader]:
    """Train (augmented, shuffled, padded shards) and val (in order, each item once) loaders."""
    train, d = params.train, runtime.dist
    train_loader = make_loader(
        SegmentationDataset(data.train, build_augmentation(params.augment, params.data.image_size)),
        EpochSampler(len(data.train), shuffle=True, seed=train.seed, rank=d.rank, world_size=d.world_size),
        batch_size=train.batch_size,
        num_workers=runtime.workers,
        pin_memory=runtime.pin_memory,
    )
    val_loader = make_loader(
        SegmentationDataset(data.val),
        EpochSampler(
            len(data.val), shuffle=False, seed=train.seed, rank=d.rank, world_size=d.world_size, pad=False
        ),
        batch_size=train.batch_size,
        num_workers=min(runtime.workers, 2),
        pin_memory=runtime.pin_memory,
    )
    return train_loader, val_loader
