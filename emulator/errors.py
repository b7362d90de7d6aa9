"""The one error type that reaches the user as a single line.

Every module that rejects input (files, frames, profiles, keys, CLI values) raises a subclass of `InputError`
whose message names the input and what was expected; the CLI prints it on one line and exits 2.
"""


class InputError(Exception):
    """Bad input from outside the program: a file, a frame, a profile, a key or a command-line value."""


class RunFailure(Exception):
    """A run that could not finish for a reason the program found itself (virtual time stalled, say): the CLI
    prints it on one line and exits 1."""
