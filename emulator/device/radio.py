"""What an emulated device needs from its radio: one small interface, whichever radio it is.

The virtual `Air` has exactly these methods, so an in-process device sits on it as it always has; a device on an
EZSP stick gets a `StickRadio` (`emulator.radio.stick`), which joins a real (or virtual) network through the
stick first and then carries the device's frames. The device code is the same for both.
"""

from __future__ import annotations

from typing import Protocol

import zigpy.types as t

from emulator.radio.air import Node


class DeviceRadio(Protocol):
    """A device's way onto a network: it is `join`ed as a node, hands frames to `send`, and polls its parent
    with `poll` when it sleeps; `receive` on the node is called for every frame that reaches it."""

    def join(self, node: Node, parent_nwk: int = ...) -> None:
        """Start carrying frames for `node` (on the air: attach it and tell the trust centre)."""

    def detach(self, node: Node) -> None:
        """Stop carrying frames for `node`."""

    def send(self, packet: t.ZigbeePacket) -> bool:
        """Transmit `packet`; False when the radio knows at once that it cannot be delivered."""

    def poll(self, nwk: int) -> int:
        """Ask the parent for frames held for `nwk`; how many came at once (a stick reports them later: 0)."""

    def node(self, nwk: int) -> Node | None:
        """The node this radio knows at `nwk`, if any (used to pick a free address)."""
