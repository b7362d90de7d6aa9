"""Smart Energy CBKE test data shared by the security tests: the SE specification's Annex C test vectors (suite 1:
C.5, suite 2: C.6) as reproduced in the ZBOSS ECC library tests (zb_ecc_lib_test_async.c, zb_ecc_lib_test_async_2.c),
and Certicom test-CA identities from zsmartsystems' CerticomCbkeCertificateTest.java. Rows marked "published" are
the MACs the sources print; KeyData and the other MAC follow from the published rows."""

from __future__ import annotations

from dataclasses import dataclass

from emulator.security.certs import CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.koblitz import PrivateKey, PublicKey


@dataclass(frozen=True)
class Party:
    eui: str
    cert: str
    d_s: str
    q_s: str
    d_e: str
    q_e: str


@dataclass(frozen=True)
class Vector:
    suite: CryptoSuite
    ca: str
    u: Party
    v: Party
    z: str
    mac_key: str
    key_data: str
    mac_u: str
    mac_v: str


SUITE1 = Vector(
    CryptoSuite.SUITE_1,
    ca="0200FDE8A7F3D1084224962A4E7C54E69AC3F04DA6B8",
    u=Party(
        "0000000000000002",
        "020615E07D30ECA2DAD58002E667D94BC1B4223983070000000000000002544553545345434101090006000000000000",
        "01E9DDB5580CF72ECE7F215F0AE594E48DF3E7FEE8",
        "03025BBA38D0C7B5436B68DF728F093E7A1D6C437E6D",
        "0013D36DE4B1EA8E22739C381370823F404BFF8862",
        "0300E117C86D0E7CD128B2F34E9076CFF24AF46D7288",
    ),
    v=Party(
        "0000000000000001",
        "03045FDFC8D85FFB8B3993CB72DDCAA55F00B3E87D6D0000000000000001544553545345434101090006000000000000",
        "00B8A900FCADEBABBFA383B540FCE9ED438395EAA7",
        "030290A1F5C08DAD5F2945E335620C7A98FAC46666A1",
        "03D48C7210DDBCC4FB2E5E7A0AA16A0DB89540820B",
        "0306AB52062201D995B8B8591F3F086A3A2E214D845E",
    ),
    z="00E0D2C3CCD5C106A89C4F6CC26A5F7EC9DF78A7BE",
    mac_key="90F967B22C8357C10C1C04788DE9E848",
    key_data="86D58AAA998E2FAEFAF9FEF49606543A",
    mac_u="B82F1F9774740C32F80FCFC3921B6420",
    mac_v="79D5F2AD1C31D4D1EE7CB719AC683C3C",  # published
)
SUITE2 = Vector(
    CryptoSuite.SUITE_2,
    ca="0207A445022D9F39F49BDC38380026A27A9E0A1799313AB28C5C1A1C6B605154DB1DFF6752",
    u=Party(
        "0A0B0C0D0E0F1012",
        "0084A933B37F018DEC0D081112131415161718005292A38AFFFFFFFF0A0B0C0D0E0F10128803076277E2F7E2252B16A0E92B6E8771"
        "BB3F207946CBD4A45D9A9DF6EDAB8C796A48E89DEC",
        "00F2561ADB39EF49C1D62EF5186C6E0C158A5A45BFCE38660931ACC3694592D5ACDE9006",
        "03030E56F7ADE866E76372764BA20A9FF1FE4CAE522F94839E70F2ADFC1CA3E97F4DDCAF2E",
        "0013D36DE4B1EA8E22739C381370823F404BFF8862B521FECA9871FB3691846D361304B4",
        "0305F3394E15680660EECAA36788D9B6F312B971CE2C9617570BF7DFCD21C972017762C332",
    ),
    v=Party(
        "0A0B0C0D0E0F1011",
        "002622A505E8938F270D081112131415161718005292A35BFFFFFFFF0A0B0C0D0E0F1011880303B4E9DC543A64333C982308022B"
        "54E67E2F15F532551B0A11E2E2C1C1D3097A4324E7ED",
        "0151CD0DBCB80474BF7AC9FEEBE39C7A32A63518938FCA9754AAE132BC9C73BE94A7E1BE",
        "0202F4FA2A3040433C6820299D182A1042E41404E337C57F47716B42DFAF970F1580A04C9B",
        "03D48C7210DDBCC4FB2E5E7A0AA16A0DB89540820B8DC091AB521EA824AFE117CADE995B",
        "03009A5131CF5B92A016378C0F7F284ECD47F94010F875D43BF1E9A65474ADBFC63696A930",
    ),
    z="04F7724A9A77B21D2747CCEF68A457E45246C4BE9F66FD9425227BCB2CC5180EA9CCCB9A",
    mac_key="ED380A00296600FB6B893025DE5FD137",
    key_data="AA4689C70BE0FAF0C9BE534ABD9F4CDC",
    mac_u="BF7E1A26D4EF7038B56813E465A131C9",  # published
    mac_v="C5B432A9995A092F4449F83613930064",
)
VECTORS = [SUITE1, SUITE2]


# Certicom test-CA certificates with their private keys (CA public key, certificate, d, Q).
CERTICOM = [
    (
        SUITE1.ca,
        "02020882b1d7df05538f37cdd09a4f6b15368998642b002208000000000154455354534543410109108301234567890a",
        "0392ba4afc2453a49eebe9bca8de73210f02479a4a",
        "0207d1ca014786b5e552cfd5f04339a2e856f00eaaef",
    ),
    (
        SUITE2.ca,
        "000b3ad5a312ab75d60d081112131415161718005b7ed230ffffffff0022080000000001080205bb3d1d1576197ff9ab6563915019a1"
        "30437adb0ee7915432dc4a09c97dc595c5856800",
        "00997097b87684f62f555173c47be89935fbf6440ae292492b54c5829a0d541f4d26e254",
        "02012f082ee7db1bd3f89f16eabbf5d6221a5dcd077fc0c9d37b329eee8e2cdaee03439de0",
    ),
]


def ephemeral_key_of(vector: Vector, party: Party) -> PrivateKey:
    """The ephemeral private key of the test data. Annex C.6's responder key 03D48C... exceeds n of sect283k1 (it
    repeats the suite-1 bytes); ECMQV uses it only modulo n, and so do we."""
    curve = vector.suite.curve
    return PrivateKey(curve, int(party.d_e, 16) % curve.n)


def credentials_of(vector: Vector, party: Party) -> DeviceCredentials:
    curve = vector.suite.curve
    return DeviceCredentials(
        parse_certificate(bytes.fromhex(party.cert)),
        PrivateKey.from_bytes(curve, bytes.fromhex(party.d_s)),
        PublicKey.from_bytes(curve, bytes.fromhex(vector.ca)),
    )
