"""A scripted OTA client that probes an OTA server: it sends exactly the requests a conformance scenario names and
keeps every answer, timed, as evidence.

The emulated PPMID/HCALCS (`emulator.device`) run the OTA client state machine, so they only ever send what a
well-behaved client would. A server check needs the opposite: unknown images, offsets past the end, truncated
frames, Upgrade End statuses out of turn — and a client that never reacts on its own, so that every frame in the
evidence is one the scenario asked for. The probe still answers what a coordinator's interview asks (ZDO
descriptors, Basic and OTA-client attributes) with the device's own pure responders: a server reached through
zigpy only talks OTA to a device it has joined and interviewed (ZIGPY_BELLOWS.md §1.3, §1.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Basic

from emulator.clock import Clock
from emulator.conformance.recorder import is_broadcast, record
from emulator.conformance.verdict import FrameRecord
from emulator.device import attributes, zdo
from emulator.ota import frames
from emulator.ota.frames import OtaCommand, Status
from emulator.radio.air import COORDINATOR_NWK, Air
from emulator.radio.secure import SecureRadio

# How long the probe waits for an answer before it calls the server silent, and how long it keeps listening
# after the answers it expected (a second answer to one request is itself a finding). Protocol seconds: on
# virtual time they cost nothing.
ANSWER_TIMEOUT = 5.0
LINGER = 0.5
# A download gives up after this many requests: a server that never advances the offset must not hang a run.
MAX_DOWNLOAD_REQUESTS = 2000
# SPEC.md §7 (UNCONFIRMED): the SE device id a PPMID announces.
PPMID_DEVICE_ID = 0x0506
_ANSWERED_GENERAL = frozenset(
    {
        foundation.GeneralCommand.Read_Attributes,
        foundation.GeneralCommand.Write_Attributes,
        foundation.GeneralCommand.Write_Attributes_Undivided,
        foundation.GeneralCommand.Write_Attributes_No_Response,
        foundation.GeneralCommand.Discover_Attributes,
    }
)


@dataclass(frozen=True)
class ProbeIdentity:
    """Who the probe says it is: the descriptors an interview reads and the image it claims to run."""

    ieee: t.EUI64
    nwk: int
    profile_id: int
    manufacturer_code: int
    image_type: int
    file_version: int
    hardware_version: int | None
    endpoint: int = 1
    device_id: int = PPMID_DEVICE_ID
    model: str = "ota-emu probe"
    manufacturer_name: str = "ota-emu"


@dataclass(frozen=True)
class ServerFrame(FrameRecord):
    """A frame on a server check's bench, where the device under test is the server (the coordinator, NWK
    0x0000) rather than the device the records' default direction assumes."""

    @property
    def direction(self) -> str:
        return "from DUT" if self.src == COORDINATOR_NWK else "to DUT"


def server_frame(packet: t.ZigbeePacket, at: float) -> ServerFrame:
    recorded = record(packet, at)
    return ServerFrame(**{f.name: getattr(recorded, f.name) for f in dataclasses.fields(recorded)})


@dataclass
class Exchange:
    """One request the probe sent (None for frames it only listened for) and every OTA frame the server sent
    back while the probe waited."""

    label: str
    request: FrameRecord | None
    answers: list[FrameRecord] = field(default_factory=list)

    @property
    def frames(self) -> list[FrameRecord]:
        return ([self.request] if self.request is not None else []) + self.answers

    @property
    def sent(self) -> FrameRecord:
        """The request of an exchange the probe started with one (judges read it back)."""
        assert self.request is not None, f"{self.label}: the probe only listened"
        return self.request


def raw(frame: FrameRecord) -> bytes:
    return bytes.fromhex(frame.hex)


def decode_record(frame: FrameRecord) -> frames.Frame | None:
    """The recorded frame decoded again from its bytes (judges read bytes, not the recorder's summary); None
    when it does not decode."""
    try:
        return frames.decode(raw(frame))
    except (frames.MalformedFrame, frames.UnsupportedCommand):
        return None


