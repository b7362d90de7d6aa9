"""CBKE credentials on the EZSP paths: a profile's `cbke_credentials` file, or a certificate issued at start-up by
the TEST-ONLY CA shipped with the bundled profiles (`profiles/keys/test-cbke-ca-suite1.key.json`, `-suite2`).

The CHF on bellows (`ota-emu chf`) and the devices inside the virtual NCP (`ota-emu ncp --device`) are separate
processes, so a CA made for one run (what the in-process HAN does) would leave each side trusting a CA the other
never heard of, and CBKE would end in UNKNOWN_ISSUER. Both sides therefore issue from the same bundled CA when no
credentials file is named; its private key is public, so what it certifies proves nothing outside a test bench.
The CHF's certificate names the EUI-64 of the coordinator it runs on (the NCP's), which the CHF only learns at
start-up: that is why certificates are issued then rather than shipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

import zigpy.types as t

from emulator.errors import InputError
from emulator.han.security import IssuedOnDemand, load_credentials, suites_of
from emulator.profiles import bundled_key
from emulator.security import credentials as credential_files
from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite, DeviceCredentials

TEST_CA_FILES = {
    CryptoSuite.SUITE_1: "test-cbke-ca-suite1.key.json",
    CryptoSuite.SUITE_2: "test-cbke-ca-suite2.key.json",
}


@cache
def test_authority(suite: CryptoSuite) -> CertificateAuthority:
    """The bundled TEST-ONLY CA of `suite`."""
    path = bundled_key(TEST_CA_FILES[suite])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the bundled test CA ({exc.strerror})") from None
    return credential_files.parse_ca(text, str(path))


def issue_test_credentials(ieee: t.EUI64, suites: tuple[CryptoSuite, ...]) -> dict[CryptoSuite, DeviceCredentials]:
    """A certificate for `ieee` from the bundled test CA, for each suite."""
    return {suite: _issued(suite, bytes(ieee)[::-1]) for suite in suites}


@cache
def _issued(suite: CryptoSuite, subject: bytes) -> DeviceCredentials:
    """A node keeps the certificate the bundled test CA issued it for the process's life, as a real node carries
    one for life: a process that starts a node again (a test suite, a bench's repeated runs) issues it once."""
    return test_authority(suite).issue(subject)


def credentials_for(
    ieee: t.EUI64, suite_setting: str, file: str | None, source: str, what: str
) -> Mapping[CryptoSuite, DeviceCredentials]:
    """The CBKE credentials of the node `ieee`: the profile's file (`file`, relative to the profile `source`),
    whose certificate must name `ieee` (partners check the subject), or ones from the bundled test CA for the
    suites `suite_setting` offers ("1", "2" or "both"), each issued when first looked up."""
    if file is None:
        subject = bytes(ieee)[::-1]
        return IssuedOnDemand(suites_of(suite_setting), lambda suite: _issued(suite, subject))
    loaded = load_credentials(file, source, what)
    for credentials in loaded.values():
        subject = credentials.certificate.subject
        if subject != bytes(ieee)[::-1]:
            raise InputError(
                f"{what} cbke_credentials {file}: the certificate is for {subject.hex(':').upper()}, "
                f"expected {str(ieee).upper()} (the EUI-64 CBKE partners check)"
            )
    return loaded
