"""APS frame security and the Transport-Key command (Zigbee specification 05-3474 §2.2.5, §4.4).

An APS frame is secured by setting the security bit (0x20) of its frame control, putting the auxiliary security
header (§4.5.1) right after the APS header, and replacing the payload by its CCM* encryption and MIC (§4.4.1.1).
The APS header (frame control through the APS counter and any extended header) and the auxiliary header are
authenticated; for a data frame the payload is the ZCL or ZDP frame, for a command frame the command identifier
and its fields. The key is the link key shared with the partner (key id 0) or one of its derived keys: a
Transport-Key command carrying the network key or a trust-center link key is secured with the key-transport key
(key id 2), one carrying an application link key with the key-load key (key id 3) (§4.4.1.1, §4.4.2).

Everything here works on bytes: callers hold the keys (see `keystore`) and the counters. Frames from the air that
cannot be read or opened raise a `FrameSecurityError` subclass naming the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from emulator.security import ccm
from emulator.security.ccm import AuxHeader, KeyId, MalformedFrameError

APS_SECURITY = 0x20
_FRAME_TYPE_MASK = 0x03
_DELIVERY_SHIFT = 2
_DELIVERY_MASK = 0x0C
_ACK_FORMAT = 0x10
_EXTENDED_HEADER = 0x80
_FRAGMENTATION_MASK = 0x03


class ApsFrameType(IntEnum):
    """Frame type sub-field of the APS frame control (§2.2.5.1.1.1)."""

    DATA = 0
    COMMAND = 1
    ACK = 2
    INTER_PAN = 3


class DeliveryMode(IntEnum):
    """Delivery mode sub-field of the APS frame control (§2.2.5.1.1.2); 1 (indirect) is reserved since 2007."""

    UNICAST = 0
    BROADCAST = 2
    GROUP = 3


class ApsCommandId(IntEnum):
    """APS command identifiers (05-3474 §4.4, "Command Frames")."""

    TRANSPORT_KEY = 0x05
    UPDATE_DEVICE = 0x06
    REMOVE_DEVICE = 0x07
    REQUEST_KEY = 0x08
    SWITCH_KEY = 0x09
    TUNNEL = 0x0E
    VERIFY_KEY = 0x0F
    CONFIRM_KEY = 0x10


class TransportKeyType(IntEnum):
    """Key type field of the Transport-Key command (05-3474 §4.4, "Transport-Key Commands")."""

    NETWORK_KEY = 0x01
    APPLICATION_LINK_KEY = 0x03
    TRUST_CENTER_LINK_KEY = 0x04


def header_length(frame: bytes) -> int:
    """Length of the APS header of `frame`: frame control through the APS counter and any extended header
    (§2.2.5.1). This is the part that travels in clear and is authenticated."""
    if not frame:
        raise MalformedFrameError("APS frame: empty")
    control = frame[0]
    kind = control & _FRAME_TYPE_MASK
    delivery = (control & _DELIVERY_MASK) >> _DELIVERY_SHIFT
    if kind == ApsFrameType.INTER_PAN:
        raise MalformedFrameError("APS frame: an inter-PAN frame carries no APS security")
    if delivery == 1:
        raise MalformedFrameError(f"APS frame control {control:#04x}: delivery mode 1 is reserved")
    length = 1
    if kind == ApsFrameType.DATA:
        # Destination endpoint (unicast, broadcast) or group address, cluster, profile, source endpoint.
        length += (2 if delivery == DeliveryMode.GROUP else 1) + 2 + 2 + 1
    elif kind == ApsFrameType.ACK and not control & _ACK_FORMAT:
        length += 1 + 2 + 2 + 1
    length += 1  # APS counter
    if control & _EXTENDED_HEADER:
        if len(frame) <= length:
            raise MalformedFrameError("APS frame: extended header missing")
        fragmentation = frame[length] & _FRAGMENTATION_MASK
        length += 1
        if fragmentation:
            length += 1  # block number
            if kind == ApsFrameType.ACK:
                length += 1  # ack bitfield
    if len(frame) < length:
        raise MalformedFrameError(f"APS frame: {len(frame)} bytes, its header needs {length}")
    return length


def _key_for(key: bytes, key_id: KeyId) -> bytes:
    return key if key_id == KeyId.NETWORK else ccm.derive_key(key, key_id)


def secure(frame: bytes, key: bytes, aux: AuxHeader, source: bytes | None = None) -> bytes:
    """The secured form of the unsecured APS frame `frame` (§4.4.1.1).

    `key` is the link key for key ids 0, 2 and 3 (the key-transport and key-load keys are derived here) or the
    network key for key id 1. `source` is the sender's IEEE address when `aux` does not carry it.
    """
    length = header_length(frame)
    header = bytes([frame[0] | APS_SECURITY]) + frame[1:length]
    return header + ccm.encrypt(_key_for(key, aux.key_id), header, aux, frame[length:], source)


def parse_secured(frame: bytes) -> tuple[int, AuxHeader]:
    """The APS header length and the auxiliary header of a secured APS frame, read before the key is chosen
    (its key id and source); pass both on to `unsecure_parsed`."""
    length = header_length(frame)
    if not frame[0] & APS_SECURITY:
        raise MalformedFrameError(f"APS frame control {frame[0]:#04x}: the frame is not secured")
    return length, AuxHeader.from_bytes(frame, length)


def security_header(frame: bytes) -> AuxHeader:
    """The auxiliary header of a secured APS frame."""
    return parse_secured(frame)[1]


@dataclass(frozen=True, slots=True)
class Unsecured:
    """An APS frame opened: `frame` is the frame as if sent without security (security bit clear, no auxiliary
    header, payload in clear); `aux` is the auxiliary header it carried."""

    frame: bytes
    aux: AuxHeader


def unsecure(frame: bytes, key: bytes, source: bytes | None = None) -> Unsecured:
    """Open a secured APS frame (§4.4.1.2) with the link key (or the network key, for key id 1).

    Raises `MalformedFrameError` if the frame cannot be read and `BadMicError` if it does not verify.
    """
    length, aux = parse_secured(frame)
    return unsecure_parsed(frame, length, aux, key, source)


def unsecure_parsed(frame: bytes, length: int, aux: AuxHeader, key: bytes, source: bytes | None = None) -> Unsecured:
    """`unsecure` for a frame already read with `parse_secured` (header length `length`, auxiliary header `aux`)."""
    plain = ccm.decrypt(_key_for(key, aux.key_id), frame[:length], aux, frame[length + aux.size :], source)
    return Unsecured(bytes([frame[0] & ~APS_SECURITY]) + frame[1:length] + plain, aux)


def command_frame(counter: int, payload: bytes, *, ack_request: bool = False) -> bytes:
    """An unsecured, unicast APS command frame: frame control, APS counter, command identifier and fields."""
    return bytes([ApsFrameType.COMMAND | (0x40 if ack_request else 0), counter & 0xFF]) + payload


# -- Transport-Key (05-3474 §4.4, "Transport-Key Commands") --------------------------------------------

_EUI = ccm.EUI64_SIZE
_KEY = ccm.KEY_SIZE


@dataclass(frozen=True, slots=True)
class NetworkKeyTransport:
    """Transport-Key of the network key: key ‖ key sequence number ‖ destination ‖ source (IEEE, as sent)."""

    key: bytes
    key_sequence: int
    destination: bytes
    source: bytes

    @property
    def key_type(self) -> TransportKeyType:
        return TransportKeyType.NETWORK_KEY

    def fields(self) -> bytes:
        return self.key + bytes([self.key_sequence]) + self.destination + self.source


@dataclass(frozen=True, slots=True)
class TrustCenterLinkKeyTransport:
    """Transport-Key of a trust-center link key: key ‖ destination ‖ source (IEEE, as sent)."""

    key: bytes
    destination: bytes
    source: bytes

    @property
    def key_type(self) -> TransportKeyType:
        return TransportKeyType.TRUST_CENTER_LINK_KEY

    def fields(self) -> bytes:
        return self.key + self.destination + self.source


@dataclass(frozen=True, slots=True)
class ApplicationLinkKeyTransport:
    """Transport-Key of an application link key: key ‖ partner IEEE ‖ initiator flag."""

    key: bytes
    partner: bytes
    initiator: bool

    @property
    def key_type(self) -> TransportKeyType:
        return TransportKeyType.APPLICATION_LINK_KEY

    def fields(self) -> bytes:
        return self.key + self.partner + bytes([1 if self.initiator else 0])


TransportKey = NetworkKeyTransport | TrustCenterLinkKeyTransport | ApplicationLinkKeyTransport

_FIELD_LENGTHS = {
    TransportKeyType.NETWORK_KEY: _KEY + 1 + 2 * _EUI,
    TransportKeyType.TRUST_CENTER_LINK_KEY: _KEY + 2 * _EUI,
    TransportKeyType.APPLICATION_LINK_KEY: _KEY + _EUI + 1,
}


def transport_key_id(command: TransportKey) -> KeyId:
    """The key id a Transport-Key is secured with: key-load for an application link key, key-transport for the
    others (§4.4.1.1)."""
    return KeyId.KEY_LOAD if isinstance(command, ApplicationLinkKeyTransport) else KeyId.KEY_TRANSPORT


def build_transport_key(command: TransportKey) -> bytes:
    """The command payload: 0x05 ‖ key type ‖ fields."""
    fields = command.fields()
    if len(fields) != _FIELD_LENGTHS[command.key_type]:
        raise ValueError(f"Transport-Key ({command.key_type.name}): keys are 16 bytes, IEEE addresses 8")
    return bytes([ApsCommandId.TRANSPORT_KEY, command.key_type]) + fields


def parse_transport_key(payload: bytes) -> TransportKey:
    """A Transport-Key command payload (command identifier first), from the air."""
    if len(payload) < 2 or payload[0] != ApsCommandId.TRANSPORT_KEY:
        raise MalformedFrameError("APS command: not a Transport-Key (expected command identifier 0x05)")
    try:
        key_type = TransportKeyType(payload[1])
    except ValueError:
        raise MalformedFrameError(f"Transport-Key: key type {payload[1]:#04x} is not 0x01, 0x03 or 0x04") from None
    fields = bytes(payload[2:])
    if len(fields) != _FIELD_LENGTHS[key_type]:
        raise MalformedFrameError(
            f"Transport-Key ({key_type.name}): expected {_FIELD_LENGTHS[key_type]} bytes of fields, got {len(fields)}"
        )
    key, rest = fields[:_KEY], fields[_KEY:]
    if key_type == TransportKeyType.NETWORK_KEY:
        return NetworkKeyTransport(key, rest[0], rest[1 : 1 + _EUI], rest[1 + _EUI :])
    if key_type == TransportKeyType.TRUST_CENTER_LINK_KEY:
        return TrustCenterLinkKeyTransport(key, rest[:_EUI], rest[_EUI:])
    if rest[_EUI] > 1:
        raise MalformedFrameError(f"Transport-Key: initiator flag {rest[_EUI]:#04x} is not 0 or 1")
    return ApplicationLinkKeyTransport(key, rest[:_EUI], bool(rest[_EUI]))
