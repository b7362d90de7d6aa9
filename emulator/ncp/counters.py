"""What the virtual NCP has seen and sent, for reports such as "EZSP frames per OTA block"."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NcpCounters:
    """`ash_rx`/`ash_tx` count ASH frames by type (DATA, ACK, NAK, RST, RSTACK, ERROR) plus link events
    (bad_crc, framing_error, duplicate, out_of_sequence, retransmitted, dropped, corrupted); `commands` counts
    EZSP commands answered, by name; `callbacks` counts EZSP callbacks sent, by name; `air` counts frames the
    coordinator put on or took off the air."""

    ash_rx: Counter[str] = field(default_factory=Counter)
    ash_tx: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    air: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            "ash_rx": dict(self.ash_rx),
            "ash_tx": dict(self.ash_tx),
            "commands": dict(self.commands),
            "callbacks": dict(self.callbacks),
            "air": dict(self.air),
        }

    @property
    def ezsp_frames(self) -> int:
        """EZSP frames exchanged with the host: commands, their responses, and callbacks."""
        return 2 * sum(self.commands.values()) + sum(self.callbacks.values())
