"""Terminal output shared by the commands that run a HAN: live progress and the outcome table.

Progress goes to stderr and only when stderr is a terminal (and not with `--json`), so piped output stays
clean. Few devices get a bar each; many get one aggregate bar, because a thousand bars help nobody. Each bar
says what its device is doing (`Transfer.phase`) beside the percentage, the rate and the time left, so a bar
at 100 % says why it is still open ("held: waiting for Activate Firmware"); `progress_text` formats that.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import zigpy.types as t
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from emulator.device import events as device_events
from emulator.han.network import DeviceSummary, Event

MAX_BARS = 12
NO_IMAGE_AVAILABLE = 0x98  # ZCL status of a Query Next Image Response without an image


class StopReason(StrEnum):
    """Why a run on a stick stopped; the value is what the JSON `stopped` field and the last line say."""

    OUTCOME = "outcome"  # `ota-emu device`: the device has its outcome
    OUTCOMES = "outcomes"  # `ota-emu chf`: every target has its transfer outcome
    SIGNAL = "signal"  # Ctrl-C or SIGTERM
    UNTIL = "until"  # --until ran out


@dataclass(slots=True)
class Transfer:
    """One device's download as its progress line shows it. Times are seconds on the run's clock (protocol time
    for `run`, wall time for `chf`), so the rate is the one the protocol achieved."""

    phase: str = "waiting to query"
    offset: int = 0
    size: int = 0
    started_at: float | None = None
    start_offset: int = 0
    last_at: float | None = None

    def start(self, offset: int, size: int, at: float) -> None:
        self.offset, self.size, self.start_offset = offset, size, offset
        self.started_at = self.last_at = at
        self.phase = "downloading"

    def advance(self, offset: int, at: float) -> None:
        if self.started_at is None:
            self.started_at, self.start_offset = at, offset
        self.offset, self.last_at = max(self.offset, offset), at

    @property
    def rate(self) -> float | None:
        """Bytes per second since the download started (or resumed); None until there is a span to measure."""
        if self.started_at is None or self.last_at is None or self.last_at <= self.started_at:
            return None
        return (self.offset - self.start_offset) / (self.last_at - self.started_at)

    @property
    def eta(self) -> float | None:
        rate = self.rate
        if not rate or not self.size:
            return None
        return max(0, self.size - self.offset) / rate


def progress_text(transfer: Transfer) -> str:
    """The text beside a device's bar: percentage, and while downloading the rate and the time left; then what
    the device is doing. "  100 %  held: waiting for Activate Firmware"."""
    parts = []
    if transfer.size:
        parts.append(f"{min(100, transfer.offset * 100 // transfer.size):3d} %")
    if transfer.phase == "downloading":
        rate, eta = transfer.rate, transfer.eta
        parts.append("--- B/s" if rate is None else f"{_bytes(rate)}/s")
        parts.append("ETA --" if eta is None else f"ETA {_duration(eta)}")
    parts.append(transfer.phase)
    return "  ".join(parts)


def aggregate_text(transfers: list[Transfer], devices: int) -> str:
    """The one line for many devices: bytes so far and how many devices are in each phase (the phase up to its
    first detail), largest group first: "1.2 MB of 3.4 MB  12 downloading, 3 held, 1 querying the CHF"."""
    done = sum(t.offset for t in transfers)
    total = sum(t.size for t in transfers)
    groups: dict[str, int] = {}
    for transfer in transfers:
        phase = transfer.phase.split(":")[0].split(" (")[0]
        groups[phase] = groups.get(phase, 0) + 1
    if devices > len(transfers):
        groups["waiting to query"] = groups.get("waiting to query", 0) + devices - len(transfers)
    counts = ", ".join(f"{n} {phase}" for phase, n in sorted(groups.items(), key=lambda item: (-item[1], item[0])))
    return f"{_bytes(done)} of {_bytes(total)}  {counts}" if total else counts


class StatusColumn(ProgressColumn):
    """Renders a bar's `status` field: a callable, so a line that counts down (joining open for N s) stays live."""

    def render(self, task: Task) -> Text:
        status: Callable[[], str] | None = task.fields.get("status")
        return Text(status() if status is not None else "")


