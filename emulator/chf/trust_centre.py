"""The CHF as trust centre of a Smart Energy HAN: admission by install code and the network key's transport.

A GB CHF admits only devices in its Device Log, each with the install code the DCC gave it (GBCS use case CS11:
"Add Device to CHF Device Log"; ZSE 07-5356 §5.4.8.1). The install code hashes to a preconfigured link key
(`install_code.InstallCode.key`); the trust centre sends the joiner the network key in an APS Transport-Key
command secured with that key's key-transport key (Zigbee 05-3474 §4.4.1.1, key id 2). A joiner with another code
cannot open it, never learns the network key and is not on the network. Pure: frames in, frames out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import zigpy.types as t

from emulator.security import aps
from emulator.security.ccm import KeyId, MalformedFrameError
from emulator.security.install_code import InstallCode
from emulator.security.keystore import KeyOrigin, SecurityContext


@dataclass(frozen=True, slots=True)
class KeyTransport:
    """What the trust centre sent a joiner: the command in clear, the link key it was secured under and the
    secured APS command frame as it went on the air."""

    joiner: t.EUI64
    command: aps.NetworkKeyTransport
    link_key: bytes
    frame: bytes


class TrustCentre:
    """Admits joiners listed in `device_log` (EUI-64 → install code) and sends them the network key."""

    def __init__(
        self,
        context: SecurityContext,
        network_key: bytes,
        device_log: Mapping[t.EUI64, InstallCode],
        *,
        key_sequence: int = 0,
    ) -> None:
        self.context = context
        self.network_key = bytes(network_key)
        self.device_log = dict(device_log)
        self.key_sequence = key_sequence
        self._aps_counter = 0

    def admit(self, joiner: t.EUI64) -> KeyTransport | None:
        """The Transport-Key for `joiner`, secured under its install-code key; None for a device that is not in
        the Device Log (the trust centre sends it nothing)."""
        code = self.device_log.get(joiner)
        if code is None:
            return None
        self.context.set_link_key(joiner, code.key, KeyOrigin.INSTALL_CODE)
        command = aps.NetworkKeyTransport(self.network_key, self.key_sequence, bytes(joiner), bytes(self.context.eui))
        frame = aps.command_frame(self._aps_counter, aps.build_transport_key(command))
        self._aps_counter = (self._aps_counter + 1) & 0xFF
        secured = self.context.secure(frame, joiner, KeyId.KEY_TRANSPORT)
        return KeyTransport(joiner, command, code.key, secured)


def open_transport_key(context: SecurityContext, trust_centre: t.EUI64, code: InstallCode, frame: bytes) -> bytes:
    """The joiner's side: open the Transport-Key `frame` with its own install code and return the network key.
    Raises a `FrameSecurityError` (BadMicError for another code) when it cannot."""
    context.set_link_key(trust_centre, code.key, KeyOrigin.INSTALL_CODE)
    try:
        opened = context.unsecure(frame, trust_centre)
        command = aps.parse_transport_key(opened.frame[aps.header_length(opened.frame) :])
    except Exception:
        context.remove_link_key(trust_centre)
        raise
    if not isinstance(command, aps.NetworkKeyTransport) or command.destination != bytes(context.eui):
        context.remove_link_key(trust_centre)
        raise MalformedFrameError("Transport-Key: not the network key for this device")
    return command.key
