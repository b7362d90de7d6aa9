"""Smart Energy security of the emulated devices on a virtual NCP's air (`ota-emu ncp --device`).

A device whose profile says `security = "se"` joins and works as it does in the in-process HAN, with the virtual
NCP's own trust centre in place of the CHF's:

* it sits on a `SecureRadio` holding its own `SecurityContext`; joining asks the NCP's trust centre
  (`EmberStack.transport_network_key`) for the Transport-Key of the network key, which the device opens with its
  install code (`trust_centre.open_transport_key`). The trust centre sends one only while joining is permitted
  and only under a key it holds for the device (the install-code key the host gave it as a transient key, with
  bellows' `permit_with_link_key` or the CHF's Smart Energy permit); a device that gets none stays off the air
  and tries again every `JOIN_RETRY` seconds, as a device keeps scanning for a network to join;
* once joined it runs the Key Establishment client (`device.key_establishment`) with the trust centre, the
  coordinator at 0x0000, whose EUI-64 is the NCP's, and starts its OTA client only with the CBKE key; its OTA
  frames are APS-encrypted under that key from then on, and frames that should have been are dropped;
* its CBKE credentials are the profile's `cbke_credentials` file, or a certificate from the bundled test CA
  (`chf.se_credentials`), which the CHF on the other end of the serial link trusts too.

A device with `security = "none"` joins as a Zigbee 3.0 device does, with the well-known key: admitted by a trust
centre that takes it (bellows' own `permit`, a network with a global link key), turned away by one that admits
install-code keys only; it then works with the network key only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from emulator.chf.se_credentials import credentials_for
from emulator.chf.trust_centre import open_transport_key
from emulator.device import security_events as sev
from emulator.device.key_establishment import KeyEstablishmentClient
from emulator.han.security import SE, drop_reporter, install_code_of
from emulator.ncp.joining import WELL_KNOWN_LINK_KEY
from emulator.profiles import DeviceProfile
from emulator.radio.secure import SecureRadio
from emulator.security import aps
from emulator.security.ccm import FrameSecurityError
from emulator.security.keystore import KeyOrigin, SecurityContext

JOIN_RETRY = 2.0


class NcpDeviceSecurity:
    """Security for devices on the air of the virtual NCP whose stack is `stack` (an `EmberStack`)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def radio(self, profile: DeviceProfile, air: Any) -> SecureRadio:
        """What a device sits on: a `SecureRadio` over `air` holding the device's security state."""
        return SecureRadio(air, SecurityContext(profile.ieee))

    def attach(self, device: Any, radio: SecureRadio) -> None:
        """Wire a device's admission and, for a Smart Energy device, its drop reports and key establishment before
        its OTA client."""
        profile: DeviceProfile = device.profile
        if profile.security != SE:
            radio.admission = lambda node: self._admit_with_the_well_known_key(device, radio)

            async def admitted() -> bool:
                return radio.admitted is not False

            device.before_ota = admitted
            return

        radio.on_drop = drop_reporter(device)
        radio.admission = lambda node: self._admit(device, radio)
        credentials = credentials_for(
            profile.ieee, profile.cbke_suite, profile.cbke_credentials, profile.source, f"device {profile.ieee}"
        )

        async def before_ota() -> bool:
            if radio.admitted is False:
                return False
            radio.application_ready = False
            client = KeyEstablishmentClient(device, radio, radio.context, credentials, self.stack.ieee)
            outcome = await client.run()
            radio.application_ready = outcome.ok
            return outcome.ok

        device.before_ota = before_ota

    def _admit(self, device: Any, radio: SecureRadio) -> bool:
        profile: DeviceProfile = device.profile
        transport = self.stack.transport_network_key(profile.ieee, device.nwk)
        if transport is None:
            device.emit(sev.NotAdmitted, reason="the trust centre holds no key for it (install code not given)")
            return False
        try:
            open_transport_key(radio.context, self.stack.ieee, install_code_of(profile), transport.frame)
        except FrameSecurityError as exc:
            device.emit(sev.NotAdmitted, reason=f"Transport-Key not opened with its install code ({exc})")
            return False
        device.emit(sev.Admitted, trust_centre=self.stack.ieee)
        return True

    def _admit_with_the_well_known_key(self, device: Any, radio: SecureRadio) -> bool:
        """A device without Smart Energy security joins as a Zigbee 3.0 device does, with the well-known key: a
        trust centre that admits install-code keys only turns it away."""
        ieee, trust_centre = device.profile.ieee, self.stack.ieee
        transport = self.stack.transport_network_key(ieee, device.nwk, held=WELL_KNOWN_LINK_KEY)
        if transport is None:
            device.emit(sev.NotAdmitted, reason="the trust centre does not take the well-known key (security none)")
            return False
        context = radio.context
        context.set_link_key(trust_centre, WELL_KNOWN_LINK_KEY, KeyOrigin.PRECONFIGURED)
        try:
            opened = context.unsecure(transport.frame, trust_centre).frame
            command = aps.parse_transport_key(opened[aps.header_length(opened) :])
        except FrameSecurityError as exc:
            device.emit(sev.NotAdmitted, reason=f"Transport-Key not opened with the well-known key ({exc})")
            return False
        finally:
            context.remove_link_key(trust_centre)  # network key only from here on: no APS link key in use
        return isinstance(command, aps.NetworkKeyTransport) and command.destination == bytes(ieee)

    async def join(self, device: Any, radio: SecureRadio, joined: Callable[[], None] | None = None) -> None:
        """Start `device`; when the trust centre turns it away, try again every `JOIN_RETRY` seconds. `joined`
        is called once it is on the network."""
        while True:
            await device.start()
            if radio.admitted:
                break
            await device.stop()  # off the air, having no network key, until it tries again
            await asyncio.sleep(JOIN_RETRY)
        if joined is not None:
            joined()
