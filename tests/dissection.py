"""tshark's dissection of a capture, read once and asked many questions.

Starting tshark costs a quarter of a second of CPU (its dissectors load); reading a few hundred frames costs next
to nothing. So a test module asks tshark once per capture and key table for every field its questions need
(`-T fields`, every occurrence of a field joined with commas, as tshark prints it), and answers its display
filters from those fields: a protocol in the frame is in `frame.protocols`, a field compared with `==` matches
when any of its occurrences does, and a frame in trouble carries `_ws.malformed` among its protocols or an
expert item of severity warning or worse (`_ws.malformed || _ws.expert.severity >= warning`).

zigpy-cli's `ota reconstruct-from-pcaps` (`zigpy_reconstruct`) is the other reader: it runs tshark itself and
rebuilds every OTA image it can from the Image Block Responses it finds.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

FIELDS = (
    "frame.number", "frame.protocols", "frame.time_epoch", "_ws.expert.severity",
    "wpan.fcs_ok", "wpan.dst16", "wpan.src16", "wpan.dst_pan", "wpan.seq_no",
    "zbee_nwk.security", "zbee_nwk.dst", "zbee_nwk.src", "zbee_nwk.seqno", "zbee.sec.key_id",
    "zbee_aps.security", "zbee_aps.cluster", "zbee_aps.zdp_cluster", "zbee_aps.profile", "zbee_aps.dst",
    "zbee_aps.src", "zbee_aps.cmd.id", "zbee_aps.cmd.key_type", "zbee_aps.cmd.key", "zbee_aps.cmd.seqno",
    "zbee_zcl_general.ota.cmd.srv_rx.id", "zbee_zcl_general.ota.cmd.srv_tx.id", "zbee_zcl_general.ota.file.offset",
    "zbee_zcl_se.ke.cmd.srv_rx.id", "zbee_zcl_se.ke.cmd.srv_tx.id",
)  # fmt: skip

# epan/proto.h: PI_WARN; the severities above it are PI_ERROR and PI_SEVERITY_MASK's top.
WARNING = 0x00600000

OTA_IDS = ("zbee_zcl_general.ota.cmd.srv_rx.id", "zbee_zcl_general.ota.cmd.srv_tx.id")
OTA_ROW = (*OTA_IDS, "zbee_zcl_general.ota.file.offset")


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame's fields as tshark printed them ("" for a field the frame does not carry)."""

    fields: dict[str, str]

    def __getitem__(self, field: str) -> str:
        return self.fields[field]

    def has(self, protocol: str) -> bool:
        """The display filter `protocol`: the frame holds that protocol's layer."""
        return protocol in self.fields["frame.protocols"].split(":")

    def carries(self, field: str) -> bool:
        """The display filter `field`: the frame carries the field."""
        return self.fields[field] != ""

    def equals(self, field: str, value: int) -> bool:
        """The display filter `field == value`: some occurrence of the field has the value."""
        return any(int(text, 0) == value for text in self.fields[field].split(",") if text)

    def troubled(self) -> bool:
        """`_ws.malformed || _ws.expert.severity >= warning`."""
        severities = [int(text, 0) for text in self.fields["_ws.expert.severity"].split(",") if text]
        return self.has("_ws.malformed") or any(severity >= WARNING for severity in severities)


@functools.cache
def _dissect(pcap: Path, options: tuple[str, ...]) -> tuple[Frame, ...]:
    fields = [option for field in FIELDS for option in ("-e", field)]
    command = ["tshark", "-r", str(pcap), *options, "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", *fields]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(Frame(dict(zip(FIELDS, line.split("\t"), strict=True))) for line in done.stdout.splitlines())


def dissect(pcap: Path, options: Sequence[str] = ()) -> tuple[Frame, ...]:
    """Every frame of `pcap` as tshark dissects it with `options` (its key table), from one tshark run per
    capture and options."""
    return _dissect(pcap, tuple(options))


def where(frames: Sequence[Frame], keep: Callable[[Frame], bool], *fields: str) -> list[list[str]]:
    """`tshark -Y FILTER -T fields -e FIELD...`: the rows of the frames `keep` passes."""
    return [[frame[field] for field in fields] for frame in frames if keep(frame)]


def ota_rows(frames: Sequence[Frame]) -> list[list[str]]:
    """(client-to-server id, server-to-client id, file offset) of every OTA command tshark could read."""
    return where(frames, lambda frame: any(frame.carries(field) for field in OTA_IDS), *OTA_ROW)


def zigpy_reconstruct(pcap: Path, output: Path, network_keys: Iterable[str]) -> list[Path]:
    """The OTA images zigpy-cli's `zigpy ota reconstruct-from-pcaps --output-root OUTPUT [--add-network-key KEY]...
    PCAP` writes (sorted). The command runs in this process through click's runner, as its own `ota` group: a
    `zigpy` process would only add an interpreter start and zigpy's imports (a second of CPU) to the same code and
    the same tshark run, and the top-level `zigpy` group installs coloured logging on the root logger."""
    from zigpy_cli.ota import ota  # zigpy-cli's own command group: imported by the few tests that run it

    output.mkdir()
    args = ["reconstruct-from-pcaps", "--output-root", str(output)]
    for key in network_keys:
        args += ["--add-network-key", key]
    done = CliRunner().invoke(ota, [*args, str(pcap)], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return sorted(output.glob("*.ota"))
