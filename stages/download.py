"""download: bring the dataset into work/raw in the archive's layout.

data.source picks where it comes from: `synthetic` (built-in generator, offline),
`kaggle` (the Kaggle API; credentials from KAGGLE_USERNAME/KAGGLE_KEY or
~/.kaggle/kaggle.json), or a path to a .zip archive or a folder. work/raw is replaced
only when the new copy is complete and valid.

    python stages/download.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.sources.fetch import fetch

    summary = fetch(params.data, paths.raw_dir)
    log.info("work/raw ready: %s", summary)


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
