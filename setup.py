"""Build: the sans-IO core compiled with mypyc when it is available (``aionetstack._accel``).

``AIONETSTACK_PURE_BUILD=1`` builds a pure-Python install.  The package works either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).parent / "aionetstack"))
from _accel import BUILD_OPTIONS, COMPILED  # (without importing the package)

ext_modules = []
if os.environ.get("AIONETSTACK_PURE_BUILD", "") in ("", "0"):
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("aionetstack: mypyc not available, building pure Python", file=sys.stderr)
    else:
        ext_modules = mypycify(
            [*BUILD_OPTIONS, *(name.replace(".", "/") + ".py" for name in COMPILED)],
            opt_level="3",
        )

setup(ext_modules=ext_modules)
