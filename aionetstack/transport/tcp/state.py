"""TCP connection states and the legal transitions between them (RFC 9293 §3.3.2, Figure 5).

The state machine is kept as data, h11-style: ``TRANSITIONS`` maps every state to the states it
may move to, and ``check_transition`` raises on anything else, so a bug that would silently put a
connection into an impossible state fails loudly in tests instead.

Groupings used by the engine:

* ``SYNCHRONIZED`` -- the states after the three-way handshake (RFC 9293 §3.5.3 uses the word for
  the states in which both sequence spaces are known); RFC 5961 checks apply here.
* ``CAN_SEND`` -- the user may still queue data (no FIN queued yet).
* ``CAN_RECEIVE`` -- the peer may still send data (its FIN not yet received).
"""

from __future__ import annotations

import enum
from typing import Final


class TcpState(enum.Enum):
    # identity hashing: set membership tests on the hot path skip Enum's Python-level __hash__
    __hash__ = object.__hash__

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


S = TcpState

TRANSITIONS: Final[dict[TcpState, frozenset[TcpState]]] = {
    S.CLOSED: frozenset({S.LISTEN, S.SYN_SENT, S.SYN_RECEIVED}),
    S.LISTEN: frozenset({S.CLOSED}),
    S.SYN_SENT: frozenset({S.SYN_RECEIVED, S.ESTABLISHED, S.CLOSED}),
    S.SYN_RECEIVED: frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.CLOSED}),
    S.ESTABLISHED: frozenset({S.FIN_WAIT_1, S.CLOSE_WAIT, S.CLOSED}),
    S.FIN_WAIT_1: frozenset({S.FIN_WAIT_2, S.CLOSING, S.TIME_WAIT, S.CLOSED}),
    S.FIN_WAIT_2: frozenset({S.TIME_WAIT, S.CLOSED}),
    S.CLOSE_WAIT: frozenset({S.LAST_ACK, S.CLOSED}),
    S.CLOSING: frozenset({S.TIME_WAIT, S.CLOSED}),
    S.LAST_ACK: frozenset({S.CLOSED}),
    S.TIME_WAIT: frozenset({S.CLOSED}),
}

SYNCHRONIZED: Final = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSE_WAIT,
                                 S.CLOSING, S.LAST_ACK, S.TIME_WAIT})
CAN_SEND: Final = frozenset({S.ESTABLISHED, S.CLOSE_WAIT})
CAN_RECEIVE: Final = frozenset({S.ESTABLISHED, S.FIN_WAIT_1, S.FIN_WAIT_2})
FIN_SENT_STATES: Final = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.LAST_ACK,
                                    S.TIME_WAIT})


class IllegalTransition(RuntimeError):
    """An engine bug: a move that RFC 9293's state diagram does not have."""


def check_transition(old: TcpState, new: TcpState) -> None:
    if new is not old and new not in TRANSITIONS[old]:
        raise IllegalTransition(f"TCP state {old.value} -> {new.value} is not allowed")
