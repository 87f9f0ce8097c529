"""The one exception the wire parsers raise.

A parser never raises anything else for bad input: the stack catches ``MalformedPacket``,
counts it under ``reason`` and drops the packet.
"""

from __future__ import annotations


class MalformedPacket(ValueError):
    """Input that is not a valid packet of the expected format.

    ``reason`` is a short, stable, kebab-case key used as a statistics counter name, e.g.
    ``"truncated"``, ``"bad-checksum"``, ``"bad-length"``, ``"bad-option"``, ``"bad-version"``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
