"""MLflow Model Registry: register each evaluated model, crown the best with an alias.

With ``mlflow.register_model: <name>``, the evaluate stage calls :func:`maybe_register`:
the model logged by the training run becomes a new version of ``<name>``, tagged with its
test IoU, and the alias ``champion`` moves to it when that IoU beats the current
champion's. Registry stages are deprecated in MLflow; aliases replace them, so a consumer
loads ``models:/<name>@champion``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from fishseg.params import Params

log = logging.getLogger(__name__)

CHAMPION = "champion"
SCORE_TAG = "test_iou"


def logged_model_id(client: Any, run_id: str) -> str | None:
    """The model the run logged last (``None`` when it logged none)."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    if not outputs:
        return None
    return max(outputs, key=lambda output: output.step).model_id


def _score(version: Any) -> float | None:
    try:
        value = float(version.tags[SCORE_TAG])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def champion(client: Any, name: str) -> Any | None:
    """The version holding the ``champion`` alias, if any."""
    import mlflow

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException as exc:
        # A missing model and a missing alias both come back as an error, not None.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def register(client: Any, name: str, run_id: str, model_id: str, test_iou: float) -> Any:
    """A version of ``name`` for this run's model: a new one, or the one made by an earlier evaluate."""
    import mlflow

    # Filter by name here, not in the query: names may hold quotes.
    existing = [
        v
        for v in client.search_model_versions(f"run_id = '{run_id}'")
        if v.name == name and v.source == f"models:/{model_id}"
    ]
    if existing:
        version = max(existing, key=lambda v: int(v.version))
        client.set_model_version_tag(name, version.version, SCORE_TAG, str(test_iou))
        log.info("model %s version %s (this run) re-scored: test IoU %.4f", name, version.version, test_iou)
        return client.get_model_version(name, version.version)
    # The fluent call also links the version to the logged model (shown in the MLflow UI).
    version = mlflow.register_model(f"models:/{model_id}", name, tags={SCORE_TAG: str(test_iou)})
    log.info("registered %s version %s (test IoU %.4f)", name, version.version, test_iou)
    return version


def maybe_register(
    params: Params, run_id: str | None, test_iou: float, *, root: Path | None = None
) -> dict[str, Any] | None:
    """Register ``run_id``'s logged model under ``mlflow.register_model``; move ``champion`` if it wins.

    Uses the store :mod:`fishseg.tracking.store` resolves for ``root``, or, without ``root``, the
    tracking URI already set in this process. Returns what happened, or ``None`` when
    registration is off or there is nothing to register.
    """
    name = params.mlflow.register_model
    if not name:
        return None
    if not run_id:
        log.warning("mlflow.register_model = %r but there is no training run to register", name)
        return None
    import mlflow

    from fishseg.tracking import store as tracking

    if root is not None:
        tracking.use_store(params.mlflow, root)
    client = mlflow.MlflowClient()
    model_id = logged_model_id(client, run_id)
    if model_id is None:
        log.warning("run %s logged no model (mlflow.log_model was off?): nothing to register", run_id)
        return None

    test_iou = round(float(test_iou), 6)
    version = register(client, name, run_id, model_id, test_iou)
    current = champion(client, name)
    current_score = _score(current) if current is not None else None
    if current is None or str(current.version) == str(version.version):
        wins = True  # the first version, or the champion itself re-evaluated
    elif current_score is None:
        # A champion without a recorded score was chosen by hand: leave that to a person.
        log.warning(
            "%s@%s (version %s) has no %s tag: the alias stays", name, CHAMPION, current.version, SCORE_TAG
        )
        wins = False
    else:
        wins = test_iou > current_score
        if not wins:
            log.info(
                "%s@%s stays version %s (test IoU %.4f >= %.4f)",
                name,
                CHAMPION,
                current.version,
                current_score,
                test_iou,
            )
    if wins:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        log.info("%s@%s is now version %s (test IoU %.4f)", name, CHAMPION, version.version, test_iou)
    return {
        "name": name,
        "version": str(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "test_iou": test_iou,
        "champion": wins,
        "previous_champion": None if current is None else str(current.version),
    }
