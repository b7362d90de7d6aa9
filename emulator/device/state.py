"""What a device remembers across a restart, and where it keeps it.

The OTA server is stateless by design and "the client SHALL" track which pieces it has (SPEC.md §6.1), so a
device that is stopped mid-download must find its FileOffset, the image it was fetching and the bytes so far
when it starts again (C-20). The same goes for the firmware it runs after an upgrade and for a verified image
an HCALCS holds until it is told to activate it.

On disk, per device, all named by the EUI-64 in 16 hex digits (most significant first), in `state_dir`:

* `<EUI64>.json` — the state below (format 1);
* `<EUI64>.download.bin` — the first FileOffset bytes of the image being downloaded;
* `<EUI64>.held-<TTTT>.bin` — a verified image of image type TTTT awaiting activation;
* `<EUI64>.running.bin` — the image the device runs, once it has activated one.

In memory a device keeps no more than it must, because a run may hold ten thousand of them: the download buffer
grows with the blocks received (a device told to wait before its first block holds nothing), and a verified
image is the process's shared copy of those bytes (`ota.shared`), the same object the CHF serves blocks from.

Every file is written with `emulator.files.write_atomic`, blobs before the JSON that names them, so a crash
leaves either the old state or the new one. A process killed mid-write (kill -9, power loss) also leaves the
temporary file `write_atomic` was filling (`.<EUI64>.download.bin.XXXX.tmp`, up to an image in size); the
device removes its own when it starts, before it reads its state (a mere reader of the state never does: the
file may be a running device's write in progress).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex, overload

import zigpy.types as t

from emulator.device.attributes import NO_FILE_OFFSET, NO_FILE_VERSION, NO_IMAGE_TYPE, NO_SERVER, NO_STACK_VERSION
from emulator.errors import InputError
from emulator.files import write_atomic
from emulator.ota.shared import SharedBytes, share

FORMAT = 1


class StateError(InputError):
    """A device state file that is not one this program wrote, or belongs to another device."""


@dataclass(frozen=True)
class ImageRef:
    """The identity of an image as a QNI Response offers it (SPEC.md §2.3)."""

    manufacturer_code: int
    image_type: int
    file_version: int
    image_size: int


@dataclass
class VerifiedImage:
    """A downloaded and verified image the device holds until it activates it. `data` is the shared copy of the
    image's bytes (equal images, one bytes object)."""

    ref: ImageRef
    stack_version: int
    data: bytes
    _shared: SharedBytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._shared = share(self.data)
        self.data = self._shared.data


