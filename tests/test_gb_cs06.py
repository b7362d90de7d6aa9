"""The pure GBCS pieces an HCALCS and the alert log rest on: the CS06 checks against the DCC's RTDS command and
the DCC supplier certificate, originator counters and their kept JSON form, and GBCS time and version values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import zigpy.types as t

from emulator import keys
from emulator.gb.counters import COUNTER_FORMAT, CounterFileError, Counters
from emulator.gb.cs06 import (
    MAC_NOT_CHECKED,
    CommandRefused,
    Cs06Policy,
    SignatureCheck,
    SignatureStatus,
    TrustedSupplier,
)
from emulator.gb.frame import bytes_from_hex
from emulator.gb.messages import ActivateFirmwareCommand
from emulator.gb.values import gbcs_time, gbcs_time_not_before, version_octets

GB_VECTORS = Path(__file__).parent / "data" / "gb-vectors"
RTDS = GB_VECTORS / "rtds"
CS06_COMMAND = bytes_from_hex((RTDS / "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX").read_text())
CCS08_ALERT = bytes_from_hex((RTDS / "CCS08_NA_NA_ALERT_GBCS.HEX").read_text())
DCC_SUPPLIER_CERT = GB_VECTORS / "signer-90b3d51f30010000-cert.pem"
ESME_ID = t.EUI64.convert("00:DB:12:34:56:78:90:A0")  # the device the RTDS command is addressed to
SUPPLIER_ID = t.EUI64.convert("90:B3:D5:1F:30:01:00:00")


def dcc_trusted() -> TrustedSupplier:
    return TrustedSupplier(keys.load_public_key(DCC_SUPPLIER_CERT), str(DCC_SUPPLIER_CERT))


def policy(trusted: TrustedSupplier | None = None, *, device: t.EUI64 = ESME_ID, require: bool = True) -> Cs06Policy:
    return Cs06Policy(device, trusted, require, "hcalcs.toml")


def test_the_rtds_command_passes_with_the_dcc_supplier_certificate() -> None:
    command = policy(dcc_trusted()).check(CS06_COMMAND, "RTDS", Counters(ESME_ID))
    assert isinstance(command.message, ActivateFirmwareCommand)
    assert (command.frame.originator_id, command.frame.originator_counter) == (SUPPLIER_ID, 1000)
    verified = {"status": "verified", "signer": str(DCC_SUPPLIER_CERT), "mac": MAC_NOT_CHECKED}
    assert command.signature.as_json() == verified


def test_a_replayed_counter_is_refused_and_a_higher_one_is_not() -> None:
    counters = Counters(ESME_ID)
    counters.accept(SUPPLIER_ID, 1000)
    with pytest.raises(CommandRefused, match="originator counter 1000 is not above 1000"):
        policy(dcc_trusted()).check(CS06_COMMAND, "RTDS", counters)
    counters.accepted[str(SUPPLIER_ID)] = 999
    assert policy(dcc_trusted()).check(CS06_COMMAND, "RTDS", counters).frame.originator_counter == 1000


@pytest.mark.parametrize(
    ("data", "checks", "words"),
    [
        (CS06_COMMAND, policy(dcc_trusted(), device=SUPPLIER_ID), "addressed to 00:db:12:34:56:78:90:a0, not to"),
        (CCS08_ALERT, policy(dcc_trusted()), "expected a CS06 ActivateFirmware command"),
        (CS06_COMMAND, policy(None), "hcalcs.toml names no supplier_signer, so the signature cannot be checked"),
    ],
    ids=["other-recipient", "not-cs06", "nothing-trusted"],
)
def test_refusals_name_what_was_expected(data: bytes, checks: Cs06Policy, words: str) -> None:
    with pytest.raises(CommandRefused, match=words):
        checks.check(data, "RTDS", Counters(checks.device))


def test_a_key_that_did_not_sign_it_does_not_verify_it() -> None:
    stranger = TrustedSupplier(keys.generate_private_key().public_key(), "stranger.pub.pem")
    with pytest.raises(CommandRefused, match=r"signature does not verify with stranger\.pub\.pem"):
        policy(stranger).check(CS06_COMMAND, "RTDS", Counters(ESME_ID))


def test_an_unchecked_command_says_why() -> None:
    command = policy(None, require=False).check(CS06_COMMAND, "RTDS", Counters(ESME_ID))
    reason = "hcalcs.toml names no supplier_signer"
    assert command.signature == SignatureCheck(SignatureStatus.NOT_CHECKED, reason=reason, mac=MAC_NOT_CHECKED)
    assert list(command.signature.as_json()) == ["status", "reason", "mac"]


def test_counters_count_up_and_survive_their_json_form() -> None:
    counters = Counters(ESME_ID)
    assert [counters.next(), counters.next(), counters.next(at_least=10), counters.next()] == [1, 2, 10, 11]
    counters.accept(SUPPLIER_ID, 1000)
    kept = counters.as_json()
    accepted = {str(SUPPLIER_ID): 1000}
    assert kept == {"format": COUNTER_FORMAT, "ieee": str(ESME_ID), "originator_counter": 11, "accepted": accepted}
    again = Counters.from_json(kept, ESME_ID, "kept.json")
    assert (again.next(), again.last_accepted(SUPPLIER_ID), again.last_accepted(ESME_ID)) == (12, 1000, None)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"format": 2, "ieee": "00:db:12:34:56:78:90:a0", "originator_counter": 1, "accepted": {}},
        {"format": 1, "ieee": "00:db:12:34:56:78:90:a4", "originator_counter": 1, "accepted": {}},
        {"format": 1, "ieee": "00:db:12:34:56:78:90:a0", "originator_counter": True, "accepted": {}},
        {"format": 1, "ieee": "00:db:12:34:56:78:90:a0", "originator_counter": 1, "accepted": {"x": "1"}},
    ],
    ids=["not-json", "not-object", "other-format", "other-device", "bool-counter", "text-accepted"],
)
def test_counters_refuse_what_they_did_not_write(data: object) -> None:
    words = r"^kept\.json: not a GBCS counter file of device 00:db:12:34:56:78:90:a0"
    with pytest.raises(CounterFileError, match=words):
        Counters.from_json(data, ESME_ID, "kept.json")


def test_gbcs_times_are_whole_seconds_and_versions_four_octets() -> None:
    when = datetime(2030, 1, 15, 9, 0, 0, 250_000, tzinfo=UTC)
    assert gbcs_time(when) == datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC)
    assert gbcs_time_not_before(when) == datetime(2030, 1, 15, 9, 0, 1, tzinfo=UTC)
    assert gbcs_time_not_before(gbcs_time(when)) == gbcs_time(when)
    an_hour_east = datetime(2030, 1, 15, 10, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert gbcs_time(an_hour_east) == datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC)
    assert version_octets(0x01020304) == b"\x01\x02\x03\x04"
