"""Packet capture of the HAN: every `ZigbeePacket` written as the IEEE 802.15.4 frame a sniffer would have seen.

A `ZigbeePacket` is what the APS layer hands down; on the air it travels inside an APS data frame, an NWK data
frame (secured with the network key, as every frame on a GB HAN is) and a MAC data frame. The writer adds those
layers so that Wireshark, tshark and zigpy's `ota reconstruct-from-pcaps` read the capture as they would a real
one and show the ZCL OTA commands:

* MAC (802.15.4-2003 §7.2): data frame, PAN ID compression, short addresses (0xFFFF for NWK broadcasts), ack
  request on unicasts, a per-node sequence number and the FCS (link type 195, LINKTYPE_IEEE802_15_4_WITHFCS).
* NWK (Zigbee PRO 3.3.1): data frame, protocol version 2, per-node sequence number, radius (zigpy's 0 means the
  stack default, 2 × nwkMaxDepth = 30).
* NWK security (Zigbee PRO 4.3.1, 4.5.1): AES-128 CCM* with a 32-bit MIC (security level 5), key id "network
  key", extended nonce carrying the sender's IEEE address, a per-node frame counter, and the security level
  overwritten with 0 on the air as the spec requires; NWK header and auxiliary header are authenticated.
* APS (Zigbee PRO 2.2.5): data frame, unicast / broadcast / group delivery, ack request as the sender asked,
  endpoints, cluster, profile and a per-node APS counter.
* APS security (Zigbee PRO 4.4.1): a unicast sent with APS encryption (zigpy's `TransmitOptions.APS_Encryption`
  in the packet, or `aps_encrypted=True`) is secured with the link key the writer holds for that pair of nodes
  (`set_link_key`, settable while writing): key id "data key", extended nonce with the sender's IEEE address and a
  per-node APS frame counter. The join's Transport-Key is written secured with the key-transport key of the
  joiner's install-code key (`write_transport_key`). A packet whose data is a `SecuredApsFrame` was secured by
  the sender's own APS layer (`emulator.radio.secure`) and is written as it is, never encrypted twice.

CCM* and the auxiliary security header are `emulator.security` (one home for both layers). Wireshark needs the
network key and the link keys, unhashed: `keys()` lists them with labels, `write_keys()` puts them beside the pcap
as rows of its `zigbee_pc_keys` table, and `tshark_key_options` gives the matching `-o uat:zigbee_pc_keys:` options.

The headers are packed with `struct` rather than built with scapy's `dot15d4`/`zigbee` layers: scapy takes about
2 ms to build one frame, which would make the capture cost more than the run itself (a conformance transfer of
a 200 kB image is 6,000+ frames; a thousand-device run millions). They are fixed-layout headers, and the tests
read every frame back with two independent dissectors, tshark's and scapy's. Timestamps are the loop time
mapped onto the run's UTC, so a capture of a virtual-time run carries protocol time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import zigpy.types as t

from emulator.clock import Clock
from emulator.errors import InputError
from emulator.files import write_atomic
from emulator.radio.air import BROADCAST_ROUTERS, BROADCAST_RX_ON_WHEN_IDLE, COORDINATOR_NWK, Air
from emulator.radio.host import HostMixin
from emulator.radio.packets import address_value
from emulator.radio.secure import SecuredApsFrame
from emulator.security import aps as aps_security
from emulator.security import ccm
from emulator.security.ccm import AuxHeader, KeyId

if TYPE_CHECKING:
    from zigpy.application import ControllerApplication

LINKTYPE_IEEE802_15_4_WITHFCS = 195
PCAP_MAGIC = 0xA1B2C3D4
SNAPLEN = 65535
MAC_BROADCAST = 0xFFFF
DEFAULT_RADIUS = 30
NETWORK_KEY_SIZE = ccm.KEY_SIZE

# 802.15.4 frame control: data frame, ack request, PAN ID compression, short destination and source addresses.
MAC_DATA = 0x0001
MAC_ACK_REQUEST = 0x0020
MAC_PAN_ID_COMPRESSION = 0x0040
MAC_SHORT_ADDRESSES = 0x0800 | 0x8000
# NWK frame control: data frame, protocol version 2, route discovery enabled, security.
NWK_VERSION_2 = 2 << 2
NWK_DISCOVER_ROUTE = 1 << 6
NWK_SECURITY = 1 << 9
# APS frame control: data frame; delivery mode in bits 2-3; ack request.
APS_UNICAST, APS_BROADCAST, APS_GROUP = 0 << 2, 2 << 2, 3 << 2
APS_ACK_REQUEST = 1 << 6
# The network key's sequence number in the NWK auxiliary header (key id 1): one key, never switched.
NETWORK_KEY_SEQUENCE = 0

MAC_HEADER = struct.Struct("<HBHHH")
NWK_HEADER = struct.Struct("<HHHBB")
APS_HEADER = struct.Struct("<BBHHBB")
APS_GROUP_HEADER = struct.Struct("<BHHHBB")
PCAP_HEADER = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")


def _fcs_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_FCS_TABLE = _fcs_table()


def fcs(data: bytes) -> bytes:
    """The 802.15.4 FCS: ITU-T CRC-16, reflected, initial value 0 (802.15.4-2003 §7.2.1.8)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _FCS_TABLE[(crc ^ byte) & 0xFF]
    return crc.to_bytes(2, "little")


