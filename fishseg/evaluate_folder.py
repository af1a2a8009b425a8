"""`python -m fishseg.evaluate_folder`: the command's front door (the work is in :mod:`fishseg.evaluation.folder`)."""

from fishseg.evaluation.folder import main

if __name__ == "__main__":
    raise SystemExit(main())
