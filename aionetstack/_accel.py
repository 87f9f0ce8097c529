"""The compiled core: which modules mypyc compiles, and whether they are in use.

The same typed sources run two ways.  A build with mypyc (``setup.py``, on by default when mypyc
is installed) compiles the sans-IO core listed in ``COMPILED`` to C extension modules that sit
next to their ``.py`` files; Python then imports the extensions.  Without them everything runs
as pure Python, with identical behaviour.

Two guards keep the pure sources authoritative:

* ``AIONETSTACK_PURE=1`` in the environment runs pure Python even when the extensions exist
  (tests run the suite both ways; benchmarks compare the two);
* an extension older than its ``.py`` (a source edited after the build) is never used: the
  whole core falls back to pure Python, with a warning, until the next build.  The compiled
  modules call each other directly, so they are used all together or not at all.

``compiled`` tells which way this process runs.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

# the hot paths: TCP, the stack core (timers, NIC, routes), the network layer, the packet
# parsers and builders (``wire``) and software segmentation (``link/vnet``).  Left out:
# ``tcp/state.py`` and ``wire/errors.py`` (an enum and exception classes: mypyc cannot
# subclass RuntimeError), the other links and the asyncio adapter.
COMPILED: tuple[str, ...] = tuple(
    f"aionetstack.{pkg}.{mod}" for pkg, mods in (
        ("transport.tcp", ("api", "bytequeue", "congestion", "core", "endpoint", "forwarder",
                           "input", "isn", "listen", "protocol", "receiver", "recovery", "rtt",
                           "rtxqueue", "sender", "timeouts", "timewait")),
        ("stack", ("addr", "limits", "neighbour", "nic", "ports", "route", "routing", "stack",
                   "stats", "timers", "waiter")),
        ("network", ("arp", "forward", "fragment", "gro", "icmp", "ipv4", "ipv6", "ndp",
                     "packet")),
        ("link", ("vnet",)),
        ("wire", ("arp", "checksum", "ethernet", "icmpv4", "icmpv6", "ipv4", "ipv6", "ndp",
                  "seqnum", "tcp", "udp")),
    ) for mod in mods)

#: mypy options of the build (``setup.py``): the compiled core depends on nothing installed, so
#: it type-checks the same on a fresh machine (where the build runs before the dependencies are
#: installed) as in a developer's full virtualenv
BUILD_OPTIONS: tuple[str, ...] = ("--no-site-packages",)

_ROOT = Path(__file__).resolve().parent


def source_path(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")[1:]).with_suffix(".py")


def _extension(name: str) -> Path | None:
    src = source_path(name)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = src.with_suffix(suffix)
        if p.exists():
            return p
    return None


def _stale() -> list[str]:
    """Compiled modules whose source is newer than their extension, or that have none while
    others do (a partial build)."""
    out = []
    for name in COMPILED:
        ext = _extension(name)
        if ext is None or ext.stat().st_mtime < source_path(name).stat().st_mtime:
            out.append(name)
    return out


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their ``.py`` files, never from an extension."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _choose() -> bool:
    if not any(_extension(name) is not None for name in COMPILED):
        return False  # a pure install: nothing to decide
    reason = None
    if os.environ.get("AIONETSTACK_PURE", "") not in ("", "0"):
        reason = ""
    else:
        stale = _stale()
        if stale:
            reason = (f"aionetstack: the compiled core is older than its sources ({stale[0]}"
                      f"{' and others' if len(stale) > 1 else ''}); running pure Python. "
                      "Rebuild it with `make build` (or `pip install -e .`).")
    if reason is None:
        return True
    sys.meta_path.insert(0, _SourceFinder(COMPILED))
    if reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=3)
    return False


compiled: bool = _choose()
"""True when this process runs the mypyc-compiled core."""