IeeeResolver = Callable[[int], t.EUI64 | None]
NwkResolver = Callable[[t.EUI64], int | None]


class CaptureError(InputError):
    """A capture that cannot be written as asked: bad network key or an unusable output path."""


@dataclass
class _NodeCounters:
    """What a real node increments for every frame it sends."""

    mac_seq: int = 0
    nwk_seq: int = 0
    aps_counter: int = 0
    frame_counter: int = 0
    aps_frame_counter: int = 0


@dataclass(frozen=True, slots=True)
class CaptureKey:
    """A key a reader of the capture needs, with the label Wireshark shows for it."""

    key: bytes
    label: str


def uat_row(key: CaptureKey) -> str:
    """One row of Wireshark's `zigbee_pc_keys` table: key as colon-separated hex, byte order "Normal", label.
    Link keys go in as they are: Wireshark derives the key-transport and key-load keys itself."""
    label = key.label.replace('"', "'")
    return f'"{key.key.hex(":").upper()}","Normal","{label}"'


def tshark_key_options(keys: Iterable[CaptureKey]) -> list[str]:
    """The tshark (or Wireshark) arguments that load `keys`: one `-o uat:zigbee_pc_keys:ROW` per key."""
    options: list[str] = []
    for key in keys:
        options += ["-o", f"uat:zigbee_pc_keys:{uat_row(key)}"]
    return options


def keys_file_text(keys: Iterable[CaptureKey]) -> str:
    """The rows of a `zigbee_pc_keys` file (Wireshark's UAT format: one quoted row per key, `#` comments)."""
    rows = [uat_row(key) for key in keys]
    header = "# Wireshark zigbee_pc_keys table for this capture: key, byte order, label\n"
    return header + "".join(f"{row}\n" for row in rows)


def _pair(a: t.EUI64, b: t.EUI64) -> frozenset[bytes]:
    """A node pair as a dict key; bytes rather than EUI64s, which hash through their text form (per frame)."""
    return frozenset((bytes(a), bytes(b)))


def parse_network_key(text: str) -> bytes:
    """A network key as profiles and the CLI write it: 32 hex digits, optionally separated by colons."""
    try:
        key = bytes.fromhex(text.replace(":", "").replace(" ", ""))
    except ValueError:
        key = b""
    if len(key) != NETWORK_KEY_SIZE:
        raise CaptureError(f"network key {text!r}: expected 16 bytes of hex (32 digits, colons allowed)")
    return key


def _is_broadcast(address: t.AddrModeAddress) -> bool:
    return address.addr_mode == t.AddrMode.Broadcast or (
        address.addr_mode == t.AddrMode.NWK and address_value(address) >= BROADCAST_ROUTERS
    )


