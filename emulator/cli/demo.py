"""`ota-emu demo`: the whole product on built-in defaults, in a few seconds."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import click
from rich.console import Console

from emulator import keys
from emulator.chf.store import HeldImage
from emulator.cli.params import example
from emulator.cli.run import run_han
from emulator.device import events as device_events
from emulator.files import check_output_dir, write_atomic
from emulator.gb.codes import ActivationResponse
from emulator.han.gbcs import HanGbcs
from emulator.han.network import Event, Han, HanOptions
from emulator.ota.image import build_gb
from emulator.ota.signing import manufacturer_image_hash, sign_image, verify_image
from emulator.profiles import DeviceProfile, bundled, load_chf, load_device

PAYLOAD_SIZE = 32 * 1024
NEW_VERSION = 0x00000002


class Story:
    """The GB moments of the run, in protocol time: a PPMID activates on the Upgrade End Response; an HCALCS
    holds its verified image, still running the old version, until a hash-checked Activate Firmware (CS06)."""

    def __init__(self, profiles: list[DeviceProfile]) -> None:
        self._profiles = {p.ieee: p for p in profiles}
        self.lines: list[str] = []

    def __call__(self, event: Event) -> None:
        de = device_events
        profile = self._profiles.get(event.ieee) if isinstance(event, de.DeviceEvent) else None
        if profile is None:
            return
        kind = profile.kind
        at = f"{event.at:8.1f} s  {kind.upper():6}"
        if isinstance(event, de.ImageVerified) and event.ok:
            self.lines.append(f"{at} downloaded 0x{event.version:08X} and verified its signature")
        elif isinstance(event, de.WaitingToUpgrade):
            self.lines.append(
                f"{at} told to wait (Upgrade End Response, UpgradeTime 0xFFFFFFFF): holds 0x{event.version:08X}, "
                f"keeps running 0x{profile.file_version:08X}"
            )
        elif isinstance(event, de.Activated) and kind == "ppmid":
            done = "now runs" if event.success else "failed to activate"
            self.lines.append(f"{at} activated on the Upgrade End Response: {done} 0x{event.new_version:08X} (CS09)")
        elif isinstance(event, de.ActivationOutcome):
            outcome = "now runs" if event.response_code == ActivationResponse.SUCCESS else "still runs"
            self.lines.append(
                f"{at} Activate Firmware (CS06) with the Manufacturer Image Hash: "
                f"{event.response_code.name.lower()}, {outcome} 0x{event.version:08X}"
            )


def demo_payload(size: int = PAYLOAD_SIZE, seed: int = 0x0DB) -> bytes:
    """A reproducible stand-in for a Manufacturer Image (the same bytes on every machine)."""
    return random.Random(seed).randbytes(size)


@click.command("demo", epilog=example("ota-emu demo", "ota-emu demo --out demo/ --json"))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), help="Keep the demo key and images here.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def command(out: Path | None, as_json: bool) -> int:
    """Build and sign GB Upgrade Images with a fresh demo key, then upgrade one emulated PPMID (distribution and
    activation in one step) and one HCALCS (held, then activated by a hash-checked Activate Firmware command)
    from the in-process CHF, on virtual time."""
    if out is not None:
        check_output_dir(out, "a folder for the demo key, images and alert log")
    console = Console(stderr=True, quiet=as_json, soft_wrap=True)
    with tempfile.TemporaryDirectory(prefix="ota-emu-demo-") as scratch:
        folder = (out or Path(scratch)).resolve()  # absolute: a profile reads paths relative to its own file
        folder.mkdir(parents=True, exist_ok=True)
        key = keys.generate_private_key()
        write_atomic(folder / "demo-signer.key.pem", keys.private_key_pem(key), mode=0o600)
        signer = folder / "demo-signer.pub.pem"
        write_atomic(signer, keys.public_key_pem(key.public_key()))
        console.print(f"[bold]1.[/] Generated a P-256 demo signing key ({signer.name})")

        ppmid = load_device(bundled("ppmid")).replace(signers=(str(signer),), require_signature=True)
        supplier = keys.generate_private_key()
        supplier_signer = folder / "demo-supplier.pub.pem"
        write_atomic(supplier_signer, keys.public_key_pem(supplier.public_key()))
        hcalcs = load_device(bundled("hcalcs")).replace(
            signers=(str(signer),), require_signature=True, supplier_signer=str(supplier_signer)
        )
        images = []
        for step, profile in enumerate((ppmid, hcalcs), start=2):
            image = build_gb(
                profile.manufacturer_code,
                profile.image_type,
                NEW_VERSION,
                payload=demo_payload(seed=profile.image_type),
                header_string=f"ota-emu demo {profile.kind.upper()} image",
                hw_min=0x1111,
                hw_max=0x1211,
            )
            image = sign_image(image, key)
            path = folder / f"{profile.kind}-0x{NEW_VERSION:08X}.ota"
            write_atomic(path, image.serialize())
            check = verify_image(image, [key.public_key()])
            images.append(HeldImage(image, image.serialize(), frozenset({profile.ieee}), source=str(path)))
            console.print(
                f"[bold]{step}.[/] Built {path.name}: GB Upgrade Image, {len(image.serialize())} bytes, "
                f"mfr 0x{profile.manufacturer_code:04X} type 0x{profile.image_type:04X}, HW 0x1111..0x1211, "
                f"signature {'verifies' if check.ok else 'FAILS'}; Manufacturer Image Hash "
                f"{manufacturer_image_hash(image).hex()[:16]}…"
            )
        console.print("[bold]4.[/] Upgrading a PPMID and an HCALCS from the in-process CHF (virtual time)…")
        options = HanOptions(activate_hcalcs=True)
        han = Han(load_chf(bundled("chf")), [ppmid, hcalcs], images, options)
        gbcs = HanGbcs(han, supplier_key=supplier)
        story = Story([ppmid, hcalcs])
        han.add_listener(story)
        code = run_han(han, limit=7 * 86400.0, virtual=True, as_json=as_json)
        console.print("[bold]5.[/] What each device did, in protocol time:")
        for line in story.lines:
            console.print(f"  {line}", highlight=False)
        alert_log = folder / "alerts.jsonl"
        gbcs.alert_log.write(alert_log)
        kept = str(alert_log) if out else f"{alert_log.name} (keep it with --out DIR)"
        console.print(f"[bold]6.[/] {gbcs.alert_log.summary()}, signed; alert log {kept}")
        return code