class DownloadBuffer(bytearray):
    """The bytes of a download so far, for an image of `size` bytes. It reads as the zero-filled buffer of `size`
    bytes that blocks are written into (`len` is `size`, `bytes()` gives `size` bytes) but stores only up to the
    furthest byte written: a block past the end pads the gap with zeros first."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return self.prefix(self.size)

    def prefix(self, length: int) -> bytes:
        """The first `length` bytes (zeros where nothing was written)."""
        stored = bytearray.__len__(self)
        return bytes(memoryview(self)[:length]) + bytes(max(0, min(length, self.size) - stored))

    @overload
    def __setitem__(self, index: SupportsIndex, value: SupportsIndex, /) -> None: ...
    @overload
    def __setitem__(self, index: slice, value: Any, /) -> None: ...
    def __setitem__(self, index: SupportsIndex | slice, value: Any, /) -> None:
        if isinstance(index, slice) and isinstance(index.start, int) and index.start > bytearray.__len__(self):
            self.extend(bytes(index.start - bytearray.__len__(self)))
        bytearray.__setitem__(self, index, value)


@dataclass
class DeviceState:
    """The device's memory. The attribute-shaped fields are what the OTA client attributes read (SPEC.md §3.1);
    `file_offset` is also where a download resumes."""

    running_version: int
    running_stack_version: int
    running_image: bytes | None = None
    upgrade_server_id: t.EUI64 = NO_SERVER
    image_upgrade_status: int = 0
    file_offset: int = NO_FILE_OFFSET
    downloaded_file_version: int = NO_FILE_VERSION
    downloaded_stack_version: int = NO_STACK_VERSION
    image_type_id: int = NO_IMAGE_TYPE
    minimum_block_period: int = 0
    page_fallback: bool = False
    download: ImageRef | None = None
    partial: bytearray | None = field(default=None, repr=False)
    held: list[VerifiedImage] = field(default_factory=list)


def eui64_name(ieee: t.EUI64) -> str:
    return str(ieee).replace(":", "").upper()


class StateStore:
    """One device's files in `directory`."""

    def __init__(self, directory: str | os.PathLike[str], ieee: t.EUI64) -> None:
        self.directory = Path(directory)
        self.ieee = ieee
        self.name = eui64_name(ieee)
        self.json_path = self.directory / f"{self.name}.json"
        self.download_path = self.directory / f"{self.name}.download.bin"
        self.running_path = self.directory / f"{self.name}.running.bin"

    def held_path(self, image_type: int) -> Path:
        return self.directory / f"{self.name}.held-{image_type:04X}.bin"

    # -- writing ---------------------------------------------------------------------------------------------

    def save(self, state: DeviceState, *, partial: bool = False, held: bool = False, running: bool = False) -> None:
        """Write the JSON, and first the blobs flagged as changed (the partial download, held images, running
        image) — each flag costs a file write, so callers only set what changed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if partial:
            if state.download is not None and state.partial is not None:
                write_atomic(self.download_path, _prefix(state.partial, max(state.file_offset, 0)))
            else:
                _remove(self.download_path)
        if held:
            keep = set()
            for image in state.held:
                path = self.held_path(image.ref.image_type)
                write_atomic(path, image.data)
                keep.add(path.name)
            for stale in self.directory.glob(f"{self.name}.held-*.bin"):
                if stale.name not in keep:
                    _remove(stale)
        if running and state.running_image is not None:
            write_atomic(self.running_path, state.running_image)
        write_atomic(self.json_path, json.dumps(_to_json(self.ieee, state), indent=1, sort_keys=True))

    # -- reading ---------------------------------------------------------------------------------------------

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed run left half-written for this device; the ones removed."""
        stale = sorted(self.directory.glob(f".{self.name}.*.tmp")) if self.directory.is_dir() else []
        for path in stale:
            _remove(path)
        return stale

    def load(self) -> DeviceState | None:
        """The saved state, or None when this device has never saved one; `StateError` if it is unusable.
        Reading removes nothing: another process may be this device, writing (`remove_stale_temporaries` is for
        the device itself, when it starts)."""
        if not self.json_path.exists():
            return None
        source = str(self.json_path)
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StateError(f"{source}: not a readable device state file ({exc})") from None
        reader = _Reader(source, data)
        if reader.int("format", 8) != FORMAT:
            raise StateError(f"{source}: format {data.get('format')!r}, expected {FORMAT}")
        if reader.eui64("ieee") != self.ieee:
            raise StateError(f"{source}: belongs to device {data.get('ieee')}, expected {self.ieee}")
        state = DeviceState(
            running_version=reader.int("running_version", 32),
            running_stack_version=reader.int("running_stack_version", 16),
            upgrade_server_id=reader.eui64("upgrade_server_id"),
            image_upgrade_status=reader.int("image_upgrade_status", 8),
            file_offset=reader.int("file_offset", 32),
            downloaded_file_version=reader.int("downloaded_file_version", 32),
            downloaded_stack_version=reader.int("downloaded_stack_version", 16),
            image_type_id=reader.int("image_type_id", 16),
            minimum_block_period=reader.int("minimum_block_period", 16),
            page_fallback=reader.bool("page_fallback"),
        )
        if data.get("running_image"):
            state.running_image = share(self._blob(self.running_path, source)).data
        download = data.get("download")
        if download is not None:
            state.download = _Reader(source, download, "download.").ref()
            saved = self._blob(self.download_path, source) if self.download_path.exists() else b""
            state.file_offset = min(state.file_offset, len(saved), state.download.image_size)
            state.partial = DownloadBuffer(state.download.image_size)
            state.partial[0 : state.file_offset] = saved[: state.file_offset]
        held = data.get("held", [])
        if not isinstance(held, list):
            raise StateError(f"{source}: key 'held': expected a list")
        for index, entry in enumerate(held):
            item = _Reader(source, entry, f"held[{index}].")
            ref = item.ref()
            blob = self._blob(self.held_path(ref.image_type), source)
            if len(blob) != ref.image_size:
                raise StateError(
                    f"{source}: held image 0x{ref.image_type:04X} is {len(blob)} bytes, expected {ref.image_size}"
                )
            state.held.append(VerifiedImage(ref, item.int("stack_version", 16), blob))
        return state

    def _blob(self, path: Path, source: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise StateError(f"{source}: names {path.name}, which cannot be read ({exc.strerror})") from None


def _prefix(buffer: bytearray, length: int) -> bytes:
    """The first `length` bytes of a download buffer."""
    return buffer.prefix(length) if isinstance(buffer, DownloadBuffer) else bytes(buffer[:length])


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _ref_json(ref: ImageRef) -> dict[str, int]:
    return {
        "manufacturer_code": ref.manufacturer_code,
        "image_type": ref.image_type,
        "file_version": ref.file_version,
        "image_size": ref.image_size,
    }


def _to_json(ieee: t.EUI64, state: DeviceState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "ieee": str(ieee),
        "running_version": state.running_version,
        "running_stack_version": state.running_stack_version,
        "running_image": state.running_image is not None,
        "upgrade_server_id": str(state.upgrade_server_id),
        "image_upgrade_status": state.image_upgrade_status,
        "file_offset": state.file_offset,
        "downloaded_file_version": state.downloaded_file_version,
        "downloaded_stack_version": state.downloaded_stack_version,
        "image_type_id": state.image_type_id,
        "minimum_block_period": state.minimum_block_period,
        "page_fallback": state.page_fallback,
        "download": None if state.download is None else _ref_json(state.download),
        "held": [{**_ref_json(h.ref), "stack_version": h.stack_version} for h in state.held],
    }


class _Reader:
    """Typed access to one JSON object; every failure is a one-line `StateError` naming file and key."""

    def __init__(self, source: str, data: Any, prefix: str = "") -> None:
        if not isinstance(data, dict):
            raise StateError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a JSON object")
        self.source = source
        self.data = data
        self.prefix = prefix

    def _fail(self, key: str, expected: str) -> StateError:
        return StateError(f"{self.source}: key '{self.prefix}{key}': expected {expected}, got {self.data.get(key)!r}")

    def int(self, key: str, bits: int) -> int:
        value = self.data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
            raise self._fail(key, f"an integer 0..0x{(1 << bits) - 1:X}")
        return value

    def bool(self, key: str) -> bool:
        value = self.data.get(key)
        if not isinstance(value, bool):
            raise self._fail(key, "true or false")
        return value

    def eui64(self, key: str) -> t.EUI64:
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._fail(key, "an EUI-64 such as 00:db:12:34:56:78:90:a4")
        try:
            if not isinstance(value, str):
                raise TypeError(value)
            return t.EUI64.convert(value)
        except (ValueError, TypeError, AttributeError):
            raise self._fail(key, "an EUI-64 such as 00:db:12:34:56:78:90:a4") from None

    def ref(self) -> ImageRef:
        return ImageRef(
            manufacturer_code=self.int("manufacturer_code", 16),
            image_type=self.int("image_type", 16),
            file_version=self.int("file_version", 32),
            image_size=self.int("image_size", 32),
        )
