"""Shared setup for the wire-format tests: keep scapy quiet."""

from __future__ import annotations

import logging
import warnings

logging.getLogger("scapy").setLevel(logging.ERROR)
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module=r"scapy(\..*)?")
