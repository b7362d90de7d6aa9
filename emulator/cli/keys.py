"""`ota-emu keys ...`: manufacturer signing keys."""

import click


@click.group("keys")
def command() -> None:
    """Generate P-256 signing keys for Manufacturer Image signatures."""
