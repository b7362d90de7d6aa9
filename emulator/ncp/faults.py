"""Deliberate misbehaviour of the virtual NCP and its serial link, for testing hosts against a bad day.

All random choices come from one generator seeded by the NCP's seed, so a faulty run repeats exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emulator.errors import InputError

ResetKind = Literal["rstack", "error"]


class FaultError(InputError):
    """A fault setting out of range."""


@dataclass
class Faults:
    """Link faults apply per ASH frame; delivery faults per unicast the host asks the NCP to send.

    `spare_resets` keeps RST/RSTACK/ERROR frames out of the drop and corrupt draws: bellows waits 2.5 s for each
    lost RSTACK, so a lossy link would otherwise stall on resets rather than exercise retransmission.
    """

    drop_to_host: float = 0.0
    drop_from_host: float = 0.0
    corrupt_to_host: float = 0.0
    corrupt_from_host: float = 0.0
    delay_to_host: float = 0.0
    spare_resets: bool = True
    # An unsolicited reset, once: `reset_at` seconds after the first host connects, or right after answering the
    # `reset_after_frames`-th DATA frame from the host. "rstack" is a reboot (as after a watchdog reset);
    # "error" is the ASH FAILED state, which only an RST from the host clears.
    reset_at: float | None = None
    reset_after_frames: int | None = None
    reset_kind: ResetKind = "rstack"
    # messageSentHandler reports DELIVERY_FAILED for this share of unicasts, and for the next `fail_next_sends`.
    delivery_failure: float = 0.0
    fail_next_sends: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_to_host", "drop_from_host", "corrupt_to_host", "corrupt_from_host", "delivery_failure"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise FaultError(f"fault {name}={value}: expected a probability in 0..1")
        if self.delay_to_host < 0:
            raise FaultError(f"fault delay_to_host={self.delay_to_host}: expected seconds >= 0")
        if self.reset_at is not None and self.reset_at < 0:
            raise FaultError(f"fault reset_at={self.reset_at}: expected seconds >= 0")
        if self.reset_after_frames is not None and self.reset_after_frames < 1:
            raise FaultError(f"fault reset_after_frames={self.reset_after_frames}: expected a count >= 1")
        if self.reset_kind not in ("rstack", "error"):
            raise FaultError(f"fault reset_kind={self.reset_kind!r}: expected 'rstack' or 'error'")
        if self.fail_next_sends < 0:
            raise FaultError(f"fault fail_next_sends={self.fail_next_sends}: expected a count >= 0")
