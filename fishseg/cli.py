"""The shared front door of every stage script: arguments, logging, error handling."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from fishseg.errors import FishsegError
from fishseg.params import Params, load_params
from fishseg.paths import Paths, find_root
from fishseg.redact import redact_uri

log = logging.getLogger("fishseg")


def setup_logging(verbose: bool = False) -> None:
    """One format for every stage; INFO by default, DEBUG with ``-v``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Quiet third-party chatter that says nothing about our run.
    for noisy in ("urllib3", "matplotlib", "PIL", "alembic", "mlflow.store", "git", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def offline_env() -> None:
    """No library phones home on its own: no update check, no usage telemetry.

    Network access that params ask for (Kaggle, encoder weights from the hub, a tracking
    server) still works; ``HF_HUB_OFFLINE=1`` in the environment blocks the hub as well.
    """
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' PyPI check at import
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def one_line(message: object) -> str:
    """``message`` on one line, with secrets in any URI it quotes masked."""
    return redact_uri(re.sub(r"\s*\n\s*", "; ", str(message).strip()))


def front_door(work: Callable[[], int | None]) -> int:
    """Run a command's ``work`` and turn what it raises into an exit status.

    :class:`FishsegError`: one ERROR line, its ``exit_code`` (2 unless it says otherwise);
    Ctrl-C: 130. Anything else is a bug and keeps its traceback.
    """
    try:
        return work() or 0
    except FishsegError as exc:
        log.error("%s", one_line(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def run_tool(args: argparse.Namespace, work: Callable[[argparse.Namespace], int | None]) -> int:
    """A front door's ``main`` after parsing: logging (only in a bare process: a host such as
    pytest or a notebook keeps its own set-up), no phoning home, errors to exit statuses."""
    if not logging.getLogger().handlers:
        setup_logging(getattr(args, "verbose", False))
    offline_env()
    return front_door(lambda: work(args))


def run_stage(
    description: str,
    body: Callable[[Params, Paths, argparse.Namespace], None],
    argv: list[str] | None = None,
) -> int:
    """Parse ``--params``/``-v``, load params, run ``body``; exit 2 with one line on user errors."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument(
        "--root", type=Path, default=None, help="project root (default: the directory holding dvc.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    offline_env()

    def work() -> None:
        root = (args.root or find_root()).resolve()
        params = load_params(root / args.params if not Path(args.params).is_absolute() else args.params)
        body(params, Paths(root), args)

    return front_door(work)
