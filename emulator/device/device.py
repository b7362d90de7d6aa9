"""An emulated PPMID or HCALCS: one node on a radio — the virtual air, or an EZSP stick (`device.radio`).

The node answers what a coordinator's interview asks (ZDO descriptors, Basic and OTA-client attributes), runs
the OTA client state machine, and keeps its firmware and download state across restarts. PPMID and HCALCS share
everything except their GB activation (DESIGN.md §3): a PPMID activates when the server's Upgrade End Response
says so and reports it CS09-style; an HCALCS holds the image until an Activate Firmware command (CS06) carrying
the right Manufacturer Image Hash.

Frame rules (ZIGPY_BELLOWS.md §1.2): an answer echoes the request's TSN, flips the direction bit and comes from
the endpoint the request was sent to. A frame the device cannot use gets the ZCL Default Response the
specification asks for — MALFORMED_COMMAND, UNSUP_CLUSTER_COMMAND, UNSUPPORTED_CLUSTER — sent even when the
frame disabled default responses, because ZCL (07-5123 §2.5.12.2) reports errors regardless of that bit, and
never to a broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import zigpy.types as t
from zigpy.zcl import foundation
from zigpy.zcl.clusters.general import Basic

from emulator.clock import Clock
from emulator.device import attributes, events, firmware, zdo
from emulator.device.attributes import AttributeTable
from emulator.device.client import JOIN_POLL_WINDOW, OtaClient
from emulator.device.faults import DeviceFault
from emulator.device.inbound import BlockIn, OtaIn, ZdoIn
from emulator.device.radio import DeviceRadio
from emulator.device.state import DeviceState, StateStore
from emulator.ota import frames, headers
from emulator.ota.blocks import decode_block_success
from emulator.ota.frames import OtaCommand
from emulator.profiles import DeviceProfile
from emulator.radio.secure import SecureRadio

LOGGER = logging.getLogger(__name__)

Status = foundation.Status
GeneralCommand = foundation.GeneralCommand

OTA_CLUSTER = frames.CLUSTER_ID
BASIC_CLUSTER = Basic.cluster_id
IN_CLUSTERS = (BASIC_CLUSTER,)
OUT_CLUSTERS = (OTA_CLUSTER,)
DEVICE_ANNCE = 0x0013
BROADCAST_RX_ON = 0xFFFD
FIRST_BROADCAST = 0xFFF8
HIGHEST_NWK = 0xFFF7
MAX_NOTIFY_PAYLOAD_TYPE = 3
MAX_QUERY_JITTER = 100
# zigpy's schema makes the image fields of these responses optional; SPEC.md §2.3 requires all four on SUCCESS.
_OFFER_RESPONSES = frozenset({"query_next_image_response", "query_specific_file_response"})
_OFFER_FIELDS = ("manufacturer_code", "image_type", "file_version", "image_size")

Listener = Callable[[events.DeviceEvent], None]


def _offer_fields(command: Any) -> list[Any]:
    return [getattr(command, name) for name in _OFFER_FIELDS]


def _is_broadcast(dst: t.AddrModeAddress | None) -> bool:
    if dst is None:
        return False
    if dst.addr_mode in (t.AddrMode.Broadcast, t.AddrMode.Group):
        return True
    return dst.addr_mode == t.AddrMode.NWK and isinstance(dst.address, int) and dst.address >= FIRST_BROADCAST


def _sender(packet: t.ZigbeePacket) -> object:
    """The source address of a received frame (None if the radio gave none)."""
    return None if packet.src is None else packet.src.address


# zigpy's ZigbeePacket stores what it is given; its annotations name zigpy's integer types for fields that the
# radios and zigpy itself fill with plain ints. Converting every field of every frame would cost more than the
# rest of building it, so the constructor is called untyped here.
_Packet = cast(Callable[..., t.ZigbeePacket], t.ZigbeePacket)


class EmulatedDevice:
    """A PPMID or HCALCS on `air`, described by `profile`.

    `more_image_types` makes the device need further images after its main one (SPEC.md §2.7 REQUIRE_MORE_IMAGE):
    once the main image is verified it sends Upgrade End REQUIRE_MORE_IMAGE (status 5) and queries for each of
    these image types in turn before Upgrade End SUCCESS.
    """

    #: Other nodes' Device_annce means nothing to an end device: the air need not deliver it (see `radio.air`).
    hears_announcements = False

    def __init__(
        self,
        profile: DeviceProfile,
        air: DeviceRadio,
        clock: Clock,
        *,
        nwk: int | None = None,
        state_dir: str | Path | None = None,
        seed: int = 0,
        more_image_types: Sequence[int] = (),
    ) -> None:
        self.profile = profile
        self.air = air
        if isinstance(air, SecureRadio):
            air.encrypt_outgoing = DeviceFault.OTA_WITHOUT_APS_ENCRYPTION not in profile.faults
            air.refuse_clear = DeviceFault.ACCEPT_UNENCRYPTED_OTA not in profile.faults
        self.clock = clock
        self.ieee = profile.ieee
        self.rng = random.Random(f"{seed}:{self.ieee}")
        self.rx_on_when_idle = not profile.sleepy
        self.endpoint = profile.endpoint
        self.more_image_types = tuple(more_image_types)
        self._auto_nwk = nwk is None and profile.nwk is None
        self.nwk = nwk if nwk is not None else profile.nwk if profile.nwk is not None else self._free_nwk()
        self.identity = firmware.Identity(
            ieee=self.ieee,
            manufacturer_code=profile.manufacturer_code,
            hardware_version=profile.hardware_version,
            signers=firmware.load_signers([str(p) for p in profile.signer_paths()]),
            require_signature=profile.require_signature,
        )
        self.store = StateStore(state_dir, self.ieee) if state_dir is not None else None
        if self.store is not None:
            self.store.remove_stale_temporaries()  # what a killed run of this device left half-written
        loaded = self.store.load() if self.store is not None else None
        self.state = loaded or DeviceState(
            running_version=profile.file_version,
            running_stack_version=profile.stack_version,
            minimum_block_period=profile.minimum_block_period,
        )
        self._address(self.nwk)
        self._server_dst: t.AddrModeAddress | None = None
        self._server_ep = 1
        self._listeners: list[Listener] = []
        self._client: OtaClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._zdo_seq = self.rng.randrange(256)
        #: Awaited after joining and before the OTA client starts (Smart Energy key establishment); False keeps
        #: the OTA client from starting and takes the device off the network.
        self.before_ota: Callable[[], Awaitable[bool]] | None = None

    # == public API ==================================================================================

    @property
    def running_version(self) -> int:
        return self.state.running_version

    @property
    def downloaded_image(self) -> bytes | None:
        """The verified image held for activation (the main image type), or None."""
        for held in self.state.held:
            if held.ref.image_type == self.profile.image_type:
                return held.data
        return None

    @property
    def attributes(self) -> dict[int, Any]:
        """OTA client attribute values by id (0x0000–0x000C and 0xFFFD), as a Read Attributes would return."""
        return {attrid: value for attrid, (_, value) in self._ota_table().items()}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    async def start(self) -> None:
        """Join the air and start the OTA client: Device_annce (within `ANNOUNCE_SPREAD` s), server discovery,
        then queries after the start jitter."""
        if self.running:
            return
        self._client = OtaClient(self, self.state, self.store, self.identity, self.rng, self.more_image_types)
        if self._auto_nwk and self.air.node(self.nwk) not in (None, self):
            self._address(self._free_nwk())  # another node took it since this device was made
        self.air.join(self)
        self._client.stay_awake(JOIN_POLL_WINDOW)
        self._task = asyncio.create_task(self._run_client(self._client), name=f"ota-client {self.ieee}")
        self._task.add_done_callback(self._task_done)

    async def _run_client(self, client: OtaClient) -> None:
        if self.before_ota is not None and not await self.before_ota():
            self.air.detach(self)
            return
        await client.run()

    async def stop(self) -> None:
        """Stop every timer, save the state (partial download included) and leave the air."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            self._client.close()
            self._client.save(partial=True, held=True, running=True)
        self.air.detach(self)

    async def activate_firmware(self, image_hash: bytes, at: datetime | None = None) -> events.ActivationReply:
        """GB Activate Firmware (CS06): activate the held image if `image_hash` is the SHA-256 of its
        Manufacturer Image — now (the reply carries the outcome) or, with a future `at`, accepted now and executed
        then (an `ActivationOutcome` event with alert 0x8F66/0x8F67 reports it)."""
        if self._client is None:
            raise RuntimeError(f"device {self.ieee} is not started")
        return self._client.activate_firmware(bytes(image_hash), at)

    # == Host (what the OTA client uses) ===============================================================

    def send_ota(self, data: bytes, tsn: int) -> None:
        if self._server_dst is None:
            return
        self.air.send(
            _Packet(
                src=self._src,
                src_ep=self.endpoint,
                dst=self._server_dst,
                dst_ep=self._server_ep,
                tsn=tsn,
                profile_id=self.profile.profile_id,
                cluster_id=OTA_CLUSTER,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.ACK,
                radius=0,
            )
        )

    def send_zdo(self, cluster_id: int, data: bytes, dst_nwk: int) -> None:
        self._send(t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(dst_nwk)), 0, 0, 0, cluster_id, data)

    def set_server(self, nwk: int, endpoint: int) -> None:
        self._server_dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk))
        self._server_ep = endpoint

    def poll(self) -> None:
        self.air.poll(self.nwk)

    def announce(self) -> None:
        self._zdo_seq = (self._zdo_seq + 1) & 0xFF
        self._send(
            t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.NWK(BROADCAST_RX_ON)),
            0,
            0,
            0,
            DEVICE_ANNCE,
            zdo.device_annce(self._zdo_seq, self.node),
        )
        self.emit(events.Announced, nwk=self.nwk)

    def emit(self, kind: type[events.DeviceEvent], **fields: Any) -> None:
        if not self._listeners:
            return
        event = kind(ieee=self.ieee, at=self.clock.now(), **fields)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                LOGGER.exception("device %s: event listener failed on %s", self.ieee, type(event).__name__)

    # == receiving ===================================================================================

    def receive(self, packet: t.ZigbeePacket) -> None:
        """Called by the air for every frame addressed to (or broadcast to) this node."""
        client = self._client
        if client is None or not self.running:
            return
        data = packet.data.serialize()
        if packet.dst_ep == zdo.ZDO_ENDPOINT:
            self._on_zdo(packet, data)
            return
        if packet.dst_ep not in (self.endpoint, zdo.BROADCAST_ENDPOINT) or packet.profile_id not in (
            self.profile.profile_id,
            zdo.WILDCARD_PROFILE,
        ):
            return
        if packet.cluster_id == OTA_CLUSTER:
            block = decode_block_success(data)
            if block is not None:
                src = packet.src
                if src is not None and src.address == client.server_nwk:
                    client.deliver(BlockIn(*block))
                return
        self._on_zcl(packet, data, _is_broadcast(packet.dst))

    def _on_zdo(self, packet: t.ZigbeePacket, data: bytes) -> None:
        cluster = packet.cluster_id
        if cluster == DEVICE_ANNCE:  # every other node's join: nothing to answer (the common broadcast)
            return
        if cluster & 0x8000:
            if self._client is not None:
                self._client.deliver(ZdoIn(cluster, data))
            return
        answer = zdo.answer(self.node, cluster, data, broadcast=_is_broadcast(packet.dst))
        if answer is not None and packet.src is not None:
            self._send(packet.src, 0, 0, 0, answer[0], answer[1])

    def _on_zcl(self, packet: t.ZigbeePacket, data: bytes, broadcast: bool) -> None:
        try:
            header, rest = headers.parse(data)
        except (ValueError, IndexError):
            self.emit(
                events.FrameRejected,
                cluster_id=packet.cluster_id,
                command_id=-1,
                status=-1,
                reason="no readable ZCL header",
            )
            return
        cluster = packet.cluster_id
        general = header.frame_control.frame_type == foundation.FrameType.GLOBAL_COMMAND
        if general and header.command_id == GeneralCommand.Default_Response:
            self._on_default_response(packet, data, header, broadcast)
            return
        if cluster not in (OTA_CLUSTER, BASIC_CLUSTER):
            self._error(packet, header, broadcast, Status.UNSUPPORTED_CLUSTER, "no such cluster on this endpoint")
            return
        # Our Basic is a server (requests arrive client→server); our OTA cluster a client (server→client).
        expected = frames.C2S if cluster == BASIC_CLUSTER else frames.S2C
        if header.direction != expected:
            wrong_command = not general and cluster == OTA_CLUSTER
            status = Status.UNSUP_CLUSTER_COMMAND if wrong_command else Status.UNSUPPORTED_CLUSTER
            self._error(packet, header, broadcast, status, "command for the other side of the cluster")
            return
        if general:
            table = self._ota_table() if cluster == OTA_CLUSTER else self._basic_table()
            self._on_general(packet, header, rest, table, broadcast)
        elif cluster == OTA_CLUSTER:
            self._on_ota_command(packet, data, header, rest, broadcast)
        else:
            self._error(packet, header, broadcast, Status.UNSUP_CLUSTER_COMMAND, "Basic cluster commands unsupported")

    def _on_default_response(
        self, packet: t.ZigbeePacket, data: bytes, header: foundation.ZCLHeader, broadcast: bool
    ) -> None:
        """A Default Response is never answered; from the OTA server it tells the client how a request fared."""
        client = self._client
        if packet.cluster_id != OTA_CLUSTER or client is None or _sender(packet) != client.server_nwk:
            return
        with contextlib.suppress(frames.MalformedFrame, frames.UnsupportedCommand):
            client.deliver(OtaIn(frames.decode(data), broadcast))

    def _on_general(
        self,
        packet: t.ZigbeePacket,
        header: foundation.ZCLHeader,
        rest: bytes,
        table: AttributeTable,
        broadcast: bool,
    ) -> None:
        try:
            schema = foundation.GENERAL_COMMANDS[GeneralCommand(header.command_id)].schema
        except (ValueError, KeyError):
            self._error(packet, header, broadcast, Status.UNSUP_GENERAL_COMMAND, "unknown general command")
            return
        try:
            command, extra = schema.deserialize(rest)
        except (ValueError, IndexError, KeyError) as exc:
            self._error(packet, header, broadcast, Status.MALFORMED_COMMAND, str(exc))
            return
        if extra:
            self._error(packet, header, broadcast, Status.MALFORMED_COMMAND, f"{len(extra)} trailing byte(s)")
            return
        result = attributes.answer_general(header, command, table)
        if broadcast or result is None:
            return
        if isinstance(result, bytes):
            self._reply(packet, result, header.tsn)
        elif result != Status.SUCCESS:
            self._error(packet, header, broadcast, result, f"general command 0x{header.command_id:02X}")
        elif not header.frame_control.disable_default_response:
            self._default_response(packet, header, Status.SUCCESS)

    def _on_ota_command(
        self, packet: t.ZigbeePacket, data: bytes, header: foundation.ZCLHeader, payload: bytes, broadcast: bool
    ) -> None:
        """A server→client OTA cluster command (SPEC.md §2); the client only listens to its server. Before
        discovery has named one, an Image Notify is heard from any node: only an OTA server sends it (ZCL r7
        §11.13), and the client queries the server discovery finds."""
        client = self._client
        if client is None:
            return
        notify = int(header.command_id) == OtaCommand.IMAGE_NOTIFY
        sender = _sender(packet)
        if sender != client.server_nwk and not (notify and client.server_nwk is None):
            LOGGER.debug("device %s: OTA command from %s, not the OTA server", self.ieee, sender)
            return
        manufacturer_specific = header.frame_control.is_manufacturer_specific
        if notify and not manufacturer_specific and payload:
            if payload[0] > MAX_NOTIFY_PAYLOAD_TYPE:
                self._notify_ignored(payload, broadcast, f"reserved payload type {payload[0]}")
                return
            if len(payload) > 1 and not 1 <= payload[1] <= MAX_QUERY_JITTER:
                self._notify_ignored(payload, broadcast, f"query jitter {payload[1]} outside 1..100")
                return
        try:
            frame = frames.decode(data)
        except frames.MalformedFrame as exc:
            self._error(packet, header, broadcast, Status.MALFORMED_COMMAND, str(exc))
            return
        except frames.UnsupportedCommand as exc:
            status = Status.UNSUP_MANUF_CLUSTER_COMMAND if manufacturer_specific else Status.UNSUP_CLUSTER_COMMAND
            self._error(packet, header, broadcast, status, str(exc))
            return
        command = frame.command
        if frame.name in _OFFER_RESPONSES and command.status == Status.SUCCESS and None in _offer_fields(command):
            self._error(packet, header, broadcast, Status.MALFORMED_COMMAND, "SUCCESS without the image fields")
            return
        if frame.name == "image_notify":
            wanted = not header.frame_control.disable_default_response
            if not broadcast and (wanted or DeviceFault.ZCL_DEFAULT_RESPONSE_WHEN_DISABLED in self.profile.faults):
                self._default_response(packet, header, Status.SUCCESS)
            client.on_image_notify(frame, broadcast)
            return
        client.deliver(OtaIn(frame, broadcast))

    def _notify_ignored(self, payload: bytes, broadcast: bool, reason: str) -> None:
        """Silicon Labs: an Image Notify with a reserved payload type or a jitter outside 1..100 is ignored,
        without a Default Response (SPEC.md §2.1)."""
        self.emit(
            events.NotifyReceived,
            payload_type=payload[0],
            query_jitter=payload[1] if len(payload) > 1 else 0,
            broadcast=broadcast,
            queried=False,
            reason=reason,
        )

    # == sending =====================================================================================

    def _send(
        self, dst: t.AddrModeAddress, src_ep: int, dst_ep: int, profile_id: int, cluster_id: int, data: bytes
    ) -> None:
        self.air.send(
            _Packet(
                src=self._src,
                src_ep=src_ep,
                dst=dst,
                dst_ep=dst_ep,
                tsn=data[0] if profile_id == 0 else 0,
                profile_id=profile_id,
                cluster_id=cluster_id,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.NONE if _is_broadcast(dst) else t.TransmitOptions.ACK,
                radius=0,
            )
        )

    def _reply(self, packet: t.ZigbeePacket, data: bytes, tsn: int) -> None:
        """Answer a ZCL request: to its sender's endpoint, from our endpoint, on the same cluster and profile."""
        profile_id = self.profile.profile_id if packet.profile_id == zdo.WILDCARD_PROFILE else packet.profile_id
        data = self._zcl_faults(data)
        self.air.send(
            _Packet(
                src=self._src,
                src_ep=self.endpoint,
                dst=packet.src,
                dst_ep=packet.src_ep,
                tsn=tsn,
                profile_id=profile_id,
                cluster_id=packet.cluster_id,
                data=t.SerializableBytes(data),
                tx_options=t.TransmitOptions.ACK,
                radius=0,
            )
        )

    def _zcl_faults(self, data: bytes) -> bytes:
        """The deliberate ZCL header deviations of a fault profile (conformance checks Z-01, Z-02, Z-05)."""
        faults = self.profile.faults
        if DeviceFault.ZCL_WRONG_TSN in faults:
            data = data[:1] + bytes([(data[1] + 1) & 0xFF]) + data[2:]
        if DeviceFault.ZCL_WRONG_DIRECTION in faults:
            data = bytes([data[0] ^ 0x08]) + data[1:]
        if DeviceFault.ZCL_MANUFACTURER_FLAG in faults:
            data = bytes([data[0] | 0x04]) + self.profile.manufacturer_code.to_bytes(2, "little") + data[1:]
        return data

    def _default_response(self, packet: t.ZigbeePacket, header: foundation.ZCLHeader, status: Status) -> None:
        data = frames.default_response(
            tsn=header.tsn, command_id=header.command_id, status=status, direction=header.direction.flip()
        )
        self._reply(packet, data, header.tsn)

    def _error(
        self, packet: t.ZigbeePacket, header: foundation.ZCLHeader, broadcast: bool, status: Status, reason: str
    ) -> None:
        self.emit(
            events.FrameRejected,
            cluster_id=packet.cluster_id,
            command_id=header.command_id,
            status=int(status),
            reason=reason,
        )
        if not broadcast and DeviceFault.ZCL_SILENT_ON_UNSUPPORTED not in self.profile.faults:
            self._default_response(packet, header, status)

    # == attribute tables ============================================================================

    def _basic_table(self) -> dict[int, tuple[type, Any]]:
        profile = self.profile
        return attributes.basic_table(
            manufacturer_name=profile.manufacturer_name,
            model=profile.effective_model,
            running_version=self.state.running_version,
            stack_version=self.state.running_stack_version,
            hardware_version=profile.hardware_version,
            sleepy=profile.sleepy,
        )

    def _ota_table(self) -> dict[int, tuple[type, Any]]:
        state = self.state
        profile = self.profile
        return attributes.ota_table(
            upgrade_server_id=state.upgrade_server_id,
            file_offset=state.file_offset,
            current_file_version=state.running_version,
            current_stack_version=state.running_stack_version,
            downloaded_file_version=state.downloaded_file_version,
            downloaded_stack_version=state.downloaded_stack_version,
            image_upgrade_status=state.image_upgrade_status,
            manufacturer_id=profile.manufacturer_code,
            image_type_id=state.image_type_id,
            minimum_block_period=state.minimum_block_period,
            image_stamp=self._image_stamp(),
            upgrade_activation_policy=profile.upgrade_activation_policy,
            upgrade_timeout_policy=profile.upgrade_timeout_policy,
        )

    def _image_stamp(self) -> int:
        """ImageStamp: a checksum unique per build — CRC-32 of the running image, or of its identity for the
        firmware the device was made with."""
        if self.state.running_image is not None:
            return zlib.crc32(self.state.running_image)
        profile = self.profile
        return zlib.crc32(
            struct.pack("<HHI", profile.manufacturer_code, profile.image_type, self.state.running_version)
        )

    # == internals ===================================================================================

    def _address(self, nwk: int) -> None:
        self.nwk = nwk
        self.node = zdo.NodeInfo(
            nwk=nwk,
            ieee=self.ieee,
            endpoint=self.endpoint,
            profile_id=self.profile.profile_id,
            device_id=self.profile.effective_device_id,
            manufacturer_code=self.profile.manufacturer_code,
            sleepy=self.profile.sleepy,
            in_clusters=IN_CLUSTERS,
            out_clusters=OUT_CLUSTERS,
        )
        self._src = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(nwk))

    def _free_nwk(self) -> int:
        while True:
            candidate = self.rng.randint(0x0001, HIGHEST_NWK)
            if self.air.node(candidate) is None:
                return candidate

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            LOGGER.error("device %s: OTA client stopped", self.ieee, exc_info=task.exception())
