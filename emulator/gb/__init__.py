"""GBCS messages of the firmware use cases (CCS08, CS06, CS08, CS09): pure bytes in, typed values out.

`codes` holds the numbers, `messages` the DER content, `frame` the signed frame around it. No I/O and no
asyncio here, so the CHF, the emulated devices and the conformance checks all read and write the same bytes.
"""
