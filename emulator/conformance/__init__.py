"""The conformance bench: checks a target — a PPMID/HCALCS (`device/`) or an OTA server (`server/`) — against
rules that cite the clause they enforce, and reports a verdict with the frames that decided it for each.

The core is the same for both benches: `check.py` (a check declared as data, and its play step and pure judge),
`verdict.py` (what a judge decides), `selection.py` (IDs to checks), `running.py` (the one run loop),
`results.py` and `reports/` (the report and its terminal, JSON, JUnit XML and HTML forms). `interface.py` is the
public device-under-test interface and `pytest_plugin.py` the pytest plugin; vendors import both by these paths.
"""
