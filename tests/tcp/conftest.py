"""Fixtures for TCP tests (helpers live in ``tcp_helpers``)."""

from __future__ import annotations

import pytest
from tcp_helpers import Pair, Wire, make_pair, make_wire


@pytest.fixture
def pair() -> Pair:
    return make_pair()


@pytest.fixture
def wire() -> Wire:
    return make_wire()
