"""The virtual NCP's CBKE library (EZSP v8, v13, v14) against the Smart Energy specification's Annex C test data
(suite 1: C.5, suite 2: C.6, as reproduced in the ZBOSS ECC tests; tests/se_vectors.py): with the test parties'
certificates and keys installed the way a host installs them, and the test ephemeral key, the NCP derives the
published MACs and stores the published KeyData. Commands go in as bellows writes them and come out as bellows
reads them, callbacks included."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import bellows.types as bt
import pytest
import zigpy.types as zt
from se_vectors import SUITE1, SUITE2, Party, Vector, ephemeral_key_of
from test_ncp_security import exchange, make_stack, real_time, status_ok

from emulator.ncp.ezsp import EzspCodec
from emulator.ncp.stack import EmberStack
from emulator.security.certs import CryptoSuite, parse_certificate

H = bytes.fromhex


def bellows_callback(stack: EmberStack, name: str, values: dict[str, Any]) -> dict[str, Any]:
    """A callback as the NCP sends it, read back with bellows' own protocol class."""
    version = stack.version
    protocol = getattr(importlib.import_module(f"bellows.ezsp.v{version}"), f"EZSPv{version}")(None, None)
    frame = EzspCodec(version).encode(0x10, name, values, callback=True)
    _, frame_id, data = protocol._ezsp_frame_rx(frame)
    assert frame_id == protocol.COMMANDS[name][0]
    decoded, rest = bt.deserialize_dict(data, protocol.COMMANDS[name][2])
    assert rest == b""
    return dict(decoded)


async def callback(callbacks: list[tuple[str, dict[str, Any]]], name: str) -> dict[str, Any]:
    for _ in range(100):
        await asyncio.sleep(0)
        found = [values for seen, values in callbacks if seen == name]
        if found:
            callbacks.clear()
            return found[0]
    raise AssertionError(f"no {name}")


def install(stack: EmberStack, vector: Vector, party: Party) -> None:
    """The party's CBKE data, installed as a host does: setPreinstalledCbkeData for suite 1; the three 283k1
    values then savePreinstalledCbkeData283k1 for suite 2."""
    if vector.suite is CryptoSuite.SUITE_1:
        data = {"caPublic": H(vector.ca), "myCert": H(party.cert), "myKey": H(party.d_s)}
        done = exchange(stack, "setPreinstalledCbkeData", **data)
    else:
        for value_id, data in (
            (bt.EzspValueId.VALUE_CERTIFICATE_283K1, party.cert),
            (bt.EzspValueId.VALUE_PUBLIC_KEY_283K1, vector.ca),
            (bt.EzspValueId.VALUE_PRIVATE_KEY_283K1, party.d_s),
        ):
            assert status_ok(exchange(stack, "setValue", valueId=value_id, value=H(data)))
        done = exchange(stack, "savePreinstalledCbkeData283k1")
    assert status_ok(done)


SUFFIX = {CryptoSuite.SUITE_1: "", CryptoSuite.SUITE_2: "283k1"}


