"""The GBCS side of a run: the signed messages the emulated CHF and devices send, and the CS06 commands an HCALCS
takes.

GB reports firmware events as signed GBCS messages (SPEC.md §8.3, DESIGN.md §3): the CHF sends a CCS08 Firmware
Transfer Alert per target, a PPMID a CS09 Firmware Activation Alert once it has activated, and an HCALCS answers
an Activate Firmware command (CS06) with its executionOutcome — or, when the command is future-dated, with
commandAccepted now and a 0x00CA alert (0x8F66 success / 0x8F67 failure) when it executes. The layers below
report those moments as events (`TransferOutcome`, `Activated`, `ActivationOutcome`); `HanGbcs`, a listener
attached to a `Han`, turns them into frames with `emulator.gb` and keeps them in an `AlertLog`. An HCALCS checks
a CS06 command before it acts on it (`emulator.gb.cs06`); `HcalcsActivation` is that HCALCS's GBCS face.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import zigpy.types as t

from emulator import keys
from emulator.chf import events as server_events
from emulator.device import events as device_events
from emulator.device.device import EmulatedDevice
from emulator.errors import InputError
from emulator.gb.codes import ActivationResponse, AlertCode
from emulator.gb.cs06 import ActivateCommand, CommandRefused, Cs06Policy, TrustedSupplier
from emulator.gb.messages import (
    ActivateFirmwareAlert,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FirmwareTransferAlert,
    PpmidFirmwareActivationAlert,
)
from emulator.gb.values import gbcs_time, gbcs_time_not_before, version_octets
from emulator.han.alert_log import AlertLog, event_fields
from emulator.han.network import Event, Han
from emulator.han.originators import (
    DEFAULT_SUPPLIER_ID,
    TEST_SUPPLIER_KEY,
    Originator,
    configured_key,
    trusted_supplier,
)
from emulator.profiles import bundled_key


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A future-dated command the device accepted: what its 0x00CA alert repeats, and where it goes."""

    supplier: t.EUI64
    originator_counter: int
    execution: datetime
    image_hash: bytes


@dataclass(slots=True)
class Exchange:
    """A CS06 command, the device's response, and for a future-dated command the 0x00CA alert to come."""

    command: dict[str, Any]
    response: dict[str, Any]
    reply: device_events.ActivationReply
    scheduled: Scheduled | None = None
    alert: asyncio.Future[dict[str, Any]] | None = None