def device_phase(event: Event, transfer: Transfer) -> None:
    """Move `transfer` on with one device event (the OTA client's side of the upgrade, ZCL7 chapter 11)."""
    if isinstance(event, device_events.QuerySent) and transfer.started_at is None:
        transfer.phase = "querying the CHF"
    elif isinstance(event, device_events.QueryAnswered) and transfer.started_at is None:
        no_image = event.status is not None and event.status == NO_IMAGE_AVAILABLE
        transfer.phase = "no image for it (NO_IMAGE_AVAILABLE)" if no_image else "no answer to its query"
    elif isinstance(event, device_events.ImageOffered) and not event.accepted:
        transfer.phase = f"declined the offer: {event.reason}"
    elif isinstance(event, device_events.DownloadStarted):
        transfer.start(event.offset, event.size, event.at)
    elif isinstance(event, device_events.Progress):
        transfer.size = event.size or transfer.size
        transfer.advance(event.offset, event.at)
        transfer.phase = "verifying" if transfer.size and event.offset >= transfer.size else "downloading"
    elif isinstance(event, device_events.WaitingForData):
        transfer.phase = f"waiting for data (WAIT_FOR_DATA, {_duration(event.delay)})"
    elif isinstance(event, device_events.ImageVerified) and not event.ok:
        transfer.phase = f"rejected the image: {event.reason}"
    elif isinstance(event, device_events.UpgradeEndSent) and event.status == 0:
        transfer.phase = "waiting for Upgrade End Response"
    elif isinstance(event, device_events.WaitingToUpgrade):
        # Told to wait (Upgrade End Response UpgradeTime 0xFFFFFFFF, ZCL7 chapter 11) or kept for an out-of-band
        # activation: in GB either way the Activate Firmware command (GBCS CS06) is what the device waits for.
        transfer.phase = "held: waiting for Activate Firmware"
    elif isinstance(event, device_events.CountdownStarted):
        transfer.phase = f"activating in {_duration(event.delay)}"
    elif isinstance(event, device_events.Activated):
        transfer.phase = f"running 0x{event.new_version:08X}" if event.success else "activation failed"
    elif isinstance(event, device_events.DownloadAborted):
        transfer.phase = f"aborted: {event.reason}"


class RunProgress:
    """Feeds device events into rich progress bars, one per device with its phase, rate and time left."""

    def __init__(self, summaries: dict[t.EUI64, DeviceSummary], *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._summaries = summaries
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), StatusColumn(), console=Console(stderr=True)
        )
        self.transfers: dict[t.EUI64, Transfer] = {}
        self._tasks: dict[t.EUI64, TaskID] = {}
        self._aggregate: TaskID | None = None

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()

    def __call__(self, event: Event) -> None:
        if not self.enabled or not isinstance(event, device_events.DeviceEvent):
            return
        transfer = self.transfers.setdefault(event.ieee, Transfer())
        device_phase(event, transfer)
        if len(self._summaries) > MAX_BARS:
            total = sum(s.size for s in self._summaries.values())
            done = sum(s.offset for s in self._summaries.values())
            if self._aggregate is None:
                self._aggregate = self._progress.add_task(f"{len(self._summaries)} devices", total=total)
            text = aggregate_text(list(self.transfers.values()), len(self._summaries))
            self._progress.update(self._aggregate, completed=done, total=total or None, status=lambda: text)
            return
        summary = self._summaries.get(event.ieee)
        if summary is None:
            return
        task = self._tasks.get(event.ieee)
        if task is None:
            task = self._progress.add_task(
                f"{summary.kind.upper():6} {event.ieee}", total=transfer.size or None, status=lambda: ""
            )
            self._tasks[event.ieee] = task
        text = progress_text(transfer)
        self._progress.update(task, completed=transfer.offset, total=transfer.size or None, status=lambda: text)


def outcome_table(
    summaries: Iterable[DeviceSummary], *, protocol_time: float, wall_time: float, interrupted: str | None = None
) -> Table:
    """The outcome of every device; an interrupted run says so in its title (pending rows were still open)."""
    title = "Upgrade outcomes" if interrupted is None else f"Upgrade outcomes so far (interrupted by {interrupted})"
    table = Table(title=title, caption=f"protocol time {_duration(protocol_time)}, wall time {wall_time:.2f} s")
    summaries = list(summaries)
    secured = any(s.security for s in summaries)  # the column appears only on runs with Smart Energy security
    for column in ("device", "kind", "EUI-64", "from", "to", "result", "bytes", "finished", "note"):
        table.add_column(column)
    if secured:
        table.add_column("security")
    for index, s in enumerate(summaries, 1):
        table.add_row(
            str(index),
            s.kind.upper(),
            str(s.ieee),
            f"0x{s.start_version:08X}",
            f"0x{s.version:08X}",
            s.result,
            f"{s.offset}/{s.size}" if s.size else "-",
            _duration(s.finished_at) if s.finished_at is not None else "-",
            s.reason,
            *([s.security or "-"] if secured else []),
        )
    return table


def print_outcome(
    summaries: list[DeviceSummary],
    *,
    protocol_time: float,
    wall_time: float,
    as_json: bool,
    extra: dict[str, Any] | None = None,
    interrupted: str | None = None,
) -> None:
    if as_json:
        document = {
            "protocol_time_s": round(protocol_time, 3),
            "wall_time_s": round(wall_time, 3),
            "devices": [s.as_dict() for s in summaries],
            **(extra or {}),
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    _stdout_console().print(
        outcome_table(summaries, protocol_time=protocol_time, wall_time=wall_time, interrupted=interrupted)
    )


def _stdout_console() -> Console:
    """rich assumes 80 columns when stdout is not a terminal; a piped table should not be cut to that."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _bytes(count: float) -> str:
    if count < 1000:
        return f"{count:.0f} B"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1_000_000:.1f} MB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
