"""MLflow Model Registry: register each evaluated model, crown the best with an alias.

With ``mlflow.register_model: <name>``, the evaluate stage calls :func:`maybe_register`:
the model logged by the training run becomes a new version of ``<name>``, tagged with its
test IoU, and the alias ``champion`` moves to it when that IoU beats the current
champion's. Registry stages are deprecated in MLflow; aliases replace them, so a consumer
loads ``models:/<name>@champion``.

Several evaluates may run at once (``dvc queue start -j 2``) and the registry has no
transactions, so "compare, then move" could let a slower, worse model overwrite a better
one. Instead each evaluate moves the alias to the best-scored version it can see and then
reads it back, until what it reads is settled: the last evaluate to finish sees every
version, so the alias ends on the best one whatever the interleaving.
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
# Rounds of "move, then read back" before giving up (each round needs a concurrent move to repeat).
SETTLE_ROUNDS = 8


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


def _versions(client: Any, name: str) -> list[Any]:
    """Every version of ``name`` (with its tags)."""
    quote = "'" if "'" not in name else '"'
    return [v for v in client.search_model_versions(f"name = {quote}{name}{quote}") if v.name == name]


def best_version(versions: list[Any], current: Any | None) -> Any | None:
    """The version with the highest test IoU: the current champion on a tie, else the oldest."""
    scored = [v for v in versions if _score(v) is not None]
    if not scored:
        return None
    top = max(_score(v) for v in scored)
    if current is not None and _score(current) == top:
        return current
    return min((v for v in scored if _score(v) == top), key=lambda v: int(v.version))


def _move_alias(client: Any, name: str, version: str) -> bool:
    """Point ``champion`` at ``version``; ``False`` when another evaluate's write collided with it.

    A tracking server's store inserts the alias row when it sees none, so two first moves at
    once fail one of them with a unique-constraint error: the caller reads back and decides again.
    """
    import mlflow

    from fishseg.tracking.store import concurrent_write

    try:
        client.set_registered_model_alias(name, CHAMPION, version)
    except mlflow.exceptions.MlflowException as exc:
        if not concurrent_write(exc):
            raise
        log.info("%s@%s: another evaluate moved it at the same moment; reading it again", name, CHAMPION)
        return False
    return True


def settle_champion(client: Any, name: str) -> Any | None:
    """Move ``champion`` to the best-scored version and read it back until it stays; return its holder.

    A champion without a score was chosen by hand: it stays, for a person to move.
    """
    for _ in range(SETTLE_ROUNDS):
        current = champion(client, name)
        if current is not None and _score(current) is None:
            log.warning(
                "%s@%s (version %s) has no %s tag: the alias stays",
                name,
                CHAMPION,
                current.version,
                SCORE_TAG,
            )
            return current
        best = best_version(_versions(client, name), current)
        if best is None or (current is not None and str(current.version) == str(best.version)):
            return current
        if _move_alias(client, name, best.version):
            log.info("%s@%s is now version %s (test IoU %.4f)", name, CHAMPION, best.version, _score(best))
    log.warning("%s@%s kept moving (other evaluates at work): left on its last holder", name, CHAMPION)
    return champion(client, name)


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
    previous = champion(client, name)
    holder = settle_champion(client, name)
    wins = holder is not None and str(holder.version) == str(version.version)
    if not wins and holder is not None:
        log.info(
            "%s@%s stays version %s (test IoU %s; this one %.4f)",
            name,
            CHAMPION,
            holder.version,
            holder.tags.get(SCORE_TAG),
            test_iou,
        )
    return {
        "name": name,
        "version": str(version.version),
        "model_uri": f"models:/{name}/{version.version}",
        "test_iou": test_iou,
        "champion": wins,
        "previous_champion": None if previous is None else str(previous.version),
    }
