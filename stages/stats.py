"""stats: normalisation statistics from the train split only, and dataset counts.

Writes data/stats.json (per-channel mean/std, foreground fraction; train only, so no
test information reaches training) and metrics/data.json (counts per split and species,
groups, near-duplicate pairs straddling splits, skipped files).

    python stages/stats.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    import json

    from fishseg.dataset.arrays import load_split, read_index
    from fishseg.dataset.stats import channel_stats, data_metrics
    from fishseg.fsutil import atomic_write_json

    stats = channel_stats(load_split(paths, "train"))
    validation = json.loads(paths.validation_json.read_text()) if paths.validation_json.is_file() else {}
    metrics = data_metrics(read_index(paths), validation)
    atomic_write_json(paths.stats_json, stats)
    atomic_write_json(paths.metrics_dir / "data.json", metrics)
    log.info(
        "train mean %s std %s; straddling pairs: %d", stats["mean"], stats["std"], metrics["straddling_pairs"]
    )


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
