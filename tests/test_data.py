import numpy as np
import torch

from fishseg.dataset.arrays import load_split
from fishseg.model.normalize import Normalizer
from fishseg.params import AugmentParams
from fishseg.training.augment import build_augmentation
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader

from .helpers import write_prepared


def test_sampler_shards_cover_everything_and_pad_evenly():
    shards = [list(EpochSampler(10, shuffle=True, seed=1, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    assert {i for s in shards for i, _ in s} == set(range(10))


def test_sampler_is_seeded_per_epoch_and_resumes_mid_epoch():
    s = EpochSampler(20, shuffle=True, seed=5)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1
    s.set_epoch(0, start=8)
    assert list(s) == e0[8:] and len(s) == 12


def test_dataset_items_are_uint8_and_augmentation_is_reproducible(tmp_path):
    paths = write_prepared(tmp_path, counts={"train": 4, "val": 2, "test": 2})
    split = load_split(paths, "train")
    aug = build_augmentation(AugmentParams(hflip=1.0, rotate_p=1.0, rotate_limit=30), (32, 32))
    ds = SegmentationDataset(split, aug)
    img, mask = ds[(0, 123)]
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)
    assert mask.shape == (1, 32, 32) and set(mask.unique().tolist()) <= {0, 1}
    img2, mask2 = ds[(0, 123)]
    assert torch.equal(img, img2) and torch.equal(mask, mask2)
    img3, _ = ds[(0, 124)]
    assert not torch.equal(img, img3)


def test_loader_batches_and_normalizer(tmp_path):
    paths = write_prepared(tmp_path, counts={"train": 6, "val": 2, "test": 2})
    split = load_split(paths, "train")
    loader = make_loader(
        SegmentationDataset(split),
        EpochSampler(6, shuffle=False, seed=0),
        batch_size=4,
        num_workers=0,
        pin_memory=False,
    )
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert torch.equal(
        batches[0][0][0], torch.from_numpy(np.asarray(split.images[0]).transpose(2, 0, 1).copy())
    )
    norm = Normalizer([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x = norm(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8))
    assert torch.allclose(x, torch.full_like(x, 2.0))
