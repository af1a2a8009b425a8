"""stats: normalisation statistics from the train split only, and dataset counts.

Writes work/stats.json (per-channel mean/std, foreground fraction; train only, so no
test information reaches training), metrics/data.json (pairs, near-duplicate groups,
pairs per split, pairs straddling splits, skipped files) and plots/data/species.csv
(pairs, groups and pairs per split for each species; charted by `dvc plots show`).

    python stages/stats.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    import json

    from fishseg.dataset.arrays import load_split, read_index
    from fishseg.dataset.stats import channel_stats, data_metrics, species_table
    from fishseg.fsutil import atomic_write_json, atomic_write_text

    stats = channel_stats(load_split(paths, "train"))
    validation = json.loads(paths.validation_json.read_text()) if paths.validation_json.is_file() else {}
    index = read_index(paths)
    metrics = data_metrics(index, validation)
    atomic_write_json(paths.stats_json, stats)
    atomic_write_json(paths.metrics_dir / "data.json", metrics, sort_keys=False)
    atomic_write_text(paths.plots_dir / "data" / "species.csv", species_table(index).to_csv(index=False))
    log.info(
        "train mean %s std %s; straddling pairs: %d", stats["mean"], stats["std"], metrics["straddling_pairs"]
    )


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
