"""What a scenario run leaves for the judges: the file the server held, what the target declared, and every
exchange with its frames."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import zigpy.types as t

from emulator.chf.events import TransferOutcome
from emulator.conformance.server.probe import Exchange
from emulator.conformance.verdict import FrameRecord
from emulator.gb.codes import TransferResponse
from emulator.profiles import ActivationTime


@dataclass(frozen=True)
class Offer:
    """An upgrade file the server holds, as the probes know it."""

    data: bytes
    manufacturer_code: int
    image_type: int
    file_version: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.manufacturer_code, self.image_type, self.file_version

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def command_fields(self) -> dict[str, int]:
        """The file's ids as the fields of an OTA command that names it (Image Page, Upgrade End)."""
        return {
            "manufacturer_code": self.manufacturer_code,
            "image_type": self.image_type,
            "file_version": self.file_version,
        }


@dataclass(frozen=True)
class Claims:
    """What a target declares where the specification lets a server choose; checks judge against it."""

    query_policy: str = "upgrade"
    page_requests: bool = True
    query_specific_file: bool = False
    rate_limited: bool = False
    minimum_block_period: int | None = None
    max_concurrent_downloads: int | None = None
    activation: ActivationTime | None = None
    # Smart Energy security (ZSE 07-5356 §5.4): a Key Establishment server, and OTA APS-encrypted once a device
    # holds a link key.
    se_security: bool = False


@dataclass(frozen=True)
class OtaAttempt:
    """An OTA request of a security scenario and whether the probe sent it APS-encrypted under its link key."""

    exchange: Exchange
    encrypted: bool


@dataclass
class KeyRecord:
    """What a security scenario learnt about the server's key establishment: each Initiate attempt by the
    certificate the probe presented, whether the probe ended up holding a CBKE link key, and the OTA requests it
    sent in the clear and encrypted."""

    attempts: dict[str, list[Exchange]] = field(default_factory=dict)
    link_key: bool = False
    outcome: str = ""
    requests: list[OtaAttempt] = field(default_factory=list)


@dataclass
class Transcript:
    """Everything one scenario run produced, in the form judges read."""

    claims: Claims
    offer: Offer
    specific: Offer | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    notifies: list[FrameRecord] = field(default_factory=list)
    outcomes: list[TransferOutcome] | None = None
    expected_outcomes: dict[t.EUI64, set[TransferResponse]] = field(default_factory=dict)
    stray: list[FrameRecord] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    unsupported: str = ""
    duration: float = 0.0
    keys: KeyRecord | None = None

    def add(self, exchange: Exchange) -> Exchange:
        self.exchanges.append(exchange)
        return exchange

    def add_all(self, exchanges: Iterable[Exchange]) -> None:
        self.exchanges.extend(exchanges)

    @property
    def frames(self) -> list[FrameRecord]:
        """Every frame of the run: the exchanges, key establishment and what arrived while nothing was listening."""
        keyed = [f for attempt in self.keys.attempts.values() for e in attempt for f in e.frames] if self.keys else []
        return sorted([*(f for e in self.exchanges for f in e.frames), *keyed, *self.stray], key=lambda f: f.at)
