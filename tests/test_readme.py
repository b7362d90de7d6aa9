"""Every shell block of README.md runs as written, in README order, in one scratch folder.

The README's commands run in the repository checkout (they name its `profiles/` folder), so the scratch folder
gets a copy of `profiles/`; every file a block uses is made by an earlier block. `ota-emu` commands run in this
process through click's CliRunner (fast, and the code under test is this checkout's); other commands (`head`,
`tshark`, `zigpy`) run in bash, and are skipped with the reason when the tool is not installed (as the other
tests that need tshark are). An HTML comment right before a block, invisible once rendered, says how to run it:

* `<!-- readme-test: skip REASON -->` — not run (real hardware); the test is skipped with that reason;
* `<!-- readme-test: exits 0 1 1 -->` — the exit status of each command, in order (otherwise every one is 0);
* `<!-- readme-test: background -->` — a server that runs until stopped: started as a subprocess, and the URL it
  prints replaces `tcp://127.0.0.1:PORT` in the blocks after it.

Two commands are never run: `python -m pip install ...` (installing would change the environment this suite runs
in, and needs the network; CI installs the project before it runs the tests) and `python -m pytest` (this test is
part of that run). The `ota-emu demo` that follows the first install does run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner

from emulator.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_RUN = ("python -m pip install", "python -m pytest")
PORT = "tcp://127.0.0.1:PORT"
URL = re.compile(r"tcp://127\.0\.0\.1:\d+")
BACKGROUND_START = 60.0  # seconds a background server may take to print its URL


@dataclass(frozen=True)
class Block:
    line: int
    text: str
    marker: str

    @property
    def id(self) -> str:
        return f"line{self.line}"


def shell_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match.group(1) != "sh":
            continue
        before = text[: match.start()].rstrip().splitlines()
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(line, match.group(2), marker.group(1) if marker else ""))
    return blocks


def commands(block: str) -> list[str]:
    """One string per command: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


@dataclass
class Session:
    """The scratch folder every block runs in, what later blocks substitute, and the servers to stop."""

    folder: Path
    substitutions: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def substitute(self, command: str) -> str:
        for placeholder, value in self.substitutions.items():
            command = command.replace(placeholder, value)
        return command

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "profiles", folder / "profiles")
    here = Path.cwd()
    os.chdir(folder)
    state = Session(folder)
    try:
        yield state
    finally:
        os.chdir(here)
        for server in state.servers:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def ota_emu(command: str) -> tuple[int, str]:
    """Run one `ota-emu ...` command line in this process: its exit status and output (stdout then stderr)."""
    for inner in re.findall(r"\$\((ota-emu [^)]*)\)", command):
        code, out = ota_emu(inner)
        assert code == 0, f"$({inner}) exited {code}: {out}"
        command = command.replace(f"$({inner})", out.strip())
    result = CliRunner().invoke(main, shlex.split(command)[1:], prog_name="ota-emu")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


def other(command: str, session: Session) -> tuple[int, str]:
    done = subprocess.run(
        ["bash", "-c", command], cwd=session.folder, env=session.env(), capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout + done.stderr


def start_background(command: str, session: Session) -> None:
    """Start a server (`ota-emu ncp ...`) as a subprocess and learn the URL it prints."""
    args = shlex.split(command)
    assert args[0] == "ota-emu", command
    server = subprocess.Popen(
        [sys.executable, "-m", "emulator", *args[1:]],
        cwd=session.folder,
        env=session.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    session.servers.append(server)
    found = threading.Event()
    seen: list[str] = []

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            seen.append(line)
            if not found.is_set() and (match := URL.search(line)):
                session.substitutions[PORT] = match.group(0)
                found.set()

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(BACKGROUND_START), f"{command} printed no tcp:// URL: {''.join(seen)}"


BLOCKS = shell_blocks()


def test_the_readme_has_the_blocks_this_test_knows() -> None:
    markers = {block.marker.split()[0] for block in BLOCKS if block.marker}
    assert markers <= {"skip", "exits", "background"}, markers
    assert sum(block.marker.startswith("background") for block in BLOCKS) == 1
    assert any(PORT in block.text for block in BLOCKS if not block.marker.startswith("background"))


# The blocks run in order in one folder (a later block uses what an earlier one made): under pytest-xdist they
# stay together on one worker.
@pytest.mark.long
@pytest.mark.xdist_group("readme")
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_readme_block(block: Block, session: Session) -> None:
    if block.marker.startswith("skip"):
        pytest.skip(block.marker.removeprefix("skip").strip())
    lines = commands(block.text)
    if block.marker.startswith("background"):
        [command] = lines
        start_background(command, session)
        return
    expected = [int(code) for code in block.marker.split()[1:]] if block.marker.startswith("exits") else []
    parts = [part.strip() for line in lines for part in line.split(" && ")]
    runnable = [part for part in parts if not part.startswith(NOT_RUN)]
    expected = expected or [0] * len(runnable)
    assert len(expected) == len(runnable), f"README line {block.line}: {len(runnable)} commands, exits {expected}"
    not_installed = []
    for written, code in zip(runnable, expected, strict=True):
        command = session.substitute(written)
        tool = shlex.split(command)[0]
        if tool != "ota-emu" and shutil.which(tool) is None:
            not_installed.append(command)  # like the other tests that need tshark: skipped, with the reason
            continue
        status, output = ota_emu(command) if tool == "ota-emu" else other(command, session)
        assert status == code, f"README line {block.line}: `{command}` exited {status}, expected {code}:\n{output}"
    if not_installed:
        pytest.skip(f"not installed, so not run: {'; '.join(not_installed)}")
