"""A virtual Silicon Labs EZSP network co-processor: ASH and EZSP bytes over TCP or a pty, an emulated
EmberZNet coordinator behind them, and the virtual air in front (`server.VirtualNcp`, `ota-emu ncp`).

Layers, bottom up: `ash` (framing, pure) -> `ash_protocol` (the NCP side of the link) -> `ezsp` (frames per
protocol version, pure) -> `host` (one host connection) -> `stack` with `tables` and `messaging` (EmberZNet semantics,
the air bridge) and `zdo` (the coordinator's own ZDO answers, pure); `state` holds what survives a restart.
"""
