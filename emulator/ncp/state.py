"""What the virtual NCP keeps across restarts: its EUI64, the network tokens a real EmberZNet stores in flash, and
the manufacturing tokens the host may write (custom EUI64, the CBKE credentials of MFG_CBKE_DATA and its 283k1
counterpart), which survive leaving the network and tokenFactoryReset.

The JSON file is written atomically, so a killed NCP leaves either the previous state or the new one. Runtime
tables that a real stack keeps in RAM (configuration values, endpoints, address table, extended timeouts) are
not here: they are lost on every reset, as on the chip, and bellows writes them again after each reset.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zigpy.types as zt

from emulator.errors import InputError
from emulator.files import write_atomic
from emulator.security.certs import CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.koblitz import PrivateKey, PublicKey

STATE_FORMAT = 1
# EmberZNet writes the outgoing frame counters to their token only every 4096 frames and, on boot, starts 4096
# past the stored value, so a reset or power cut between two writes never sends a counter twice.
FRAME_COUNTER_TOKEN_STEP = 0x1000
KEY_TABLE_SIZE = 16


class StateFileError(InputError):
    """A state file that cannot be read as this NCP's network state."""


@dataclass
class LinkKeyEntry:
    eui64: str
    key: str
    tx_counter: int = 0
    rx_counter: int = 0


@dataclass
class CbkeData:
    """The CBKE credentials of one crypto suite, as the host installed them (setPreinstalledCbkeData, or the 283k1
    setValue and savePreinstalledCbkeData283k1 path): hex of the certificate, CA public key and private key."""

    certificate: str
    ca_public_key: str
    private_key: str

    @classmethod
    def of(cls, credentials: DeviceCredentials) -> CbkeData:
        return cls(
            credentials.certificate.to_bytes().hex(),
            credentials.ca_public_key.to_bytes().hex(),
            credentials.private_key.to_bytes().hex(),
        )

    def credentials(self, suite: CryptoSuite) -> DeviceCredentials:
        """The credentials, checked to belong together (CertificateError or PointError when they do not)."""
        curve = suite.curve
        return DeviceCredentials(
            parse_certificate(bytes.fromhex(self.certificate), suite),
            PrivateKey.from_bytes(curve, bytes.fromhex(self.private_key)),
            PublicKey.from_bytes(curve, bytes.fromhex(self.ca_public_key), "CA public key"),
        ).check()


