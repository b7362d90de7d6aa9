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

A device with `security = "none"` joins the air as before: network key only, no admission check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from emulator.chf.se_credentials import credentials_for
from emulator.chf.trust_centre import open_transport_key
from emulator.device import security_events as sev
from emulator.device.key_establishment import KeyEstablishmentClient
from emulator.han_security import SE, install_code_of
from emulator.profiles import DeviceProfile
from emulator.radio.secure import DroppedFrame, SecureRadio
from emulator.security.ccm import FrameSecurityError
from emulator.security.keystore import SecurityContext

JOIN_RETRY = 2.0


class NcpDeviceSecurity:
    """Security for devices on the air of the virtual NCP whose stack is `stack` (an `EmberStack`)."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack

    def radio(self, profile: DeviceProfile, air: Any) -> Any:
        """What a device sits on: a `SecureRadio` over `air` for a Smart Energy device, `air` itself otherwise."""
        if profile.security != SE:
            return air
        return SecureRadio(air, SecurityContext(profile.ieee))

    def attach(self, device: Any, radio: Any) -> None:
        """Wire a Smart Energy device's admission, drop reports and key establishment before its OTA client."""
        if not isinstance(radio, SecureRadio):
            return
        profile: DeviceProfile = device.profile

        def dropped(frame: DroppedFrame) -> None:
            device.emit(
                sev.FrameDropped,
                cluster_id=frame.cluster_id,
                command_id=frame.command_id,
                reason=frame.reason.value,
                detail=frame.detail,
            )

        radio.on_drop = dropped
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

    async def join(self, device: Any, radio: Any, joined: Callable[[], None] | None = None) -> None:
        """Start `device`; when the trust centre turns it away, try again every `JOIN_RETRY` seconds. `joined`
        is called once it is on the network."""
        while True:
            await device.start()
            if not isinstance(radio, SecureRadio) or radio.admitted:
                break
            await device.stop()  # off the air, having no network key, until it tries again
            await asyncio.sleep(JOIN_RETRY)
        if joined is not None:
            joined()
