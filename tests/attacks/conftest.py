"""Make the shared rigs in ``tests/fuzz/stackrig.py`` importable."""

import sys
from pathlib import Path

_FUZZ = str(Path(__file__).resolve().parents[1] / "fuzz")
if _FUZZ not in sys.path:
    sys.path.insert(0, _FUZZ)
