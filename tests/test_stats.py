"""metrics/data.json: a handful of scalars; the per-species counts as a table."""

from __future__ import annotations

import pandas as pd

from fishseg.dataset.stats import SPECIES_COLUMNS, data_metrics, species_table


def _index() -> pd.DataFrame:
    # Trout: groups 0 (3 copies, train) and 1 (2 copies: one in val, one in test: straddles).
    # Shrimp: group 2 (2 copies, train), group 3 (1, test).
    return pd.DataFrame(
        {
            "species": ["Trout"] * 5 + ["Shrimp"] * 3,
            "group": [0, 0, 0, 1, 1, 2, 2, 3],
            "split": ["train", "train", "train", "val", "test", "train", "train", "test"],
        }
    )


def test_data_metrics_are_a_few_ordered_scalars():
    metrics = data_metrics(_index(), {"on_invalid": "skip", "problems": [{"kind": "x"}, {"kind": "y"}]})
    assert metrics == {
        "pairs": 8,
        "groups": 4,
        "train_pairs": 5,
        "val_pairs": 1,
        "test_pairs": 2,
        "straddling_pairs": 1,
        "skipped_files": 2,
    }
    assert list(metrics)[:2] == ["pairs", "groups"]  # the order of `dvc exp show`'s columns
    # With on_invalid: error a problem stops the split stage, so nothing was skipped.
    assert data_metrics(_index(), {"on_invalid": "error", "problems": [{}]})["skipped_files"] == 0


def test_species_table_counts_pairs_groups_and_splits():
    table = species_table(_index())
    assert list(table.columns) == SPECIES_COLUMNS
    rows = {r.species: (r.pairs, r.groups, r.train, r.val, r.test) for r in table.itertuples()}
    assert rows == {"Shrimp": (3, 2, 2, 0, 1), "Trout": (5, 2, 3, 1, 1)}
