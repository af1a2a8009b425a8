"""The shared front door of every stage script: arguments, logging, error handling."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from fishseg.errors import FishsegError
from fishseg.params import Params, load_params
from fishseg.paths import Paths, find_root

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
    """Never let a library phone home at import (albumentations update check, HF hub)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


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
    try:
        root = (args.root or find_root()).resolve()
        params = load_params(root / args.params if not Path(args.params).is_absolute() else args.params)
        body(params, Paths(root), args)
    except FishsegError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 0