@dataclass
class NetworkState:
    """Hex strings and ints only, so the file is readable and diffable; accessors give zigpy types."""

    eui64: str
    formed: bool = False
    channel: int = 0
    pan_id: int = 0
    extended_pan_id: str = "0000000000000000"
    nwk_update_id: int = 0
    nwk_manager_id: int = 0
    tx_power: int = 8
    channel_mask: int = 0
    network_key: str = "00" * 16
    network_key_seq: int = 0
    nwk_frame_counter: int = 0
    tc_link_key: str = "00" * 16
    security_bitmask: int = 0
    aps_frame_counter: int = 0
    custom_eui64: str | None = None
    key_table: list[LinkKeyEntry | None] = field(default_factory=lambda: [None] * KEY_TABLE_SIZE)
    children: dict[str, int] = field(default_factory=dict)
    # A joined node (not the coordinator): EmberNodeType, its NWK address and its parent's (joining.py).
    node_type: int = 1
    node_id: int = 0
    parent_nwk: int = 0
    # A joined node: the EUI-64 of the trust centre that sent it the network key (None on the trust centre and in
    # files written before joined nodes kept it), and the incoming APS frame counter of the TC link key it shares
    # with it (`security`).
    trust_centre_eui64: str | None = None
    tc_link_rx_counter: int = 0
    # Manufacturing data: CBKE credentials the host installed, by crypto suite ("1", "2"); without them the
    # NCP's CBKE library uses ones from the bundled test CA (`cbke`).
    cbke_data: dict[str, CbkeData] = field(default_factory=dict)

    @classmethod
    def new(cls, seed: int) -> NetworkState:
        """A factory-fresh chip: no network, an EUI64 drawn from `seed` (never all-0 or all-F)."""
        rng = random.Random(f"ncp-eui64-{seed}")
        value = bytes(rng.randrange(256) for _ in range(8))
        if value in (b"\x00" * 8, b"\xff" * 8):
            value = b"\x01" + value[1:]
        return cls(eui64=value.hex())

    # -- typed views ----------------------------------------------------------------------------------------------

    @property
    def ieee(self) -> zt.EUI64:
        return zt.EUI64(bytes.fromhex(self.eui64)[::-1])

    @staticmethod
    def ieee_text(ieee: zt.EUI64) -> str:
        return bytes(ieee)[::-1].hex()

    @property
    def trust_centre(self) -> zt.EUI64 | None:
        """A joined node's trust centre; None on the trust centre itself and before a join."""
        text = self.trust_centre_eui64
        return None if text is None else zt.EUI64(bytes.fromhex(text)[::-1])

    def forget_network(self, *, keep_frame_counters: bool = True) -> None:
        """Erase the network tokens, as tokenFactoryReset or leaving the network does."""
        fresh = NetworkState(eui64=self.eui64, custom_eui64=self.custom_eui64, cbke_data=self.cbke_data)
        if keep_frame_counters:
            fresh.nwk_frame_counter = self.nwk_frame_counter
            fresh.aps_frame_counter = self.aps_frame_counter
        self.__dict__.update(fresh.__dict__)

    def boot_frame_counters(self, step: int) -> None:
        """What EmberZNet does with its frame counter tokens on boot: start `step` past the stored values, which
        the stack rewrites at least every `step` frames, so no counter sent before a kill is sent again."""
        self.nwk_frame_counter = min(self.nwk_frame_counter + step, 0xFFFFFFFF)
        self.aps_frame_counter = min(self.aps_frame_counter + step, 0xFFFFFFFF)

    # -- file -----------------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = STATE_FORMAT
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "state") -> NetworkState:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateFileError(f"state file {source}: not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateFileError(f'state file {source}: expected a JSON object with "format": {STATE_FORMAT}')
        data.pop("format")
        try:
            state = cls(**data)
            table: list[Any] = list(state.key_table)  # JSON objects until read into entries
            state.key_table = [None if entry is None else LinkKeyEntry(**entry) for entry in table]
            cbke: dict[str, Any] = dict(state.cbke_data)
            state.cbke_data = {suite: CbkeData(**data) for suite, data in cbke.items()}
            _check(state)
        except (TypeError, ValueError, InputError) as exc:
            raise StateFileError(f"state file {source}: {exc}") from None
        return state

    def save(self, path: str | os.PathLike[str]) -> None:
        try:
            write_atomic(path, self.to_json())
        except OSError as exc:
            raise StateFileError(f"state file {path}: cannot be written ({exc.strerror or exc})") from None


def _check(state: NetworkState) -> None:
    def hex_bytes(name: str, value: Any, length: int) -> None:
        if not isinstance(value, str) or len(bytes.fromhex(value)) != length:
            raise ValueError(f"{name} must be {length} bytes of hex")

    hex_bytes("eui64", state.eui64, 8)
    hex_bytes("extended_pan_id", state.extended_pan_id, 8)
    hex_bytes("network_key", state.network_key, 16)
    hex_bytes("tc_link_key", state.tc_link_key, 16)
    if state.custom_eui64 is not None:
        hex_bytes("custom_eui64", state.custom_eui64, 8)
    if state.trust_centre_eui64 is not None:
        hex_bytes("trust_centre_eui64", state.trust_centre_eui64, 8)
    limits = {"channel": 26, "pan_id": 0xFFFF, "nwk_update_id": 0xFF, "network_key_seq": 0xFF, "tx_power": 0xFF}
    limits |= {"node_type": 4, "node_id": 0xFFF7, "parent_nwk": 0xFFF7, "tc_link_rx_counter": 0xFFFFFFFF}
    for name, limit in limits.items():
        value = getattr(state, name)
        if not isinstance(value, int) or not 0 <= value <= limit:
            raise ValueError(f"{name} must be an integer in 0..{limit}")
    if state.formed and not 11 <= state.channel <= 26:
        raise ValueError("channel of a formed network must be in 11..26")
    if not isinstance(state.key_table, list) or len(state.key_table) != KEY_TABLE_SIZE:
        raise ValueError(f"key_table must list {KEY_TABLE_SIZE} entries (null for empty)")
    for suite, data in state.cbke_data.items():
        if suite not in ("1", "2"):
            raise ValueError(f'cbke_data keys must be crypto suites "1" or "2", not {suite!r}')
        data.credentials(CryptoSuite(int(suite)))  # the three belong together, or CertificateError/PointError
    for ieee, nwk in state.children.items():
        hex_bytes("children key", ieee, 8)
        if not isinstance(nwk, int) or not 0 <= nwk <= 0xFFF7:
            raise ValueError("children values must be NWK addresses in 0..0xFFF7")


def load_state(path: str | os.PathLike[str], *, seed: int) -> NetworkState:
    """The state in `path`, or a factory-fresh one when the file does not exist yet."""
    target = Path(path)
    if not target.parent.is_dir():
        raise StateFileError(f"state file {target}: directory {target.parent} does not exist")
    if not target.exists():
        return NetworkState.new(seed)
    try:
        text = target.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"state file {target}: cannot be read ({exc})") from None
    return NetworkState.from_json(text, source=str(target))
