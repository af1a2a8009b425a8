"""Every path the pipeline reads or writes, in one place.

Stages run from the project root (DVC's working directory). Under
``dvc exp run --temp/--queue`` that root is a copy in ``<project>/.dvc/tmp/exps/...``;
:func:`store_root` maps it back to the project, so run state kept outside git (the
MLflow store) stays in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def find_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding ``dvc.yaml`` (else ``start``)."""
    start = (start or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return start


def store_root(root: Path | None = None) -> Path:
    """The project that owns ``root``: itself, or the project around ``.dvc/tmp/exps``."""
    root = (root or find_root()).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


# Datasets shipped in the repository, by the name ``data.source`` gives them.
EMBEDDED_SOURCES = {"realfish": Path("datasets") / "realfish"}


def source_path(source: str, root: Path) -> Path:
    """Where a ``data.source`` that is not ``synthetic`` or ``kaggle`` lives on disk.

    An embedded dataset's name maps to its folder in the project; a relative path is
    taken from the project root (where DVC runs the stages), whatever the current directory.
    """
    if source in EMBEDDED_SOURCES:
        return root / EMBEDDED_SOURCES[source]
    path = Path(source).expanduser()
    return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class Paths:
    """The pipeline's files, relative to a project root.

    ``data/`` is the team's copy of the source dataset, versioned by the top-level
    ``data.dvc`` (``dvc add data``); the pipeline only reads it (``data.source: data``).
    What the data stages build from it lives in ``work/``, so no stage output overlaps
    the folder ``data.dvc`` tracks.
    """

    root: Path

    @property
    def shared_data_dir(self) -> Path:
        return self.root / "data"

    @property
    def work_dir(self) -> Path:
        return self.root / "work"

    @property
    def raw_dir(self) -> Path:
        return self.work_dir / "raw"

    @property
    def index_csv(self) -> Path:
        return self.work_dir / "index.csv"

    @property
    def prepared_dir(self) -> Path:
        return self.work_dir / "prepared"

    @property
    def validation_json(self) -> Path:
        return self.work_dir / "validation.json"

    @property
    def stats_json(self) -> Path:
        return self.work_dir / "stats.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "models" / "model"

    @property
    def last_dir(self) -> Path:
        return self.root / "models" / "last"

    @property
    def run_json(self) -> Path:
        return self.root / "models" / "run.json"

    @property
    def predictions_npz(self) -> Path:
        return self.root / "models" / "test_predictions.npz"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def prepared_split(self, split: str) -> Path:
        return self.prepared_dir / split


SPLITS = ("train", "val", "test")
