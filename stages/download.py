"""download: bring the dataset into work/raw in the archive's layout.

data.source picks where it comes from: `realfish` (the 252 real photos shipped in
datasets/realfish, offline), `synthetic` (built-in generator, offline),
`kaggle` (the Kaggle API, with the kaggle package's own credential lookup:
KAGGLE_API_TOKEN, KAGGLE_USERNAME/KAGGLE_KEY, ~/.kaggle/kaggle.json or `kaggle auth
login`), or a path to a .zip archive or a folder, such as `data` (the team's copy,
versioned by data.dvc). work/raw is replaced only when the new copy is complete and
valid.

    python stages/download.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.sources.fetch import fetch

    summary = fetch(params.data, paths.raw_dir, root=paths.root)
    log.info("work/raw ready: %s", summary)


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
