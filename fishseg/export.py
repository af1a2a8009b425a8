"""`python -m fishseg.export`: the command's front door (the work is in :mod:`fishseg.serve.export`)."""

from fishseg.serve.export import main

if __name__ == "__main__":
    raise SystemExit(main())
