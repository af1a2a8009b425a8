"""`python -m fishseg.predict`: the command's front door (the work is in :mod:`fishseg.serve.predict`)."""

from fishseg.serve.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
