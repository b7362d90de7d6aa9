"""The error types that reach the user as a single line.

Every module that rejects input (files, frames, profiles, keys, CLI values) raises a subclass of `InputError`
whose message names the input and what was expected; the CLI prints it on one line and exits 2. A run that
cannot finish (`RunFailure`, such as the virtual clock's `Stalled`) is one line and exit 1. They live here, apart
from the code that raises them, so the CLI catches them without importing that code.
"""


class InputError(Exception):
    """Bad input from outside the program: a file, a frame, a profile, a key or a command-line value."""


class RunFailure(Exception):
    """A run that could not finish for a reason the program found itself (virtual time stalled, say): the CLI
    prints it on one line and exits 1."""
