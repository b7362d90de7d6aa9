"""CPU cost of Smart Energy key establishment (CBKE) in the pure-Python security package.

For each crypto suite it runs whole exchanges between an `Initiator` (the joining device, U) and a `Responder`
(the CHF, V) holding certificates from the test CA, and prints the process CPU time each side spends (ECQV
reconstruction of the partner key, ephemeral key generation, ECMQV, KDF and MACs, payload coding) and the total
for one key establishment. Then the cost of the primitives on each curve: a variable-base scalar multiplication
(Montgomery ladder), a fixed-base multiplication of G (comb table), a point decompression, one field product and
one field square. The budget for one whole suite-2 key establishment is 1 s of CPU.

The first fixed-base multiplication on a curve builds its table; that one-off cost is printed separately and kept
out of the per-exchange figures.

Usage: python tools/bench_cbke.py [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from emulator.security.ca import CertificateAuthority
from emulator.security.certs import CryptoSuite
from emulator.security.key_establishment import Established, Initiator, Message, Responder, Step
from emulator.security.koblitz import Curve

DEVICE = bytes.fromhex("000D6F0000BBBBBB")
CHF = bytes.fromhex("000D6F0000AAAAAA")


def _cpu_ms(work: Callable[[], object], rounds: int) -> float:
    start = time.process_time()
    for _ in range(rounds):
        work()
    return (time.process_time() - start) / rounds * 1000


def _exchange(suite: CryptoSuite, ca: CertificateAuthority) -> tuple[float, float]:
    """One key establishment; CPU seconds spent in the initiator and in the responder."""
    u = Initiator(ca.issue(DEVICE), CHF)
    v = Responder(ca.issue(CHF), DEVICE)
    spent = {"u": 0.0, "v": 0.0}

    def timed(side: str, call: Callable[[], Step]) -> Step:
        start = time.process_time()
        step = call()
        spent[side] += time.process_time() - start
        return step

    step = timed("u", lambda: u.start(0.0, v.supported_suites))
    to_v = True
    while step.outbound:
        message: Message = step.outbound[0]
        start = time.process_time()
        if to_v:
            step = v.receive_payload(message.COMMAND_ID, message.to_bytes(), 0.0)
        else:
            step = u.receive_payload(message.COMMAND_ID, message.to_bytes(), 0.0)
        spent["v" if to_v else "u"] += time.process_time() - start
        to_v = not to_v
    if not (isinstance(u.outcome, Established) and isinstance(v.outcome, Established)):
        raise SystemExit(f"suite {suite.value}: the exchange did not complete ({u.outcome}, {v.outcome})")
    return spent["u"], spent["v"]


def _primitives(curve: Curve, rounds: int) -> None:
    rng = random.Random(1)
    scalars = [rng.randrange(1, curve.n) for _ in range(rounds)]
    g = curve.generator
    start = time.process_time()
    curve.multiply_generator(1)
    table_ms = (time.process_time() - start) * 1000
    it = iter(scalars * 4)
    ladder = _cpu_ms(lambda: curve.multiply(next(it), g), rounds)
    comb = _cpu_ms(lambda: curve.multiply_generator(next(it)), rounds)
    encoded = curve.compress(curve.multiply_generator(scalars[0]))
    decompress = _cpu_ms(lambda: curve.decompress(encoded), rounds)
    field = curve.field
    a, b = scalars[0] & field.mask, scalars[-1] & field.mask
    mul_us = _cpu_ms(lambda: field.mul(a, b), 2000) * 1000
    sqr_us = _cpu_ms(lambda: field.sqr(a), 2000) * 1000
    print(
        f"  {curve.name}: k·P {ladder:6.1f} ms   k·G {comb:5.1f} ms (table {table_ms:.0f} ms once)   "
        f"decompress {decompress:4.2f} ms   field mul {mul_us:4.1f} µs   sqr {sqr_us:4.1f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="exchanges / operations averaged (default 10)")
    args = parser.parse_args()
    print("Primitives (CPU per operation):")
    for suite in CryptoSuite:
        _primitives(suite.curve, args.rounds)
    print("Key establishment (CPU per exchange, test CA certificates, table already built):")
    for suite in CryptoSuite:
        ca = CertificateAuthority.generate(suite)
        results = [_exchange(suite, ca) for _ in range(args.rounds)]
        u_ms = sum(r[0] for r in results) / len(results) * 1000
        v_ms = sum(r[1] for r in results) / len(results) * 1000
        verdict = "within" if u_ms + v_ms <= 1000 else "OVER"
        print(
            f"  suite {suite.value} ({suite.curve.name}): initiator {u_ms:6.1f} ms   responder {v_ms:6.1f} ms   "
            f"whole {u_ms + v_ms:6.1f} ms ({verdict} the 1 s budget)"
        )


if __name__ == "__main__":
    main()
