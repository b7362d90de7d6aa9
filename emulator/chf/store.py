"""The CHF's image store: the upgrade files it holds, each with the DeviceIDList it was received for.

In GB the CHF receives an image from the DCC for an explicit list of target EUI-64s (SR 11.4 for PPMIDs,
SR 11.1 for HCALCSs) and serves it only to those (SPEC.md §8.6, UNCONFIRMED detail: a setting). An entry with
an empty list is served to any device, as a plain Zigbee OTA server would.

The serialized file is kept once as bytes: every Image Block Response is a slice of it, so the server holds
no per-client copy. Those bytes are the process's shared copy of the file (`ota.shared`): a device that has
downloaded and verified the image holds the same bytes object, not a copy of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zigpy.types as t

from emulator.errors import InputError
from emulator.ota import image as ota_image
from emulator.ota.shared import SharedBytes, share
from emulator.profiles import ActivationTime, ChfProfile


@dataclass(eq=False)
class HeldImage:
    """One upgrade file held by the CHF."""

    image: ota_image.UpgradeImage
    data: bytes
    device_ids: frozenset[t.EUI64] = frozenset()
    activation: ActivationTime | None = None
    source: str = "<memory>"
    key: tuple[int, int, int] = field(init=False)
    _shared: SharedBytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        header = self.image.header
        self.key = (header.manufacturer_id, header.image_type, header.file_version)
        self._shared = share(self.data)
        self.data = self._shared.data

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        device_ids: Iterable[t.EUI64] = (),
        activation: ActivationTime | None = None,
        source: str = "<memory>",
    ) -> HeldImage:
        image = ota_image.parse(data, source=source)
        return cls(image, image.serialize(), frozenset(device_ids), activation, source)

    @property
    def manufacturer_id(self) -> int:
        return self.key[0]

    @property
    def image_type(self) -> int:
        return self.key[1]

    @property
    def file_version(self) -> int:
        return self.key[2]

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def hardware_range(self) -> tuple[int, int] | None:
        header = self.image.header
        if header.minimum_hardware_version is None or header.maximum_hardware_version is None:
            return None
        return int(header.minimum_hardware_version), int(header.maximum_hardware_version)

    @property
    def destination(self) -> t.EUI64 | None:
        return self.image.header.upgrade_file_destination

    def targets(self, ieee: t.EUI64) -> bool:
        return not self.device_ids or ieee in self.device_ids


class ImageStore:
    """The images a CHF holds, looked up by (manufacturer, image type, version) for block requests."""

    def __init__(self, images: Iterable[HeldImage] = ()) -> None:
        self._images: dict[tuple[int, int, int], HeldImage] = {}
        for held in images:
            self.add(held)

    def add(self, held: HeldImage) -> HeldImage | None:
        """Hold `held`; returns the image it replaced (same manufacturer, type and version), if any."""
        previous = self._images.get(held.key)
        self._images[held.key] = held
        return previous

    def remove(self, held: HeldImage) -> None:
        self._images.pop(held.key, None)

    def get(self, manufacturer_id: int, image_type: int, file_version: int) -> HeldImage | None:
        return self._images.get((manufacturer_id, image_type, file_version))

    def __iter__(self) -> Iterator[HeldImage]:
        return iter(list(self._images.values()))

    def __len__(self) -> int:
        return len(self._images)

    @classmethod
    def from_profile(cls, profile: ChfProfile, extra: Iterable[HeldImage] = ()) -> ImageStore:
        """Images named by the profile's [[images]] entries and its image_dir, then `extra` (e.g. `--image`)."""
        store = cls()
        for path, entry in profile.image_paths():
            data = ota_image.read_file(path)
            store.add(
                HeldImage.from_bytes(data, device_ids=entry.device_ids, activation=entry.activation, source=str(path))
            )
        if profile.image_dir is not None:
            base = Path(profile.source).parent if profile.source != "<built-in>" else Path.cwd()
            folder = base / profile.image_dir
            if not folder.is_dir():
                raise InputError(f"{profile.source}: key 'chf.image_dir': {folder} is not a folder of upgrade files")
            for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
                store.add(HeldImage.from_bytes(ota_image.read_file(path), source=str(path)))
        for held in extra:
            store.add(held)
        return store


def load_images(paths: Iterable[str | os.PathLike[str]], device_ids: Iterable[t.EUI64] = ()) -> list[HeldImage]:
    targets = tuple(device_ids)
    return [HeldImage.from_bytes(ota_image.read_file(p), device_ids=targets, source=str(p)) for p in paths]
