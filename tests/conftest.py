"""Test-wide settings.

Hypothesis explores new random examples on every local run; CI (``.ci/run`` exports
``HYPOTHESIS_PROFILE=ci``) runs a derandomized profile, so a CI result is reproducible and a
failure found locally is fixed (and kept as an explicit example) rather than seen as a flake.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
