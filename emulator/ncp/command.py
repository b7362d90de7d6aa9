"""What an EZSP command handler of the emulated stack takes and gives.

A handler gets the command's parameters by their names in the active version's command table (bellows'
`COMMANDS`) and returns the response's values by the same names; statuses are `sl_Status` and the codec writes
them in the version's own status type. The stack keeps its handlers in one table, by command name
(`EmberStack.commands`), so a new command is one more entry (`EmberStack.add_command`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Args = dict[str, Any]
Values = dict[str, Any]
Handler = Callable[[Args], Values]
