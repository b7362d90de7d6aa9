"""ota-emu: emulated GB HAN OTA clients (PPMID, HCALCS), the CHF OTA server, a virtual EZSP NCP and a
conformance bench for the Zigbee OTA Upgrade cluster (0x0019)."""

__version__ = "0.1.0"
