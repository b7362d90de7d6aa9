"""The virtual NCP's CBKE library: EmberZNet's Smart Energy ECC commands for suite 1 (sect163k1) and, with the
`283k1` names, suite 2 (sect283k1). The same in EZSP v8, v13 and v14 (statuses apart, which the codec converts).

* Credentials are the chip's manufacturing data (MFG_CBKE_DATA): a certificate for the NCP's own EUI-64 issued
  by the bundled test CA the first time they are needed (`chf.se_credentials`), or what the host installs
  with `setPreinstalledCbkeData` (suite 1) or with `setValue` of VALUE_CERTIFICATE_283K1, VALUE_PUBLIC_KEY_283K1
  (the CA's key) and VALUE_PRIVATE_KEY_283K1 followed by `savePreinstalledCbkeData283k1` (suite 2).
  `getCertificate`/`getCertificate283k1` read the certificate back.
* One exchange at a time, as the library keeps one set of temporary data: `generateCbkeKeys` answers at once
  and reports the new ephemeral public key in `generateCbkeKeysHandler`; `calculateSmacs` (am I the initiator,
  the partner's certificate and ephemeral key) reports MACU and MACV in `calculateSmacsHandler` — initiatorSmac
  is MACU and responderSmac MACV whatever this side's role; `clearTemporaryDataMaybeStoreLinkKey(True)` stores
  KeyData as the link key of the certificate's subject, `(False)` only forgets the exchange. The math is
  `security.cbke` (ECQV with the CA key of the credentials, ECMQV, the AES-MMO KDF and MACs).
* Where the key goes: on a joined node whose partner is its trust centre, it becomes the node's TC link key (and
  replaces a key-table entry for the TC, which would otherwise come first); anywhere else it goes into the key
  table (the trust centre keeps its devices' keys there). Then the stack reports zigbeeKeyEstablishmentHandler
  (partner, EmberKeyStatus): TRUST_CENTER_LINK_KEY_ESTABLISHED when one side is the trust centre,
  APP_LINK_KEY_ESTABLISHED between two other nodes, KEY_TABLE_FULL when the table has no room. EmberZNet documents
  the command and the callback but not where the library stores the key nor which status it reports for which
  partner: this is our reading (SE_SECURITY.md §10 question 4), not tried on hardware.
* `getLibraryStatus` reports the CBKE and ECC libraries present (EmberLibraryStatus 0x80).
* A firmware built without the library (most coordinator sticks: `VirtualNcp(cbke_library=False)`, `ota-emu ncp
  --no-cbke-library`) has stubs: `getLibraryStatus` says 0x00 for the CBKE and ECC libraries, and every command
  above answers LIBRARY_NOT_PRESENT (EmberStatus 0xB5, SE_SECURITY.md §7) with no data.

The temporary data is RAM: a reset forgets it. Credentials the host installs are manufacturing data: they are kept
in the state file (`NetworkState.cbke_data`) and outlive restarts, leaving the network and tokenFactoryReset.
Issued test credentials are kept for the process only (a test CA issues a new certificate for the same EUI-64
after a restart, which partners verify against the same CA key).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bellows.types as bt
import zigpy.types as zt

from emulator.chf.se_credentials import issue_test_credentials
from emulator.ncp.state import CbkeData, LinkKeyEntry, NetworkState
from emulator.security import cbke
from emulator.security.certs import CertificateError, CryptoSuite, DeviceCredentials, parse_certificate
from emulator.security.koblitz import Curve, PointError, PrivateKey, PublicKey

OK = bt.sl_Status.OK
LIBRARY_PRESENT = 0x80
LIBRARY_ERROR = 0xFF
# EmberLibraryId: CBKE 0x06, ECC 0x08, CBKE_283K1 0x0D, ECC_283K1 0x0E, CBKE_CORE 0x0F; and the rest of the image.
KNOWN_LIBRARIES = range(0x00, 0x10)
NO_INDEX = 0xFF
_V = bt.EzspValueId
# EmberLibraryId of the CBKE and ECC libraries (suite 1, suite 2, and the core both share).
CBKE_LIBRARIES = frozenset({0x06, 0x08, 0x0D, 0x0E, 0x0F})
LIBRARY_STUB = 0x00
LIBRARY_NOT_PRESENT = bt.EmberStatus.LIBRARY_NOT_PRESENT
# The library's commands and the data fields of their answers (empty in a stub's answer).
LIBRARY_COMMANDS: dict[str, dict[str, bytes]] = {
    "getCertificate": {"localCert": bytes(48)},
    "getCertificate283k1": {"localCert": bytes(74)},
    "setPreinstalledCbkeData": {},
    "savePreinstalledCbkeData283k1": {},
    "generateCbkeKeys": {},
    "generateCbkeKeys283k1": {},
    "calculateSmacs": {},
    "calculateSmacs283k1": {},
    "clearTemporaryDataMaybeStoreLinkKey": {},
    "clearTemporaryDataMaybeStoreLinkKey283k1": {},
}

# Command (and callback) names per suite.
GENERATE = {CryptoSuite.SUITE_1: "generateCbkeKeys", CryptoSuite.SUITE_2: "generateCbkeKeys283k1"}
GENERATED = {CryptoSuite.SUITE_1: "generateCbkeKeysHandler", CryptoSuite.SUITE_2: "generateCbkeKeysHandler283k1"}
CALCULATE = {CryptoSuite.SUITE_1: "calculateSmacs", CryptoSuite.SUITE_2: "calculateSmacs283k1"}
CALCULATED = {CryptoSuite.SUITE_1: "calculateSmacsHandler", CryptoSuite.SUITE_2: "calculateSmacsHandler283k1"}
CLEAR = {
    CryptoSuite.SUITE_1: "clearTemporaryDataMaybeStoreLinkKey",
    CryptoSuite.SUITE_2: "clearTemporaryDataMaybeStoreLinkKey283k1",
}
CERTIFICATE = {CryptoSuite.SUITE_1: "getCertificate", CryptoSuite.SUITE_2: "getCertificate283k1"}


def _stub(data: dict[str, bytes]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A stub library command: LIBRARY_NOT_PRESENT and `data` (zeros where the answer carries data)."""

    def answer(a: dict[str, Any]) -> dict[str, Any]:
        return {"status": LIBRARY_NOT_PRESENT, **data}

    return answer


