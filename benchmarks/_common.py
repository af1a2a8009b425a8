"""What the benchmarks share: the import path and a data set made by the pipeline itself.

``synthetic_project`` runs the download (``data.source: synthetic``), split and stats
stages' code into a scratch project, so the benchmarks measure on the data and the
prepared arrays that ``dvc repro`` makes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fishseg.fsutil import atomic_write_json  # noqa: E402
from fishseg.params import Params  # noqa: E402
from fishseg.paths import Paths  # noqa: E402

__all__ = ["ROOT", "Paths", "params_with", "synthetic_project"]


def params_with(**sections: dict[str, Any]) -> Params:
    """The project's params.yaml with some keys replaced: ``params_with(train={"epochs": 3})``."""
    from fishseg.params import load_params

    raw = json.loads(load_params(ROOT / "params.yaml").model_dump_json())
    for section, values in sections.items():
        for key, value in values.items():
            if isinstance(value, dict):
                raw[section][key].update(value)
            else:
                raw[section][key] = value
    return Params.model_validate(raw)


def synthetic_project(root: Path, params: Params) -> Paths:
    """``work/raw`` (synthetic archive), ``work/prepared``, ``work/stats.json`` under ``root``."""
    from fishseg.dataset.arrays import load_split
    from fishseg.dataset.split import prepare
    from fishseg.dataset.stats import channel_stats
    from fishseg.sources.fetch import fetch

    paths = Paths(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    fetch(params.data, paths.raw_dir)
    prepare(params.data, params.split, paths)
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    return paths
