"""evaluate: score the best model on the test split and add the numbers to its MLflow run.

Writes metrics/eval.json (IoU micro and per image, Dice, precision, recall, pixel
accuracy), plots/eval/per_species.csv, plots/eval/per_image.csv, and the test
predictions (models/test_predictions.npz) that the plot stage draws.

    python stages/evaluate.py [--params params.yaml]
"""

import _bootstrap  # noqa: F401

from fishseg.cli import log, run_stage


def body(params, paths, args):
    from fishseg.device import prepare_cpu_numerics

    prepare_cpu_numerics(params.train.reproducible)  # before torch is imported
    from fishseg.evaluation.evaluate import evaluate

    metrics = evaluate(params, paths)
    log.info(
        "test IoU %.4f (per image %.4f), Dice %.4f", metrics["iou"], metrics["iou_per_image"], metrics["dice"]
    )


if __name__ == "__main__":
    raise SystemExit(run_stage(__doc__, body))
