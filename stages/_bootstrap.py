"""Make ``fishseg`` importable from this checkout when a stage runs as ``python stages/x.py``.

Importing from the checkout itself (not an installed copy) matters under
``dvc exp run --temp/--queue``, where the stage runs in a temp copy of the repo.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
