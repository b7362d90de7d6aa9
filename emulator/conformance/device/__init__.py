"""The device bench: a PPMID or HCALCS (emulated, behind a virtual NCP, or a real one behind a coordinator)
played against the test CHF and judged from the frames on the CHF's radio (checks C-xx, Z-xx)."""
