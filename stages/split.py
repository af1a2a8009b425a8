"""split: index and validate the pairs, group near-duplicates, split, prepare arrays.

Writes work/index.csv (one row per pair with its group and split), work/validation.json
(every problem found), and work/prepared/<split>/{images,masks}.npy resized to
data.image_size, which training reads without decoding images again.

    python stages/split.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.dataset.split import prepare

    index = prepare(params.data, params.split, paths)
    log.info("indexed %d pairs in %d groups", len(index), index["group"].nunique())


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
