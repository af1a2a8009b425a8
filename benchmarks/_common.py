"""What the benchmarks share: the import path and a data set made by the pipeline itself.

``synthetic_project`` runs the download (``data.source``, synthetic in the benchmarks), split and stats
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

__all__ = ["ROOT", "Paths", "params_with", "pin_like_the_stages", "synthetic_project"]


def pin_like_the_stages(main: bool) -> bool:
    """Pin the CPU environment as the train stage does when params.yaml asks (``train.reproducible``).

    Call it before torch is imported, with ``main`` true when the benchmark runs as a
    script (``__name__ == "__main__"``; an import, by a test, leaves the environment as it
    is): a benchmark that trains in-process then runs the numerics the pipeline runs.
    Returns the setting, which configs cannot change later.
    """
    from fishseg.device import prepare_cpu_numerics
    from fishseg.params import load_params

    reproducible = load_params(ROOT / "params.yaml").train.reproducible
    if main:
        prepare_cpu_numerics(reproducible)
    return reproducible


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
    """``work/raw``, ``work/prepared``, ``work/stats.json`` under ``root``, from ``params.data``.

    The benchmarks pass ``data.source: synthetic`` (params.yaml's default is the real
    photos); a relative source resolves from the project root, as in the download stage.
    """
    from fishseg.dataset.arrays import load_split
    from fishseg.dataset.split import prepare
    from fishseg.dataset.stats import channel_stats
    from fishseg.sources.fetch import fetch

    paths = Paths(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    fetch(params.data, paths.raw_dir, root=ROOT)  # a relative source is the project's, as in the stage
    prepare(params.data, params.split, paths)
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    return paths
