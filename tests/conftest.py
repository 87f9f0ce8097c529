"""Test-wide settings.

Hypothesis explores new random examples on every local run; CI (``.ci/run`` exports
``HYPOTHESIS_PROFILE=ci``) runs a derandomized profile, so a CI result is reproducible and a
failure found locally is fixed (and kept as an explicit example) rather than seen as a flake.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

import aionetstack

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pure_python: patches the internals of a module the mypyc build compiles "
        "(aionetstack._accel); runs in the pure-Python pass (make unit-pure), skipped in the "
        "compiled one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not aionetstack.compiled:
        return
    skip = pytest.mark.skip(reason="patches a compiled module's internals: runs in the "
                            "pure-Python pass (AIONETSTACK_PURE=1, make unit-pure)")
    for item in items:
        if item.get_closest_marker("pure_python") is not None:
            item.add_marker(skip)
