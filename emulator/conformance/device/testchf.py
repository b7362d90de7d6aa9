"""The test CHF: the project's OTA server on the CHF radio, plus what a conformance scenario needs on top of it.

The server (`emulator.chf.server.OtaServer`) answers the device under test as a CHF would; a scenario bends
that behaviour without touching the server: its *rules* see every OTA frame from the DUT before the server
does (they sit on the CHF node's ingress as an observer) and may answer a frame themselves — an ABORT at 40 %,
Default Responses 0x98, silence, a block at the wrong offset — which keeps the server's code path the one a
real CHF runs. Everything the CHF radio sends to or receives from the DUT is recorded as `FrameRecord`s, on
the radio itself (`HostMixin.add_tap`), so the same scenarios judge an emulated device on the virtual air and
a real device behind a dongle from the same evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

import zigpy.exceptions
import zigpy.types as t
from zigpy.zcl import ClusterType

from emulator.chf.node import ChfNode
from emulator.chf.server import OtaServer
from emulator.chf.store import ImageStore
from emulator.clock import Clock
from emulator.conformance.recorder import Recorder, is_broadcast, short_address
from emulator.conformance.verdict import FrameRecord
from emulator.eui64 import eui64_key
from emulator.ota import frames
from emulator.profiles import ChfProfile
from emulator.radio.capture import PcapWriter

CHF_NWK = 0x0000
BROADCAST_ENDPOINT = 0xFF

# A scenario's rule looks at one OTA frame from the DUT; True means it answered (or dropped) the frame itself.
FrameRule = Callable[[t.ZigbeePacket, frames.Frame], bool]
Predicate = Callable[[FrameRecord], bool]

# The test CHF's defaults: no Image Notify of its own (scenarios send exactly the ones they mean) and any
# version other than the running one may be offered (a scenario chooses the version it holds).
TEST_CHF = ChfProfile(notify="none", query_policy="any", source="<test CHF>")


def _waits_for(predicate: Predicate, text: str) -> Predicate:
    """`predicate`, saying what a wait on it waits for (shown as a run's progress)."""
    predicate.waits_for = text  # type: ignore[attr-defined]
    return predicate


def dut_sent(*names: str) -> Predicate:
    return _waits_for(lambda f: f.src != CHF_NWK and f.name in names, f"{' or '.join(names)} from the DUT")


def chf_sent(*names: str) -> Predicate:
    return _waits_for(lambda f: f.src == CHF_NWK and f.name in names, f"{' or '.join(names)} from the CHF")


@functools.lru_cache(maxsize=4096)
def _decoded(data: bytes) -> frames.Frame:
    """`frames.decode`, kept per frame for the rules (which only read it): every check restarts the DUT from the
    same state, so the same requests recur in every check of a run."""
    return frames.decode(data)


class FrameLog(Recorder):
    """The recorder, waking whoever waits for the next frame."""

    def __init__(self, clock: Clock, keep: Callable[[t.ZigbeePacket], bool]) -> None:
        super().__init__(clock, keep=keep)
        self.changed = asyncio.Event()

    def __call__(self, packet: t.ZigbeePacket, loop_time: float) -> None:
        before = len(self.frames)
        super().__call__(packet, loop_time)
        if len(self.frames) != before:
            self.changed.set()


class TestChf:
    """The CHF side of a conformance run against the device `ieee`.

    Build it before the CHF node (the node takes `intercept` as an observer and `store` as its image store),
    then `attach` the running node.
    """

    __test__ = False  # a class named Test* that pytest must not collect

    def __init__(self, clock: Clock, ieee: t.EUI64, nwk: int | None = None) -> None:
        self.clock = clock
        # Looked up in zigpy's device table for every frame on the CHF radio: a key that hashes once.
        self.ieee: t.EUI64 = eui64_key(ieee)
        self.nwk = nwk
        self._endpoint: int | None = None  # the DUT's OTA client endpoint, once an OTA frame from it showed it
        self.store = ImageStore()
        # What `reset` goes back to: the test CHF, or as Smart Energy security on a stick left it (OTA blocks that
        # fit an APS-encrypted frame).
        self.base = TEST_CHF
        self.rules: list[FrameRule] = []
        self.log = FrameLog(clock, self._involves_dut)
        self.node: ChfNode | None = None
        self._untap: list[Callable[[], None]] = []
        # Told (what, for how many protocol seconds) whenever a scenario starts waiting for a frame.
        self.on_wait: Callable[[str, float], None] | None = None

    # -- wiring -------------------------------------------------------------------------------------------

    def attach(self, node: ChfNode) -> None:
        self.node = node
        self._untap.append(node.app.add_tap(self.log))

    def capture(self, writer: PcapWriter) -> None:
        """Also write every frame of the CHF radio to `writer` (names the nodes for NWK security)."""
        app = self.app
        writer.add_node(CHF_NWK, app.state.node_info.ieee)
        writer.encoder.add_resolver(self._ieee_of)
        self._untap.append(app.add_tap(writer.write))

    def detach(self) -> None:
        for untap in self._untap:
            with contextlib.suppress(ValueError):
                untap()
        self._untap.clear()

    @property
    def app(self) -> Any:
        assert self.node is not None, "attach() the CHF node first"
        return self.node.app

    @property
    def server(self) -> OtaServer:
        assert self.node is not None, "attach() the CHF node first"
        return self.node.server

    def configure(self, **changes: Any) -> None:
        """Change the server's behaviour for this scenario (any `ChfProfile` key)."""
        self.server.profile = self.server.profile.replace(**changes)

    def reset(self) -> None:
        """Back to the plain test CHF between checks that share one radio: no rules, no images."""
        self.rules.clear()
        for held in self.store:
            self.store.remove(held)
        self.server.profile = self.base.replace(
            ieee=self.server.profile.ieee,
            endpoint=self.server.profile.endpoint,
            profile_id=self.server.profile.profile_id,
        )
        self.server.transfers.clear()

    def _ieee_of(self, nwk: int) -> t.EUI64 | None:
        for device in self.app.devices.values():
            if device.nwk == nwk:
                ieee: t.EUI64 = device.ieee
                return ieee
        return None

    def _involves_dut(self, packet: t.ZigbeePacket) -> bool:
        device = self.app.devices.get(self.ieee) if self.node is not None else None
        if device is not None and device.nwk != self.nwk:
            self.nwk = int(device.nwk)  # joined, or rejoined with a new address
        if self.nwk is None:
            return False
        src = short_address(packet.src)
        if src == self.nwk:
            if packet.cluster_id == frames.CLUSTER_ID and packet.src_ep:
                self._endpoint = int(packet.src_ep)
            return True
        dst = packet.dst
        if dst is None:
            return False
        if dst.addr_mode == t.AddrMode.IEEE:
            return dst.address == self.ieee
        return short_address(dst) == self.nwk or (src == CHF_NWK and is_broadcast(dst))

    @property
    def endpoint(self) -> int:
        """Where the DUT's OTA client lives: as its own frames showed, else as zigpy's interview found, else 1."""
        if self._endpoint is not None:
            return self._endpoint
        device = self.app.devices.get(self.ieee)
        if device is not None:
            for endpoint_id, endpoint in device.endpoints.items():
                if endpoint_id != 0 and frames.CLUSTER_ID in getattr(endpoint, "out_clusters", {}):
                    return int(endpoint_id)
        return 1

    # -- the scenario's rules -----------------------------------------------------------------------------

    def intercept(self, packet: t.ZigbeePacket) -> bool:
        """Ingress observer: offer OTA frames from the DUT to the scenario's rules before the server."""
        if not self.rules or packet.cluster_id != frames.CLUSTER_ID or packet.src is None:
            return False
        if self.nwk is None or packet.src.address != self.nwk:
            return False
        try:
            frame = _decoded(packet.data.serialize())
        except (frames.MalformedFrame, frames.UnsupportedCommand):
            return False
        return any(rule(packet, frame) for rule in list(self.rules))

    # -- frames -------------------------------------------------------------------------------------------

    @property
    def frames(self) -> list[FrameRecord]:
        return self.log.frames

    def mark(self) -> int:
        """A point in the record: frames after it are the ones that happen from now on."""
        return len(self.log.frames)

    def since(self, mark: int, predicate: Predicate | None = None) -> list[FrameRecord]:
        return [f for f in self.log.frames[mark:] if predicate is None or predicate(f)]

    def after(self, frame: FrameRecord) -> int:
        """The mark just after `frame` (a recorded frame)."""
        frames_ = self.log.frames
        for index in range(len(frames_) - 1, -1, -1):
            if frames_[index] is frame:
                return index + 1
        raise ValueError("frame is not in the record")

    async def expect(self, predicate: Predicate, within: float, since: int | None = None) -> FrameRecord | None:
        """The first recorded frame after `since` (default: now) that matches, waiting up to `within` protocol
        seconds for it; None if none came. One timeout for the whole wait, however many frames wake it."""
        index = self.mark() if since is None else since
        log = self.log
        frames_ = log.frames
        while index < len(frames_):
            frame = frames_[index]
            index += 1
            if predicate(frame):
                return frame
        if within <= 0:
            return None
        if self.on_wait is not None:
            self.on_wait(getattr(predicate, "waits_for", "a frame"), within)
        try:
            async with asyncio.timeout(within):
                while True:
                    log.changed.clear()
                    await log.changed.wait()
                    while index < len(frames_):
                        frame = frames_[index]
                        index += 1
                        if predicate(frame):
                            return frame
        except TimeoutError:
            pass
        # Frames recorded at the deadline's instant still count, as they did before the timeout fired.
        return next((frame for frame in frames_[index:] if predicate(frame)), None)

    # -- sending ------------------------------------------------------------------------------------------

    def _packet(self, dst: t.AddrModeAddress | None, dst_ep: int | None, data: bytes, *, ack: bool) -> t.ZigbeePacket:
        profile = self.server.profile
        return t.ZigbeePacket(
            src=t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(CHF_NWK)),
            src_ep=t.uint8_t(profile.endpoint),
            dst=dst,
            dst_ep=None if dst_ep is None else t.uint8_t(dst_ep),
            tsn=t.uint8_t(data[1]),
            profile_id=t.uint16_t(profile.profile_id),
            cluster_id=t.uint16_t(frames.CLUSTER_ID),
            data=t.SerializableBytes(data),
            tx_options=t.TransmitOptions.ACK if ack else t.TransmitOptions.NONE,
            radius=t.uint8_t(0),
        )

    def unicast(self, data: bytes) -> t.ZigbeePacket:
        """An OTA cluster frame from the CHF to the DUT's OTA endpoint, built but not sent (a security scenario
        sends it past the CHF's APS layer, in the clear)."""
        assert self.nwk is not None, "the DUT has no address yet"
        dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk))
        return self._packet(dst, self.endpoint, data, ack=True)

    def send(self, data: bytes, *, broadcast: bool = False) -> None:
        """An OTA cluster frame from the CHF: unicast to the DUT's OTA endpoint, or broadcast to every device."""
        if broadcast:
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.Broadcast, address=t.BroadcastAddress.ALL_DEVICES)
            packet = self._packet(dst, BROADCAST_ENDPOINT, data, ack=False)
        else:
            assert self.nwk is not None, "the DUT has no address yet"
            dst = t.AddrModeAddress(addr_mode=t.AddrMode.NWK, address=t.NWK(self.nwk))
            packet = self._packet(dst, self.endpoint, data, ack=True)
        self.app.transmit(packet)

    def reply(self, request: t.ZigbeePacket, data: bytes) -> None:
        """Answer a DUT frame from the endpoint it was sent to, as the server does."""
        packet = self._packet(request.src, request.src_ep, data, ack=True).replace(
            src_ep=request.dst_ep, profile_id=request.profile_id
        )
        self.app.transmit(packet)

    def next_tsn(self) -> int:
        return int(self.app.get_sequence())

    def notify(
        self,
        payload_type: int,
        query_jitter: int = 100,
        *,
        manufacturer_code: int | None = None,
        image_type: int | None = None,
        new_file_version: int | None = None,
        broadcast: bool = False,
    ) -> None:
        """Image Notify (SPEC.md §2.1) with exactly the fields its payload type carries."""
        fields: dict[str, Any] = {"payload_type": payload_type, "query_jitter": query_jitter}
        for minimum, name, value in (
            (1, "manufacturer_code", manufacturer_code),
            (2, "image_type", image_type),
            (3, "new_file_version", new_file_version),
        ):
            if payload_type >= minimum:
                assert value is not None, f"payload type {payload_type} carries {name}"
                fields[name] = value
        self.send(frames.encode("image_notify", tsn=self.next_tsn(), **fields), broadcast=broadcast)

    def upgrade_end_response(
        self, manufacturer_code: int, image_type: int, file_version: int, current_time: int, upgrade_time: int
    ) -> None:
        """An unsolicited Upgrade End Response (SPEC.md §2.8) to the DUT."""
        data = frames.encode(
            "upgrade_end_response",
            tsn=self.next_tsn(),
            manufacturer_code=manufacturer_code,
            image_type=image_type,
            file_version=file_version,
            current_time=current_time,
            upgrade_time=upgrade_time,
        )
        self.send(data)

    async def read(self, *attribute_ids: int, within: float) -> dict[int, Any] | None:
        """Read OTA client attributes (SPEC.md §3.1) of the DUT over the air; None when it does not answer
        (or zigpy has not interviewed it far enough to know its OTA cluster). Unsupported ones are left out."""
        device = self.app.devices.get(self.ieee)
        if device is None:
            return None
        try:
            cluster = device.find_cluster(frames.CLUSTER_ID, ClusterType.Client)
        except ValueError:
            return None
        try:
            async with asyncio.timeout(within):
                success, _ = await cluster.read_attributes(list(attribute_ids), allow_cache=False)
        except (TimeoutError, zigpy.exceptions.ZigbeeException, ValueError, KeyError):
            return None
        return {int(attrid): value for attrid, value in success.items()}
