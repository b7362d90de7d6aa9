"""The in-process GB HAN and its GB side: asyncio code that wires the layers below into one run.

`network` holds the HAN itself (the virtual air, the CHF and the emulated devices, and the summary of each
device's upgrade); `security` gives it Smart Energy security (who may join, which keys each node holds, CBKE);
`gbcs` reports the run as GB does, in signed GBCS messages. The pure GBCS pieces they use live in `emulator.gb`.
"""
