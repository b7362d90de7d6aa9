"""Terminal output shared by the commands that run a HAN: live progress and the outcome table.

Progress goes to stderr and only when stderr is a terminal (and not with `--json`), so piped output stays
clean. Few devices get a bar each; many get one aggregate bar, because a thousand bars help nobody.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import zigpy.types as t
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn
from rich.table import Table

from emulator.device import events as device_events
from emulator.han import DeviceSummary, Event

MAX_BARS = 12


class RunProgress:
    """Feeds device events into rich progress bars."""

    def __init__(self, summaries: dict[t.EUI64, DeviceSummary], *, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._summaries = summaries
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=Console(stderr=True)
        )
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
        if not self.enabled or not isinstance(event, device_events.DownloadStarted | device_events.Progress):
            return
        if len(self._summaries) > MAX_BARS:
            total = sum(s.size for s in self._summaries.values())
            done = sum(s.offset for s in self._summaries.values())
            if self._aggregate is None:
                self._aggregate = self._progress.add_task(f"{len(self._summaries)} devices", total=total)
            self._progress.update(self._aggregate, completed=done, total=total)
            return
        summary = self._summaries[event.ieee]
        task = self._tasks.get(event.ieee)
        if task is None:
            task = self._progress.add_task(f"{summary.kind.upper():6} {event.ieee}", total=summary.size or None)
            self._tasks[event.ieee] = task
        self._progress.update(task, completed=summary.offset, total=summary.size or None)


def outcome_table(summaries: Iterable[DeviceSummary], *, protocol_time: float, wall_time: float) -> Table:
    table = Table(
        title="Upgrade outcomes", caption=f"protocol time {_duration(protocol_time)}, wall time {wall_time:.2f} s"
    )
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
    _stdout_console().print(outcome_table(summaries, protocol_time=protocol_time, wall_time=wall_time))


def _stdout_console() -> Console:
    """rich assumes 80 columns when stdout is not a terminal; a piped table should not be cut to that."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
