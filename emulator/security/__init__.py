"""Zigbee and Smart Energy security, pure: bytes in, typed values out, no asyncio and no I/O.

The AES-MMO hash and its HMAC (Zigbee specification 05-3474 Annex B.6), install codes, CCM* frame protection,
binary-field curve arithmetic, implicit certificates and key establishment live here; the radios, the CHF and
the emulated devices build on them.
"""