class FrameEncoder:
    """Turns `ZigbeePacket`s into 802.15.4 frames, keeping each sender's sequence numbers and frame counter."""

    def __init__(
        self,
        *,
        pan_id: int,
        network_key: bytes | None,
        link_keys: Mapping[tuple[t.EUI64, t.EUI64], bytes] | None = None,
    ) -> None:
        if network_key is not None and len(network_key) != NETWORK_KEY_SIZE:
            raise CaptureError(f"network key: expected {NETWORK_KEY_SIZE} bytes, got {len(network_key)}")
        self.pan_id = pan_id
        self.network_key = network_key
        self._link_keys: dict[frozenset[bytes], bytes] = {}
        #: Node pairs whose frames asked for APS encryption but had no link key here: written without it.
        self.missing_link_keys: set[frozenset[t.EUI64]] = set()
        for (a, b), key in (link_keys or {}).items():
            self.set_link_key(a, b, key)
        self._counters: dict[int, _NodeCounters] = {}
        self._ieee: dict[int, t.EUI64] = {}
        self._nwk: dict[t.EUI64, int] = {}
        self._resolvers: list[tuple[IeeeResolver, NwkResolver | None]] = []

    # -- addresses ----------------------------------------------------------------------------------------

    def add_node(self, nwk: int, ieee: t.EUI64) -> None:
        self._ieee[nwk] = ieee
        self._nwk[ieee] = nwk

    def add_resolver(self, ieee_of: IeeeResolver, nwk_of: NwkResolver | None = None) -> None:
        """Look up nodes not named with `add_node`: `ieee_of(nwk)` (and `nwk_of(ieee)` for frames addressed by
        IEEE) return None for a node they do not know."""
        self._resolvers.append((ieee_of, nwk_of))

    def ieee_of(self, nwk: int) -> t.EUI64:
        """The sender's IEEE address for the security nonce. A node nobody can name gets a stable stand-in
        derived from its NWK address, so its frames still decrypt (the nonce travels in the frame)."""
        known = self._ieee.get(nwk)
        if known is not None:
            return known
        for ieee_of, _ in self._resolvers:
            found = ieee_of(nwk)
            if found is not None:
                self.add_node(nwk, found)
                return found
        return t.EUI64(nwk.to_bytes(2, "little") + b"\xff" * 6)

    def _nwk_of(self, address: t.AddrModeAddress | None) -> int:
        if address is None:
            return COORDINATOR_NWK
        if address.addr_mode != t.AddrMode.IEEE:
            return int(address_value(address))
        ieee: t.EUI64 = address_value(address)
        if ieee in self._nwk:
            return self._nwk[ieee]
        for _, nwk_of in self._resolvers:
            found = nwk_of(ieee) if nwk_of is not None else None
            if found is not None:
                self.add_node(found, ieee)
                return found
        raise ValueError(f"no NWK address known for IEEE {ieee}; add_node() it first")

    # -- link keys ----------------------------------------------------------------------------------------

    def set_link_key(self, a: t.EUI64, b: t.EUI64, key: bytes) -> None:
        """The link key nodes `a` and `b` share (either direction); replaces an earlier one."""
        if len(key) != ccm.KEY_SIZE:
            raise CaptureError(f"link key for {a} and {b}: expected {ccm.KEY_SIZE} bytes, got {len(key)}")
        self._link_keys[_pair(a, b)] = bytes(key)

    def link_key(self, a: t.EUI64, b: t.EUI64) -> bytes | None:
        return self._link_keys.get(_pair(a, b))

    # -- frames -------------------------------------------------------------------------------------------

    def encode(self, packet: t.ZigbeePacket, *, aps_encrypted: bool | None = None) -> bytes:
        """The 802.15.4 frame of `packet`. APS encryption follows `aps_encrypted`, or the packet's
        `TransmitOptions.APS_Encryption` when that is None; broadcasts and group frames never carry it."""
        src = self._nwk_of(packet.src)
        counters = self._counters.setdefault(src, _NodeCounters())
        dst = packet.dst
        if dst is None:
            raise ValueError("a packet without a destination cannot be written as a frame")
        group = dst.addr_mode == t.AddrMode.Group
        broadcast = _is_broadcast(dst)
        multi = broadcast or group
        if group:
            # Group frames travel as NWK broadcasts to rx-on-when-idle nodes (Zigbee PRO 3.6.5).
            nwk_dst = BROADCAST_RX_ON_WHEN_IDLE
        elif broadcast:
            nwk_dst = int(address_value(dst))
        else:
            nwk_dst = self._nwk_of(dst)

        if isinstance(packet.data, SecuredApsFrame):
            # Secured by the sender's APS layer (`emulator.radio.secure`): its APS frame goes on the air as it is.
            radius = packet.radius or DEFAULT_RADIUS
            return self._frame(src, nwk_dst, multi, packet.data.serialize(), radius, counters, self.network_key)
        ack = APS_ACK_REQUEST if packet.tx_options & t.TransmitOptions.ACK and not multi else 0
        src_ep, cluster, profile = packet.src_ep or 0, packet.cluster_id, packet.profile_id or 0
        if group:
            aps = APS_GROUP_HEADER.pack(
                APS_GROUP, int(address_value(dst)), cluster, profile, src_ep, counters.aps_counter
            )
        else:
            mode = APS_BROADCAST if broadcast else APS_UNICAST
            aps = APS_HEADER.pack(mode | ack, packet.dst_ep or 0, cluster, profile, src_ep, counters.aps_counter)
        counters.aps_counter = (counters.aps_counter + 1) & 0xFF
        aps += packet.data.serialize()
        wanted = bool(packet.tx_options & t.TransmitOptions.APS_Encryption) if aps_encrypted is None else aps_encrypted
        if wanted and not multi:
            aps = self._secure_aps(aps, src, nwk_dst, address_value(dst), counters)
        return self._frame(src, nwk_dst, multi, aps, packet.radius or DEFAULT_RADIUS, counters, self.network_key)

    def encode_transport_key(
        self, src: int, dst: int, command: aps_security.TransportKey, link_key: bytes, *, nwk_secured: bool = False
    ) -> bytes:
        """An APS Transport-Key command from `src` to `dst` (NWK addresses), secured with the key-transport key
        (key-load key for an application link key) of `link_key`, the sender's IEEE address in the extended
        nonce (Zigbee PRO 4.4.1.1). The NWK header is not secured by default: a joiner has no network
        key until this frame gives it one."""
        counters = self._counters.setdefault(src, _NodeCounters())
        frame = aps_security.command_frame(counters.aps_counter, aps_security.build_transport_key(command))
        counters.aps_counter = (counters.aps_counter + 1) & 0xFF
        aux = AuxHeader(aps_security.transport_key_id(command), counters.aps_frame_counter, bytes(self.ieee_of(src)))
        counters.aps_frame_counter += 1
        secured = aps_security.secure(frame, link_key, aux)
        network_key = self.network_key if nwk_secured else None
        return self._frame(src, dst, False, secured, DEFAULT_RADIUS, counters, network_key)

    def _secure_aps(self, frame: bytes, src: int, nwk_dst: int, address: object, counters: _NodeCounters) -> bytes:
        source = self.ieee_of(src)
        target = address if isinstance(address, t.EUI64) else self.ieee_of(nwk_dst)
        key = self._link_keys.get(_pair(source, target))
        if key is None:
            self.missing_link_keys.add(frozenset((source, target)))
            return frame
        aux = AuxHeader(KeyId.DATA, counters.aps_frame_counter, bytes(source))
        counters.aps_frame_counter += 1
        return aps_security.secure(frame, key, aux)

    def _frame(
        self,
        src: int,
        nwk_dst: int,
        multi: bool,
        aps: bytes,
        radius: int,
        counters: _NodeCounters,
        network_key: bytes | None,
    ) -> bytes:
        control = NWK_VERSION_2 | (0 if multi else NWK_DISCOVER_ROUTE) | (NWK_SECURITY if network_key else 0)
        nwk = NWK_HEADER.pack(control, nwk_dst, src, radius, counters.nwk_seq)
        counters.nwk_seq = (counters.nwk_seq + 1) & 0xFF

        control = MAC_DATA | MAC_PAN_ID_COMPRESSION | MAC_SHORT_ADDRESSES | (0 if multi else MAC_ACK_REQUEST)
        mac_dst = MAC_BROADCAST if multi else nwk_dst
        mac = MAC_HEADER.pack(control, counters.mac_seq, self.pan_id, mac_dst, src)
        counters.mac_seq = (counters.mac_seq + 1) & 0xFF

        payload = aps
        if network_key is not None:
            aux = AuxHeader(KeyId.NETWORK, counters.frame_counter, bytes(self.ieee_of(src)), NETWORK_KEY_SEQUENCE)
            counters.frame_counter = (counters.frame_counter + 1) & 0xFFFFFFFF
            payload = ccm.encrypt(network_key, nwk, aux, aps)
        frame = mac + nwk + payload
        return frame + fcs(frame)


