import numpy as np

from fishseg.dataset.splitting import assign_splits


def _data(groups_per_species=10, copies=4):
    species, groups = [], []
    for s, name in enumerate(["A", "B", "C"]):
        for g in range(groups_per_species):
            species += [name] * copies
            groups += [s * 1000 + g] * copies
    return np.array(species), np.array(groups)


def test_groups_never_straddle_splits():
    species, groups = _data()
    splits = assign_splits(species, groups, val=0.15, test=0.15, seed=1)
    for g in np.unique(groups):
        assert len(set(splits[groups == g])) == 1


def test_every_species_in_every_split_with_fractions_near_target():
    species, groups = _data(groups_per_species=20)
    splits = assign_splits(species, groups, val=0.2, test=0.2, seed=3)
    for name in "ABC":
        sel = splits[species == name]
        for split, target in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(np.mean(sel == split) - target) <= 0.06


def test_seeded_and_seed_sensitive():
    species, groups = _data()
    a = assign_splits(species, groups, val=0.15, test=0.15, seed=7)
    b = assign_splits(species, groups, val=0.15, test=0.15, seed=7)
    c = assign_splits(species, groups, val=0.15, test=0.15, seed=8)
    assert (a == b).all()
    assert (a != c).any()


def test_random_strategy_ignores_groups():
    species, groups = _data()
    splits = assign_splits(species, groups, val=0.2, test=0.2, seed=0, strategy="random")
    straddled = sum(len(set(splits[groups == g])) > 1 for g in np.unique(groups))
    assert straddled > 0


def test_tiny_species_keeps_train():
    splits = assign_splits(["A", "A"], [1, 1], val=0.2, test=0.2, seed=0)
    assert list(splits) == ["train", "train"]
    splits = assign_splits(["A"] * 4, [1, 1, 2, 2], val=0.2, test=0.2, seed=0)
    assert sorted(set(splits)) == ["test", "train"]