class HcalcsActivation:
    """The GBCS face of one emulated HCALCS: checks CS06 commands, has the device act on them, signs its answers.

    Feed it the device's events (`on_event`) so that a future-dated activation turns into its 0x00CA alert."""

    def __init__(
        self, device: EmulatedDevice, originator: Originator, log: AlertLog, trusted: TrustedSupplier | None
    ) -> None:
        profile = device.profile
        if profile.kind != "hcalcs":
            raise CommandRefused(
                f"{profile.source}: device {device.ieee} is a {profile.kind}; Activate Firmware (CS06) is for an "
                "HCALCS (a PPMID activates with its download)"
            )
        self.device = device
        self.originator = originator
        self.log = log
        self.policy = Cs06Policy(device.ieee, trusted, profile.require_supplier_signature, profile.source)
        self._waiting: list[tuple[Scheduled, asyncio.Future[dict[str, Any]]]] = []

    def check(self, data: bytes, source: str) -> ActivateCommand:
        """Everything the device checks before acting (GBCS §11.5); a refusal is a `CommandRefused` (or a
        `GbcsError` for a frame that does not parse) and changes nothing."""
        return self.policy.check(data, source, self.originator.counters)

    async def execute(self, command: ActivateCommand) -> Exchange:
        """Act on a checked command and answer it: the executionOutcome, or commandAccepted when future-dated."""
        frame, message = command.frame, command.message
        self.originator.accept(frame.originator_id, frame.originator_counter)
        clock = self.device.clock
        cause = {"type": "ActivateFirmwareCommand", "source": command.source}
        received = self.log.received(command.data, cause, clock.utc(), command.signature)
        reply = await self.device.activate_firmware(message.manufacturer_image_hash, message.execution_datetime)
        outcome = None
        if not reply.accepted:
            assert reply.response_code is not None
            outcome = ExecutionOutcome(reply.response_code, version_octets(reply.firmware_version))
        now = clock.utc()
        data = self.originator.sign(
            ActivateFirmwareResponse(outcome),
            frame.originator_id,
            counter=frame.originator_counter,
            date_time=gbcs_time(now),
        )
        response = self.log.sent(self.originator, data, event_fields(reply), now)
        exchange = Exchange(received, response, reply)
        if reply.accepted and message.execution_datetime is not None:
            exchange.scheduled = Scheduled(
                frame.originator_id,
                message.originator_counter,
                message.execution_datetime,
                message.manufacturer_image_hash,
            )
            exchange.alert = self._expect(exchange.scheduled)
        return exchange

    async def resume(self, scheduled: Scheduled) -> asyncio.Future[dict[str, Any]]:
        """Arm a future-dated command again on a restarted device (scheduled commands are not persisted)."""
        future = self._expect(scheduled)
        reply = await self.device.activate_firmware(scheduled.image_hash, scheduled.execution)
        if not reply.accepted:  # its time had already come: the outcome is in the reply
            assert reply.response_code is not None
            self._waiting.remove((scheduled, future))
            future.set_result(self._alert(scheduled, reply.response_code, reply.firmware_version, reply))
        return future

    def on_event(self, event: object) -> None:
        if not isinstance(event, device_events.ActivationOutcome) or not event.future_dated:
            return
        if event.ieee != self.device.ieee or not self._waiting:
            return
        scheduled, future = self._waiting.pop(0)
        record = self._alert(scheduled, event.response_code, event.version, event)
        if not future.done():
            future.set_result(record)

    def _expect(self, scheduled: Scheduled) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((scheduled, future))
        self._waiting.sort(key=lambda waiting: waiting[0].execution)
        return future

    def _alert(self, scheduled: Scheduled, code: ActivationResponse, version: int, cause: object) -> dict[str, Any]:
        ok = code == ActivationResponse.SUCCESS
        message = ActivateFirmwareAlert(
            alert_code=AlertCode.FUTURE_DATED_COMMAND_SUCCESS if ok else AlertCode.FUTURE_DATED_COMMAND_FAILURE,
            execution_datetime=gbcs_time(scheduled.execution),
            originator_counter=scheduled.originator_counter,
            outcome=ExecutionOutcome(code, version_octets(version)),
        )
        data = self.originator.sign(message, scheduled.supplier)
        return self.log.sent(self.originator, data, event_fields(cause), self.device.clock.utc())