class Probe:
    """A node on the air that plays an OTA client's side of a script against the server at NWK 0x0000."""

    rx_on_when_idle = True

    def __init__(
        self, air: Air | SecureRadio, clock: Clock, identity: ProbeIdentity, *, server_endpoint: int = 1
    ) -> None:
        # The air itself, or a `radio.secure.SecureRadio` over it when the bench speaks Smart Energy security.
        self.air = air
        self.clock = clock
        self.identity = identity
        self.ieee = identity.ieee
        self.nwk = identity.nwk
        self.server_endpoint = server_endpoint
        self.node = zdo.NodeInfo(
            nwk=identity.nwk,
            ieee=identity.ieee,
            endpoint=identity.endpoint,
            profile_id=identity.profile_id,
            device_id=identity.device_id,
            manufacturer_code=identity.manufacturer_code,
            sleepy=False,
            in_clusters=(Basic.cluster_id,),
            out_clusters=(frames.CLUSTER_ID,),
        )
        self.notifies: list[FrameRecord] = []
        # OTA frames from the server that arrived while no request was waiting for them.
        self._late: list[FrameRecord] = []
        self._inbox: asyncio.Queue[FrameRecord] = asyncio.Queue()
        self._notified = asyncio.Event()
        self._tsn = 0x40
        # Handlers offered every frame of a cluster the probe does not answer itself (Key Establishment); True
        # takes it.
        self.taps: list[Callable[[t.ZigbeePacket], bool]] = []

    # -- sending ------------------------------------------------------------------------------------------

    def next_tsn(self) -> int:
        self._tsn = (self._tsn + 1) & 0xFF
        return self._tsn

    def send_raw(
        self, data: bytes, *, cluster_id: int = frames.CLUSTER_ID, profile_id: int | None = None
    ) -> FrameRecord:
        """Exactly these ZCL bytes to the server's OTA cluster (malformed on purpose, when a check says so), or
        to another of its clusters."""
        packet = self._packet(
            t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(COORDINATOR_NWK)),
            self.identity.endpoint,
            self.server_endpoint,
            self.identity.profile_id if profile_id is None else profile_id,
            cluster_id,
            data,
        )
        sent = server_frame(packet, self.clock.now())
        self.air.send(packet)
        return sent

    def _packet(
        self,
        dst: t.AddrModeAddress | None,
        src_ep: int,
        dst_ep: int | None,
        profile_id: int,
        cluster_id: int,
        data: bytes,
    ) -> t.ZigbeePacket:
        return t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk)),
            src_ep=t.uint8_t(src_ep),
            dst=dst,
            dst_ep=None if dst_ep is None else t.uint8_t(dst_ep),
            tsn=t.uint8_t(data[0] if profile_id == zdo.ZDO_PROFILE else data[1]),
            profile_id=t.uint16_t(profile_id),
            cluster_id=t.uint16_t(cluster_id),
            data=t.SerializableBytes(data),
            tx_options=t.TransmitOptions.NONE if is_broadcast(dst) else t.TransmitOptions.ACK,
            radius=t.uint8_t(0),
        )

    # -- asking -------------------------------------------------------------------------------------------

    async def ask(self, label: str, name: str, *, listen: float | None = None, **fields: Any) -> Exchange:
        """Send an OTA command, built by the shared encoder with the probe's next TSN (see `ask_raw`)."""
        return await self.ask_raw(label, frames.encode(name, tsn=self.next_tsn(), **fields), listen=listen)

    async def ask_raw(self, label: str, data: bytes, *, listen: float | None = None) -> Exchange:
        """Send `data` and collect what the server sends back: with `listen`, everything for that many seconds;
        otherwise up to the first answer and `LINGER` seconds more (or `ANSWER_TIMEOUT` of silence)."""
        self._drain()
        exchange = Exchange(label, self.send_raw(data))
        exchange.answers = await self._collect(listen)
        return exchange

    async def listen(self, label: str, seconds: float) -> Exchange:
        """Only listen: what the server sends of its own accord (unsolicited Upgrade End Responses)."""
        self._drain()
        return Exchange(label, None, await self._collect(seconds))

    async def _collect(self, listen: float | None) -> list[FrameRecord]:
        loop = asyncio.get_running_loop()
        got: list[FrameRecord] = []
        deadline = loop.time() + (listen if listen is not None else ANSWER_TIMEOUT)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return got
            try:
                got.append(await asyncio.wait_for(self._inbox.get(), remaining))
            except TimeoutError:
                return got
            if listen is None and len(got) == 1:
                deadline = min(deadline, loop.time() + LINGER)

    def late(self) -> list[FrameRecord]:
        """Every OTA frame from the server that arrived while no request was listening."""
        self._drain()
        return list(self._late)

    def _drain(self) -> None:
        """Keep what arrived after its request stopped listening: it is evidence too."""
        while not self._inbox.empty():
            self._late.append(self._inbox.get_nowait())

    async def next_notify(self, after: int, within: float = ANSWER_TIMEOUT) -> FrameRecord | None:
        """The first Image Notify beyond the `after` already received, or None if none comes `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.notifies) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self._notified.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notified.wait(), remaining)
        return self.notifies[after]

    # -- the usual requests ---------------------------------------------------------------------------------

    async def query(
        self, label: str, *, current_version: int | None = None, hardware_version: int | bool | None = True
    ) -> Exchange:
        """Query Next Image Request for the probe's manufacturer and image type; `hardware_version=True` sends
        the identity's hardware version, None leaves the field out (SPEC.md §2.2)."""
        identity = self.identity
        hardware = identity.hardware_version if hardware_version is True else hardware_version
        fields: dict[str, Any] = {
            "field_control": 0,
            "manufacturer_code": identity.manufacturer_code,
            "image_type": identity.image_type,
            "current_file_version": identity.file_version if current_version is None else current_version,
        }
        if hardware is not None:
            fields.update(field_control=1, hardware_version=hardware)
        return await self.ask(label, "query_next_image", **fields)

    async def block(
        self,
        label: str,
        key: tuple[int, int, int],
        offset: int,
        maximum_data_size: int,
        *,
        minimum_block_period: int | None = None,
    ) -> Exchange:
        """Image Block Request for image `key` (manufacturer, type, version), with the MinimumBlockPeriod field
        when one is given (field control bit 1, SPEC.md §2.4)."""
        manufacturer, image_type, version = key
        fields: dict[str, Any] = {
            "field_control": 0,
            "manufacturer_code": manufacturer,
            "image_type": image_type,
            "file_version": version,
            "file_offset": offset,
            "maximum_data_size": maximum_data_size,
        }
        if minimum_block_period is not None:
            fields.update(field_control=2, minimum_block_period=minimum_block_period)
        return await self.ask(label, "image_block", **fields)

    async def download(self, key: tuple[int, int, int], size: int, maximum_data_size: int) -> list[Exchange]:
        """Fetch a whole file block by block, as a client does: the next offset is the last one plus the data
        received; WAIT_FOR_DATA is honoured. Stops at `size`, or at the first answer that is not a block."""
        exchanges: list[Exchange] = []
        offset = 0
        while offset < size and len(exchanges) < MAX_DOWNLOAD_REQUESTS:
            exchange = await self.block(f"block @{offset}", key, offset, maximum_data_size)
            exchanges.append(exchange)
            answer = decode_record(exchange.answers[0]) if exchange.answers else None
            if answer is None or answer.name != "image_block_response":
                break
            command = answer.command
            if command.status == Status.WAIT_FOR_DATA:
                await asyncio.sleep(wait_seconds(command))
                continue
            if command.status != Status.SUCCESS or command.file_offset != offset or not command.image_data:
                break
            offset += len(command.image_data)
        return exchanges

    # -- receiving ----------------------------------------------------------------------------------------

    def receive(self, packet: t.ZigbeePacket) -> None:
        data = packet.data.serialize()
        if packet.dst_ep == zdo.ZDO_ENDPOINT:
            self._on_zdo(packet, data)
            return
        if packet.dst_ep not in (self.identity.endpoint, zdo.BROADCAST_ENDPOINT) or not data:
            return
        if any(tap(packet) for tap in self.taps):
            return
        if packet.cluster_id == frames.CLUSTER_ID:
            self._on_ota(packet, data)
        elif packet.cluster_id == Basic.cluster_id:
            self._on_general(packet, data, self._basic_table())

    def _on_zdo(self, packet: t.ZigbeePacket, data: bytes) -> None:
        answer = zdo.answer(self.node, packet.cluster_id, data, broadcast=is_broadcast(packet.dst))
        if answer is not None:
            cluster, frame = answer
            self.air.send(self._packet(packet.src, 0, 0, zdo.ZDO_PROFILE, cluster, frame))

    def _on_ota(self, packet: t.ZigbeePacket, data: bytes) -> None:
        frame_type = data[0] & 0x03
        if frame_type == foundation.FrameType.GLOBAL_COMMAND and len(data) >= 3 and data[2] in _ANSWERED_GENERAL:
            self._on_general(packet, data, self._ota_table())
            return
        seen = server_frame(packet, self.clock.now())
        if frame_type == foundation.FrameType.CLUSTER_COMMAND and len(data) >= 3 and data[2] == OtaCommand.IMAGE_NOTIFY:
            self.notifies.append(seen)
            self._notified.set()
            return
        self._inbox.put_nowait(seen)

    def _on_general(self, packet: t.ZigbeePacket, data: bytes, table: attributes.AttributeTable) -> None:
        """Attribute reads and writes from the interview (and zigpy's after-upgrade read) answered from the
        probe's tables; anything else general is left unanswered, as the probe is not under test here."""
        try:
            header, rest = foundation.ZCLHeader.deserialize(data)
            if header.frame_control.frame_type != foundation.FrameType.GLOBAL_COMMAND:
                return
            schema = foundation.GENERAL_COMMANDS[foundation.GeneralCommand(header.command_id)].schema
            command, _ = schema.deserialize(rest)
        except (ValueError, KeyError, IndexError):
            return
        answer = attributes.answer_general(header, command, table)
        if isinstance(answer, bytes) and not is_broadcast(packet.dst):
            self.air.send(
                self._packet(
                    packet.src, self.identity.endpoint, packet.src_ep, packet.profile_id, packet.cluster_id, answer
                )
            )

    def _basic_table(self) -> dict[int, tuple[type, Any]]:
        identity = self.identity
        return attributes.basic_table(
            manufacturer_name=identity.manufacturer_name,
            model=identity.model,
            running_version=identity.file_version,
            stack_version=2,
            hardware_version=identity.hardware_version,
            sleepy=False,
        )

    def _ota_table(self) -> dict[int, tuple[type, Any]]:
        identity = self.identity
        return attributes.ota_table(
            upgrade_server_id=attributes.NO_SERVER,
            file_offset=attributes.NO_FILE_OFFSET,
            current_file_version=identity.file_version,
            current_stack_version=2,
            downloaded_file_version=attributes.NO_FILE_VERSION,
            downloaded_stack_version=attributes.NO_STACK_VERSION,
            image_upgrade_status=0,
            manufacturer_id=identity.manufacturer_code,
            image_type_id=attributes.NO_IMAGE_TYPE,
            minimum_block_period=0,
            image_stamp=0,
            upgrade_activation_policy=0,
            upgrade_timeout_policy=0,
        )


def wait_seconds(command: Any) -> float:
    """How long a WAIT_FOR_DATA asks the client to wait (SPEC.md §2.6): RequestTime − CurrentTime, which is also
    right for the relative form (CurrentTime 0); never negative."""
    return float(max(0, int(command.request_time) - int(command.current_time)))
