"""Device conformance bench speed: a full run (every check) of the bundled PPMID and HCALCS on virtual time.

Prints, per device, the wall time of the whole run (the target is under 60 s for one PPMID), the protocol time it
covered, the CPU time, and the verdict counts; with --repeat N the best and worst of N runs. With --durations,
also the protocol seconds of every check per device, and the table `emulator/conformance/device/durations.py` holds
(per device kind, rounded up to 10 s).

Usage: python tools/bench_conformance.py [--repeat N] [--profile PATH ...] [--durations]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from emulator.conformance.device.bench import DeviceTarget, run_device_checks
from emulator.conformance.reports.text import counts_text
from emulator.profiles import bundled, load_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per device (best and worst are printed)")
    parser.add_argument("--profile", type=Path, action="append", help="device profile (default: bundled PPMID, HCALCS)")
    parser.add_argument("--durations", action="store_true", help="print each check's protocol seconds")
    args = parser.parse_args()
    paths = args.profile or [bundled("ppmid"), bundled("hcalcs")]
    durations: dict[str, list[tuple[str, float]]] = {}
    print(f"{'device':<44} {'checks':>6} {'wall s':>16} {'CPU s':>7} {'protocol h':>10}  verdicts")
    for path in paths:
        profile = load_device(path)
        walls = []
        for _ in range(args.repeat):
            cpu = time.process_time()
            wall = time.perf_counter()
            report = run_device_checks(DeviceTarget(profile=profile))
            walls.append(time.perf_counter() - wall)
            cpu = time.process_time() - cpu
        wall_text = f"{min(walls):.2f}" + (f" .. {max(walls):.2f}" if len(walls) > 1 else "")
        name = f"{profile.kind.upper()} {profile.ieee}"
        print(
            f"{name:<44} {len(report.results):>6} {wall_text:>16} {cpu:>7.2f} {report.protocol_time / 3600:>10.1f}  "
            f"{counts_text(report)}"
        )
        for result in report.results:
            durations.setdefault(result.check.id, []).append((profile.kind, result.duration))
    if args.durations:
        print(f"\n{'check':<8} " + " ".join(f"{'protocol s ' + k:>20}" for k, _ in next(iter(durations.values()))))
        for check_id, figures in durations.items():
            print(f"{check_id:<8} " + " ".join(f"{seconds:>20.1f}" for _, seconds in figures))
        print("\nEXPECTED_S = {")
        for check_id, figures in durations.items():
            rounded = ", ".join(f'"{kind}": {math.ceil(seconds / 10) * 10:.0f}' for kind, seconds in figures)
            print(f'    "{check_id}": {{{rounded}}},')
        print("}")


if __name__ == "__main__":
    main()
