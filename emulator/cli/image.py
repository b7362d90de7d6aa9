"""`ota-emu image ...`: inspect, build, sign, verify and hash OTA upgrade files."""

import click


@click.group("image")
def command() -> None:
    """Read, build, sign and verify Zigbee OTA and GB Upgrade Image files."""
