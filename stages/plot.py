"""plot: draw the figures into plots/png and attach them to the MLflow run.

Training curves, per-species IoU bars, the pixel confusion matrix, prediction grids of
random, best and worst test images (photo | truth | prediction overlay | zoom on the
edge where it is most wrong; the original photos under data/raw with the full-resolution
predictions the evaluate stage scored), and dataset figures (images per species and
split, foreground fraction, sample pairs).

    python stages/plot.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.report.figures import make_figures

    written = make_figures(params, paths)
    log.info("wrote %d figures to %s", len(written), paths.plots_dir / "png")


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