class HanGbcs:
    """The GB side of a `Han`, attached to it as a listener: its CHF and devices report as GB does, in signed
    GBCS messages kept in `alert_log`, and its Activate Firmware commands travel as CS06 commands signed by an
    emulated supplier (`supplier_key`; by default the test-only supplier key the bundled HCALCS trusts,
    profiles/keys/test-supplier.key.pem) and checked by the HCALCS."""

    def __init__(
        self,
        han: Han,
        *,
        supplier_key: keys.PrivateKey | None = None,
        supplier_id: t.EUI64 = DEFAULT_SUPPLIER_ID,
    ) -> None:
        self.han = han
        options, devices = han.options, han.device_profiles
        # Profile keys are read now, so a bad key file is reported before the run starts.
        self._keys = {profile.ieee: configured_key(profile) for profile in devices}
        self._trusted = {profile.ieee: trusted_supplier(profile) for profile in devices if profile.kind == "hcalcs"}
        self.alert_log = AlertLog(options.start_utc)
        self.chf_originator = Originator(han.chf_profile.ieee, configured_key(han.chf_profile), options.state_dir)
        if supplier_key is None and supplier_id == DEFAULT_SUPPLIER_ID:
            # The emulated supplier signs with the test-only key the bundled HCALCS trusts (profiles/keys/).
            supplier_key = keys.load_private_key(bundled_key(TEST_SUPPLIER_KEY))
        self.supplier = Originator(supplier_id, supplier_key, options.state_dir)
        self._originators: dict[t.EUI64, Originator] = {}
        self._activations: dict[t.EUI64, HcalcsActivation] = {}
        han.add_listener(self.on_event)
        han.activator = self.activate

    def originator(self, ieee: t.EUI64) -> Originator:
        """The signing identity of one emulated device."""
        if ieee not in self._originators:
            self._originators[ieee] = Originator(ieee, self._keys[ieee], self.han.options.state_dir)
        return self._originators[ieee]

    def activation(self, ieee: t.EUI64) -> HcalcsActivation:
        """The CS06 side of an emulated HCALCS of this run."""
        if ieee not in self.han.devices:
            raise CommandRefused(f"{ieee}: no such device in this run")
        if ieee not in self._activations:
            self._activations[ieee] = HcalcsActivation(
                self.han.devices[ieee], self.originator(ieee), self.alert_log, self._trusted.get(ieee)
            )
        return self._activations[ieee]

    async def activate(
        self, ieee: t.EUI64, image_hash: bytes, at: datetime | None = None
    ) -> device_events.ActivationReply:
        """Activate Firmware as GB sends it: a CS06 command from the supplier, checked by the HCALCS. The `Han`'s
        activator while this is attached."""
        handler = self.activation(ieee)
        last = handler.originator.counters.last_accepted(self.supplier.ieee) or 0
        counter = self.supplier.next_counter(at_least=last + 1)
        command = ActivateFirmwareCommand(image_hash, counter, None if at is None else gbcs_time_not_before(at))
        self.alert_log.know(self.supplier)
        data = self.supplier.sign(command, ieee, counter=counter)
        return (await self.activate_gbcs(ieee, data, f"Activate Firmware from supplier {self.supplier.ieee}")).reply

    async def activate_gbcs(self, ieee: t.EUI64, data: bytes, source: str = "GBCS command") -> Exchange:
        """Give an HCALCS of this run a CS06 command (the bytes of a signed frame). A refused command raises
        `CommandRefused`; an activation the run was waiting for then ends the device's run as failed."""
        handler = self.activation(ieee)
        try:
            command = handler.check(data, source)
        except InputError as exc:
            self.han.fail(ieee, f"Activate Firmware refused: {exc}")
            raise
        return await handler.execute(command)

    def _utc_at(self, at: float) -> datetime:
        return self.han.options.start_utc + timedelta(seconds=at)

    def on_event(self, event: Event) -> None:
        """Sign the CCS08 and CS09 alerts the run's events call for; hand an HCALCS its activation outcomes."""
        if isinstance(event, server_events.TransferOutcome) and event.ieee is not None:
            self._transfer_alert(event)
        elif isinstance(event, device_events.Activated) and event.alert_code == AlertCode.FIRMWARE_VERSION:
            self._activation_alert(event)
        elif isinstance(event, device_events.ActivationOutcome) and event.ieee in self._activations:
            self._activations[event.ieee].on_event(event)

    def _transfer_alert(self, event: server_events.TransferOutcome) -> None:
        """CCS08: the CHF's Firmware Transfer Alert for one target's outcome."""
        assert event.ieee is not None
        when = self._utc_at(event.at)
        alert = FirmwareTransferAlert(
            alert_code=event.alert_code,
            execution_datetime=gbcs_time(when),
            entity_id=event.ieee,
            firmware_version=version_octets(event.file_version),
            response_code=event.response,
        )
        data = self.chf_originator.sign(alert, self.han.chf_profile.alert_recipient)
        self.alert_log.sent(self.chf_originator, data, event_fields(event), when)

    def _activation_alert(self, event: device_events.Activated) -> None:
        """CS09: a PPMID's Firmware Activation Alert once it has activated."""
        when = self._utc_at(event.at)
        originator = self.originator(event.ieee)
        cs09 = PpmidFirmwareActivationAlert(
            execution_datetime=gbcs_time(when),
            firmware_version=version_octets(event.new_version),
            activate_image=event.activate_image,
        )
        data = originator.sign(cs09, self.han.chf_profile.alert_recipient)
        self.alert_log.sent(originator, data, event_fields(event), when)
