"""Who signs the GBCS messages of a run: each originator's EUI-64, its P-256 key and its kept counters.

Every originator signs with the key its profile names (`gbcs_key`) or a key generated for it. With a state
directory, generated keys and counters are kept there (`<EUI64>.gbcs-key.pem`, `<EUI64>.gbcs.json`), so that a
device signs with the same key, and never reuses a counter, from one run or `ota-emu activate` to the next. An
HCALCS checks CS06 commands with the supplier key its profile names (`supplier_signer`).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import zigpy.types as t

from emulator import keys
from emulator.device.state import eui64_name
from emulator.files import write_atomic
from emulator.gb.counters import Counters
from emulator.gb.cs06 import TrustedSupplier
from emulator.gb.frame import sign_message
from emulator.gb.messages import GbcsMessage
from emulator.profiles import ChfProfile, DeviceProfile, ProfileError

#: The emulated supplier that signs CS06 commands in a run, unless told otherwise.
DEFAULT_SUPPLIER_ID = t.EUI64.convert("90:B3:D5:1F:30:01:00:00")
#: The test-only key the bundled HCALCS trusts for that supplier (profiles/keys/).
TEST_SUPPLIER_KEY = "test-supplier.key.pem"


def profile_file(profile: DeviceProfile | ChfProfile, value: str) -> Path:
    """A file named in a profile, relative to the profile (as its images and signers are)."""
    path = Path(value)
    if path.is_absolute() or profile.source == "<built-in>":
        return path
    return Path(profile.source).parent / path


def _key_name(profile: DeviceProfile | ChfProfile, key: str) -> str:
    return f"{'device' if isinstance(profile, DeviceProfile) else 'chf'}.{key}"


def configured_key(profile: DeviceProfile | ChfProfile) -> keys.PrivateKey | None:
    """The signing key the profile names in `gbcs_key`, or None (a key is then generated)."""
    if profile.gbcs_key is None:
        return None
    try:
        return keys.load_private_key(profile_file(profile, profile.gbcs_key))
    except keys.KeyFileError as exc:
        raise ProfileError(f"{profile.source}: key '{_key_name(profile, 'gbcs_key')}': {exc}") from None


def trusted_supplier(profile: DeviceProfile) -> TrustedSupplier | None:
    """The profile's `supplier_signer`, or None when it names none (signatures are then not checked)."""
    if profile.supplier_signer is None:
        return None
    path = profile_file(profile, profile.supplier_signer)
    try:
        return TrustedSupplier(keys.load_public_key(path), str(path))
    except keys.KeyFileError as exc:
        raise ProfileError(f"{profile.source}: key '{_key_name(profile, 'supplier_signer')}': {exc}") from None


def counters_path(ieee: t.EUI64, directory: Path) -> Path:
    return directory / f"{eui64_name(ieee)}.gbcs.json"


def read_counters(ieee: t.EUI64, directory: Path | None) -> Counters:
    """The counters kept for `ieee` in `directory`; fresh ones when there are none (or no directory)."""
    if directory is None:
        return Counters(ieee)
    path = counters_path(ieee, directory)
    if not path.exists():
        return Counters(ieee)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        data = None  # refused below, naming the file
    return Counters.from_json(data, ieee, str(path))


class Originator:
    """One sender of signed GBCS messages: its id, its key and its counters, kept after every change.

    The key is only made (or read from the state directory) when first needed, so building an originator for a
    command that then turns out to be bad input writes nothing."""

    def __init__(self, ieee: t.EUI64, key: keys.PrivateKey | None, directory: Path | None) -> None:
        self.ieee = ieee
        self._key = key
        self._directory = directory
        self.counters = read_counters(ieee, directory)

    @property
    def key(self) -> keys.PrivateKey:
        if self._key is None:
            self._key = self._kept_key()
        return self._key

    def _kept_key(self) -> keys.PrivateKey:
        if self._directory is None:
            return keys.generate_private_key()
        path = self._directory / f"{eui64_name(self.ieee)}.gbcs-key.pem"
        if path.exists():
            return keys.load_private_key(path)
        key = keys.generate_private_key()
        self._directory.mkdir(parents=True, exist_ok=True)
        write_atomic(path, keys.private_key_pem(key), mode=0o600)
        return key

    def next_counter(self, at_least: int = 0) -> int:
        """The originator counter of the next message this originator sends (kept before it is used)."""
        counter = self.counters.next(at_least)
        self._save()
        return counter

    def accept(self, originator: t.EUI64, counter: int) -> None:
        """Remember the counter of a command accepted from `originator`: one not above it is a replay."""
        self.counters.accept(originator, counter)
        self._save()

    def sign(
        self, message: GbcsMessage, recipient: t.EUI64, *, counter: int | None = None, date_time: datetime | None = None
    ) -> bytes:
        """A signed frame; alerts take the next own counter, a response the counter of the command it answers."""
        return sign_message(
            message,
            originator_counter=self.next_counter() if counter is None else counter,
            originator_id=self.ieee,
            recipient_id=recipient,
            key=self.key,
            date_time=date_time,
        )

    def _save(self) -> None:
        if self._directory is None:
            return
        self._directory.mkdir(parents=True, exist_ok=True)
        write_atomic(counters_path(self.ieee, self._directory), json.dumps(self.counters.as_json(), indent=2) + "\n")
