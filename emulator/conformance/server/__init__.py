"""The server bench: an OTA server (this project's CHF, or zigpy's) probed by scripted clients and judged from
the frames it sent back (checks S-xx)."""