@pytest.mark.parametrize("version", [8, 13, 14])
@pytest.mark.parametrize("vector", [SUITE1, SUITE2], ids=["suite1", "suite2"])
@pytest.mark.parametrize("initiator", [False, True], ids=["responder", "initiator"])
@real_time
async def test_the_ncp_derives_the_annex_c_macs_and_stores_key_data(
    tmp_path: Path, version: int, vector: Vector, initiator: bool
) -> None:
    stack, callbacks = make_stack(tmp_path, version)
    me, partner = (vector.u, vector.v) if initiator else (vector.v, vector.u)
    install(stack, vector, me)
    suffix = SUFFIX[vector.suite]
    assert bytes(exchange(stack, f"getCertificate{suffix}")["localCert"]) == H(me.cert)
    stack.cbke_ephemeral = lambda curve: ephemeral_key_of(vector, me)

    assert status_ok(exchange(stack, f"generateCbkeKeys{suffix}"))
    generated = await callback(callbacks, f"generateCbkeKeysHandler{suffix}")
    generated = bellows_callback(stack, f"generateCbkeKeysHandler{suffix}", generated)
    assert status_ok(generated) and bytes(generated["ephemeralPublicKey"]) == H(me.q_e)

    smacs = exchange(
        stack, f"calculateSmacs{suffix}",
        amInitiator=initiator, partnerCertificate=H(partner.cert), partnerEphemeralPublicKey=H(partner.q_e),
    )  # fmt: skip
    assert status_ok(smacs)
    calculated = await callback(callbacks, f"calculateSmacsHandler{suffix}")
    calculated = bellows_callback(stack, f"calculateSmacsHandler{suffix}", calculated)
    # initiatorSmac is MACU and responderSmac MACV, whichever side the NCP is.
    assert status_ok(calculated)
    assert bytes(calculated["initiatorSmac"]) == H(vector.mac_u)
    assert bytes(calculated["responderSmac"]) == H(vector.mac_v)

    assert status_ok(exchange(stack, f"clearTemporaryDataMaybeStoreLinkKey{suffix}", storeLinkKey=True))
    assert stack.link_key_for(zt.EUI64(H(partner.eui)[::-1])) == H(vector.key_data)
    # The temporary data is gone: nothing more to store, and SMACs need new keys first.
    assert not status_ok(exchange(stack, f"clearTemporaryDataMaybeStoreLinkKey{suffix}", storeLinkKey=True))
    again = exchange(
        stack, f"calculateSmacs{suffix}",
        amInitiator=initiator, partnerCertificate=H(partner.cert), partnerEphemeralPublicKey=H(partner.q_e),
    )  # fmt: skip
    assert not status_ok(again)


@pytest.mark.parametrize("version", [8, 13])
@real_time
async def test_a_bad_key_confirm_stores_nothing(tmp_path: Path, version: int) -> None:
    stack, callbacks = make_stack(tmp_path, version)
    install(stack, SUITE1, SUITE1.v)
    exchange(stack, "generateCbkeKeys")
    await callback(callbacks, "generateCbkeKeysHandler")
    exchange(stack, "calculateSmacs", amInitiator=False, partnerCertificate=H(SUITE1.u.cert),
             partnerEphemeralPublicKey=H(SUITE1.u.q_e))  # fmt: skip
    await callback(callbacks, "calculateSmacsHandler")
    assert status_ok(exchange(stack, "clearTemporaryDataMaybeStoreLinkKey", storeLinkKey=False))
    assert stack.link_key_for(zt.EUI64(H(SUITE1.u.eui)[::-1])) is None


def test_preinstalled_data_that_does_not_belong_together_is_refused(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 13)
    mismatched = {"caPublic": H(SUITE1.ca), "myCert": H(SUITE1.v.cert), "myKey": H(SUITE1.u.d_s)}
    answer = exchange(stack, "setPreinstalledCbkeData", **mismatched)
    assert answer["status"] == bt.EmberStatus.SECURITY_DATA_INVALID  # 0xBD on the wire
    assert not status_ok(exchange(stack, "savePreinstalledCbkeData283k1"))  # no 283k1 values set


@pytest.mark.parametrize(("library", "status"), [(0x06, 0x80), (0x0D, 0x80), (0x0F, 0x80), (0x40, 0xFF)])
def test_library_status(tmp_path: Path, library: int, status: int) -> None:
    stack, _ = make_stack(tmp_path, 14)
    assert exchange(stack, "getLibraryStatus", libraryId=library) == {"status": status}


@real_time
async def test_without_host_data_the_ncp_has_a_test_ca_certificate_for_its_own_eui64(tmp_path: Path) -> None:
    stack, _ = make_stack(tmp_path, 13)
    for suite in CryptoSuite:
        answer = exchange(stack, f"getCertificate{SUFFIX[suite]}")
        certificate = parse_certificate(bytes(answer["localCert"]), suite)
        assert (certificate.subject, certificate.issuer) == (bytes(stack.ieee)[::-1], b"OTAEMUTC")