class PcapWriter:
    """Writes a pcap of what crossed the air (attach it) or of packets handed to `write`.

    The capture goes to a temporary file beside `path` and is renamed over `path` on `close()`, so a run that
    dies leaves no half capture behind. Every record is complete when written, so closing after an error in
    the run keeps what was captured up to it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        network_key: bytes | None,
        pan_id: int,
        clock: Clock | None = None,
        link_keys: Mapping[tuple[t.EUI64, t.EUI64], bytes] | None = None,
    ) -> None:
        self.path = Path(path)
        self.encoder = FrameEncoder(pan_id=pan_id, network_key=network_key)
        self._labels: dict[bytes, str] = {}
        if network_key is not None:
            self._labels[bytes(network_key)] = "network key"
        for (a, b), key in (link_keys or {}).items():
            self.set_link_key(a, b, key)
        self.frames = 0
        self._anchor: tuple[float, float] | None = None
        self._air: Air | None = None
        self._remove_tap: Callable[[], None] | None = None
        if clock is not None:
            reference = clock.utc()
            self._anchor = (reference.timestamp(), clock.loop_time_at(reference))
        directory = self.path.parent
        if not directory.is_dir():
            raise CaptureError(f"capture file {self.path}: directory {directory} does not exist")
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise CaptureError(f"capture file {self.path}: cannot write in {directory} ({exc.strerror})") from None
        self._file = os.fdopen(fd, "wb")
        self._file.write(PCAP_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_IEEE802_15_4_WITHFCS))
        self._closed = False

    # -- sources ------------------------------------------------------------------------------------------

    def attach(self, air: Air) -> None:
        """Capture every transmission on `air`; IEEE addresses of its nodes are looked up as frames appear."""
        self._air = air
        self.encoder.add_resolver(
            lambda nwk: node.ieee if (node := air.node(nwk)) is not None else None,
            lambda ieee: node.nwk if (node := air.node_by_ieee(ieee)) is not None else None,
        )
        air.add_tap(self.write)

    def attach_radio(self, app: ControllerApplication) -> None:
        """Capture what the CHF's own radio sends and receives (a real stick has no virtual air to listen to);
        IEEE addresses come from zigpy's device table."""

        def ieee_of(nwk: int) -> t.EUI64 | None:
            if nwk == app.state.node_info.nwk:
                return app.state.node_info.ieee
            return next((d.ieee for d in app.devices.values() if d.nwk == nwk), None)

        def nwk_of(ieee: t.EUI64) -> int | None:
            device = app.devices.get(ieee)
            return None if device is None else int(device.nwk)

        self.encoder.add_resolver(ieee_of, nwk_of)
        if not isinstance(app, HostMixin):
            raise TypeError(f"{type(app).__name__} has no tap for a capture (an emulator-hosted app has one)")
        self._remove_tap = app.add_tap(self.write)

    def add_node(self, nwk: int, ieee: t.EUI64) -> None:
        """Name a node's IEEE address (needed for NWK security) when it is not on an attached air."""
        self.encoder.add_node(nwk, ieee)

    # -- keys ---------------------------------------------------------------------------------------------

    def set_link_key(self, a: t.EUI64, b: t.EUI64, key: bytes, label: str | None = None) -> None:
        """The link key nodes `a` and `b` share: their APS-encrypted frames are written secured with it from
        now on (an install-code key, then the CBKE key that replaces it)."""
        self.encoder.set_link_key(a, b, key)
        self._labels.setdefault(bytes(key), label or f"link key {a} {b}")

    def keys(self) -> list[CaptureKey]:
        """The keys a reader needs to open everything written so far: the network key, then each link key
        (unhashed) in the order it was given."""
        return [CaptureKey(key, label) for key, label in self._labels.items()]

    def tshark_options(self) -> list[str]:
        """`-o uat:zigbee_pc_keys:...` arguments for tshark with every key of `keys()`."""
        return tshark_key_options(self.keys())

    def write_keys(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write `keys()` as a Wireshark `zigbee_pc_keys` table, by default beside the capture as `<pcap>.keys`.
        The file holds secrets: it is readable by its owner only."""
        target = Path(path) if path is not None else self.path.with_name(self.path.name + ".keys")
        try:
            write_atomic(target, keys_file_text(self.keys()), mode=0o600)
        except OSError as exc:
            raise CaptureError(f"keys file {target}: cannot write ({exc.strerror})") from None
        return target

    # -- writing ------------------------------------------------------------------------------------------

    def write(
        self, packet: t.ZigbeePacket, loop_time: float | None = None, *, aps_encrypted: bool | None = None
    ) -> None:
        """Write one packet, timestamped at `loop_time` (default: the running loop's time now). APS encryption
        follows `aps_encrypted`, or the packet's `TransmitOptions.APS_Encryption` when that is None."""
        self._check_open()
        self._record(self.encoder.encode(packet, aps_encrypted=aps_encrypted), loop_time)

    def write_transport_key(
        self,
        src: int,
        dst: int,
        command: aps_security.TransportKey,
        link_key: bytes,
        loop_time: float | None = None,
        *,
        nwk_secured: bool = False,
        label: str | None = None,
    ) -> None:
        """Write the APS Transport-Key `command` from `src` to `dst` (NWK addresses) secured with `link_key`'s
        key-transport (or key-load) key, as a trust center sends the network key to a joiner under its
        install-code key. `link_key` joins `keys()`: Wireshark needs it, unhashed, to open the frame."""
        if len(link_key) != ccm.KEY_SIZE:
            raise CaptureError(f"Transport-Key link key: expected {ccm.KEY_SIZE} bytes, got {len(link_key)}")
        self._check_open()
        frame = self.encoder.encode_transport_key(src, dst, command, link_key, nwk_secured=nwk_secured)
        self._labels.setdefault(bytes(link_key), label or f"link key {self.encoder.ieee_of(dst)} (Transport-Key)")
        self._record(frame, loop_time)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"capture {self.path} is closed")

    def _record(self, frame: bytes, loop_time: float | None) -> None:
        when = asyncio.get_running_loop().time() if loop_time is None else loop_time
        stamp = self._timestamp(when)
        seconds, micros = divmod(round(stamp * 1_000_000), 1_000_000)
        self._file.write(PCAP_RECORD.pack(seconds, micros, len(frame), len(frame)) + frame)
        self.frames += 1

    def _timestamp(self, loop_time: float) -> float:
        if self._anchor is None:
            # No clock: the first frame is stamped with the wall-clock UTC, later ones by loop time after it.
            self._anchor = (datetime.now(UTC).timestamp(), loop_time)
        epoch, base = self._anchor
        return epoch + (loop_time - base)

    # -- finishing ----------------------------------------------------------------------------------------

    def close(self) -> Path:
        """Finish the capture and put it at `path`. Idempotent."""
        if self._closed:
            return self.path
        self._closed = True
        self._detach()
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, self.path)
        except BaseException:
            self._remove_tmp()
            raise
        return self.path

    def discard(self) -> None:
        """Drop the capture without touching `path`."""
        if self._closed:
            return
        self._closed = True
        self._detach()
        self._file.close()
        self._remove_tmp()

    def _detach(self) -> None:
        if self._remove_tap is not None:
            self._remove_tap()
            self._remove_tap = None
        if self._air is not None:
            with contextlib.suppress(ValueError):
                self._air.remove_tap(self.write)
            self._air = None

    def _remove_tmp(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
