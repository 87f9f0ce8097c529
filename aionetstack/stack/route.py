"""Route table: longest-prefix match, gateways, metrics, default routes.

Entries are kept sorted by (prefix length descending, metric ascending), so the first entry that
matches wins.  Lookups are cached per destination; any change clears the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aionetstack.stack.addr import prefix_mask, to_str

if TYPE_CHECKING:
    from aionetstack.stack.nic import NIC


@dataclass(slots=True)
class RouteEntry:
    network: bytes
    prefixlen: int
    nic_id: int
    gateway: bytes | None = None
    metric: int = 0
    source: bytes | None = None  # preferred source address (optional)
    mtu: int | None = None
    _net_int: int = field(init=False, repr=False)
    _mask: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._mask = prefix_mask(len(self.network), self.prefixlen)
        self._net_int = int.from_bytes(self.network, "big") & self._mask

    def matches(self, dst_int: int, length: int) -> bool:
        return len(self.network) == length and (dst_int & self._mask) == self._net_int

    def describe(self) -> dict[str, object]:
        return {
            "destination": f"{to_str(self.network)}/{self.prefixlen}",
            "gateway": to_str(self.gateway) if self.gateway else None,
            "nic": self.nic_id,
            "metric": self.metric,
        }


class RouteTable:
    __slots__ = ("_cache", "_entries")

    def __init__(self) -> None:
        self._entries: list[RouteEntry] = []
        # keyed by destination, or by (destination, NIC id) for a lookup confined to one NIC
        self._cache: dict[bytes | tuple[bytes, int], RouteEntry | None] = {}

    def add(self, entry: RouteEntry) -> None:
        self._entries.append(entry)
        self._entries.sort(key=lambda e: (-e.prefixlen, e.metric))
        self._cache.clear()

    def remove(self, predicate: object) -> int:
        assert callable(predicate)
        before = len(self._entries)
        self._entries = [e for e in self._entries if not predicate(e)]
        self._cache.clear()
        return before - len(self._entries)

    def lookup(self, dst: bytes, nic_id: int | None = None) -> RouteEntry | None:
        key: bytes | tuple[bytes, int] = dst if nic_id is None else (dst, nic_id)
        cache = self._cache
        hit = cache.get(key, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        dst_int = int.from_bytes(dst, "big")
        found = None
        for e in self._entries:
            if (nic_id is None or e.nic_id == nic_id) and e.matches(dst_int, len(dst)):
                found = e
                break
        if len(cache) > 4096:
            cache.clear()
        cache[key] = found
        return found

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class Route:
    """A resolved path to one remote address: what a connected endpoint caches.

    ``headroom`` is where the transport header starts in a packet buffer built by
    ``new_packet``: room for the link header (on L2 NICs) and the IP header in front, so the
    network layer and NIC fill their headers in place and the payload is never moved again.
    """

    __slots__ = ("family", "headroom", "l3_offset", "local", "mtu", "next_hop", "nic", "remote")

    def __init__(self, family: int, local: bytes, remote: bytes, next_hop: bytes, nic: NIC,
                 mtu: int) -> None:
        self.family = family
        self.local = local
        self.remote = remote
        self.next_hop = next_hop
        self.nic = nic
        self.mtu = mtu
        self.l3_offset = nic.link_header_len
        self.headroom = self.l3_offset + (20 if family == 4 else 40)

    @property
    def max_payload(self) -> int:
        """Largest transport segment (header included) that fits without fragmenting."""
        return self.mtu - (20 if self.family == 4 else 40)

    @property
    def tx_checksum_offload(self) -> bool:
        return self.nic.tx_offload

    def new_packet(self, l4_len: int) -> bytearray:
        return bytearray(self.headroom + l4_len)

    def __repr__(self) -> str:
        return (f"<Route {to_str(self.local)} -> {to_str(self.remote)} via "
                f"{to_str(self.next_hop)} dev {self.nic.name} mtu {self.mtu}>")