@dataclass(slots=True)
class _Temporary:
    """The library's temporary data for the exchange under way."""

    suite: CryptoSuite
    ephemeral: PrivateKey
    public: bytes
    partner: bytes | None = None  # EUI-64 as certificates carry it (most significant byte first)
    key_data: bytes | None = None


class StackCbke:
    """CBKE commands of `EmberStack` (mixed into it); the attributes below are the stack's."""

    ieee: zt.EUI64
    state: NetworkState
    values: dict[bt.EzspValueId, bytes]
    _generation: int
    if TYPE_CHECKING:  # the stack's (`tables.StackTables`), from the config

        @property
        def _key_table_size(self) -> int: ...

    flush: Callable[[], None]
    _emit: Callable[[int, str, dict[str, Any]], None]
    _emit_soon: Callable[[str, dict[str, Any]], None]
    _find_key: Callable[[zt.EUI64], int]

    add_command: Callable[[str, Callable[[dict[str, Any]], dict[str, Any]]], None]

    _cbke_credentials: dict[CryptoSuite, DeviceCredentials] | None = None
    _cbke_temporary: _Temporary | None = None
    #: Where ephemeral key pairs come from (a known-answer test puts the SE specification's in).
    cbke_ephemeral: Callable[[Curve], PrivateKey] = staticmethod(PrivateKey.generate)

    # -- credentials (MFG_CBKE_DATA) -----------------------------------------------------------------------

    def cbke_credentials(self) -> dict[CryptoSuite, DeviceCredentials]:
        """The NCP's CBKE credentials per suite: what the host installed (kept in the state file), else ones the
        bundled test CA issues."""
        if self._cbke_credentials is None:
            installed = {
                CryptoSuite(int(s)): data.credentials(CryptoSuite(int(s))) for s, data in self.state.cbke_data.items()
            }
            missing = tuple(suite for suite in (CryptoSuite.SUITE_2, CryptoSuite.SUITE_1) if suite not in installed)
            self._cbke_credentials = issue_test_credentials(self.ieee, missing) | installed
        return self._cbke_credentials

    def _install(self, suite: CryptoSuite, certificate: bytes, ca_public: bytes, private: bytes) -> bt.sl_Status:
        try:
            credentials = DeviceCredentials(
                parse_certificate(certificate, suite),
                PrivateKey.from_bytes(suite.curve, private),
                PublicKey.from_bytes(suite.curve, ca_public, "CA public key"),
            ).check()
        except (CertificateError, PointError):
            return bt.sl_Status.INVALID_CONFIGURATION  # EMBER_SECURITY_DATA_INVALID
        self.cbke_credentials()[suite] = credentials
        self.state.cbke_data[str(suite.value)] = CbkeData.of(credentials)
        self.flush()  # manufacturing data: written at once
        return OK

    def _cmd_setPreinstalledCbkeData(self, a: dict[str, Any]) -> dict[str, Any]:
        suite = CryptoSuite.SUITE_1
        return {"status": self._install(suite, bytes(a["myCert"]), bytes(a["caPublic"]), bytes(a["myKey"]))}

    def _cmd_savePreinstalledCbkeData283k1(self, a: dict[str, Any]) -> dict[str, Any]:
        parts = [self.values.get(v) for v in (_V.VALUE_CERTIFICATE_283K1, _V.VALUE_PUBLIC_KEY_283K1)]
        private = self.values.get(_V.VALUE_PRIVATE_KEY_283K1)
        if parts[0] is None or parts[1] is None or private is None:
            return {"status": bt.sl_Status.INVALID_STATE}  # setValue the three parts first
        return {"status": self._install(CryptoSuite.SUITE_2, parts[0], parts[1], private)}

    def _certificate(self, suite: CryptoSuite) -> dict[str, Any]:
        return {"status": OK, "localCert": self.cbke_credentials()[suite].certificate.to_bytes()}

    def _cmd_getCertificate(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._certificate(CryptoSuite.SUITE_1)

    def _cmd_getCertificate283k1(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._certificate(CryptoSuite.SUITE_2)

    def _cmd_getLibraryStatus(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"status": LIBRARY_PRESENT if a["libraryId"] in KNOWN_LIBRARIES else LIBRARY_ERROR}

    def remove_cbke_library(self) -> None:
        """Be a firmware built without the CBKE library: its commands become stubs answering LIBRARY_NOT_PRESENT."""
        for name, data in LIBRARY_COMMANDS.items():
            self.add_command(name, _stub(data))

        def library_status(a: dict[str, Any]) -> dict[str, Any]:
            stub = a["libraryId"] in CBKE_LIBRARIES
            return {"status": LIBRARY_STUB if stub else self._cmd_getLibraryStatus(a)["status"]}

        self.add_command("getLibraryStatus", library_status)

    # -- ephemeral keys ---------------------------------------------------------------------------------

    def _generate(self, suite: CryptoSuite) -> dict[str, Any]:
        asyncio.get_running_loop().call_soon(self._generated, self._generation, suite)
        return {"status": OK}

    def _generated(self, generation: int, suite: CryptoSuite) -> None:
        if generation != self._generation:
            return  # reset meanwhile
        ephemeral = self.cbke_ephemeral(suite.curve)
        public = ephemeral.public_key().to_bytes()
        self._cbke_temporary = _Temporary(suite, ephemeral, public)
        self._emit(generation, GENERATED[suite], {"status": OK, "ephemeralPublicKey": public})

    def _cmd_generateCbkeKeys(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._generate(CryptoSuite.SUITE_1)

    def _cmd_generateCbkeKeys283k1(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._generate(CryptoSuite.SUITE_2)

    # -- SMACs ------------------------------------------------------------------------------------------

    def _calculate(self, suite: CryptoSuite, a: dict[str, Any]) -> dict[str, Any]:
        temporary = self._cbke_temporary
        if temporary is None or temporary.suite is not suite:
            return {"status": bt.sl_Status.INVALID_STATE}  # generateCbkeKeys first
        loop = asyncio.get_running_loop()
        partner = (bytes(a["partnerCertificate"]), bytes(a["partnerEphemeralPublicKey"]))
        loop.call_soon(self._calculated, self._generation, temporary, bool(a["amInitiator"]), *partner)
        return {"status": OK}

    def _calculated(
        self, generation: int, temporary: _Temporary, initiator: bool, certificate: bytes, ephemeral: bytes
    ) -> None:
        if generation != self._generation or self._cbke_temporary is not temporary:
            return
        suite = temporary.suite
        try:
            partner = parse_certificate(certificate, suite, "partner certificate")
            agreement = cbke.agree(
                self.cbke_credentials()[suite], temporary.ephemeral, temporary.public, partner, ephemeral,
                initiator=initiator,
            )  # fmt: skip
        except (CertificateError, PointError):
            self._emit(generation, CALCULATED[suite], {"status": bt.sl_Status.FAIL})
            return
        temporary.partner, temporary.key_data = partner.subject, agreement.key_data
        values = {"status": OK, "initiatorSmac": agreement.mac_u, "responderSmac": agreement.mac_v}
        self._emit(generation, CALCULATED[suite], values)

    def _cmd_calculateSmacs(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._calculate(CryptoSuite.SUITE_1, a)

    def _cmd_calculateSmacs283k1(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._calculate(CryptoSuite.SUITE_2, a)

    # -- the end of an exchange -------------------------------------------------------------------------

    def _clear(self, store: bool) -> dict[str, Any]:
        temporary, self._cbke_temporary = self._cbke_temporary, None
        if not store:
            return {"status": OK}
        if temporary is None or temporary.partner is None or temporary.key_data is None:
            return {"status": bt.sl_Status.INVALID_STATE}  # no SMACs calculated: no key to store
        partner = zt.EUI64(temporary.partner[::-1])
        trust_centre = self.state.trust_centre  # None on the trust centre itself
        index = self._find_key(partner)
        if partner == trust_centre:
            # A joined node and its trust centre: the new key is its TC link key (an entry for the TC, which would
            # come first, gets it too).
            self.state.tc_link_key = temporary.key_data.hex()
            self.state.tc_link_rx_counter = 0
        elif index == NO_INDEX:
            free = [i for i in range(self._key_table_size) if self.state.key_table[i] is None]
            if not free:
                self._key_established(partner, bt.EmberKeyStatus.KEY_TABLE_FULL)
                return {"status": bt.sl_Status.FULL}
            index = free[0]
        if index != NO_INDEX:
            self.state.key_table[index] = LinkKeyEntry(NetworkState.ieee_text(partner), temporary.key_data.hex())
        self.flush()
        with_trust_centre = trust_centre is None or partner == trust_centre
        status = bt.EmberKeyStatus.APP_LINK_KEY_ESTABLISHED
        if with_trust_centre:
            status = bt.EmberKeyStatus.TRUST_CENTER_LINK_KEY_ESTABLISHED
        self._key_established(partner, status)
        return {"status": OK}

    def _key_established(self, partner: zt.EUI64, status: bt.EmberKeyStatus) -> None:
        """zigbeeKeyEstablishmentHandler, after the command's response."""
        self._emit_soon("zigbeeKeyEstablishmentHandler", {"partner": partner, "status": status})

    def _cmd_clearTemporaryDataMaybeStoreLinkKey(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._clear(bool(a["storeLinkKey"]))

    def _cmd_clearTemporaryDataMaybeStoreLinkKey283k1(self, a: dict[str, Any]) -> dict[str, Any]:
        return self._clear(bool(a["storeLinkKey"]))
