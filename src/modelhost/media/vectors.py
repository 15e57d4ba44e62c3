"""Float32 vectors as workers send them (raw little-endian bytes) → Python floats, without numpy (serve process)."""

from __future__ import annotations

import sys
from array import array


def float32_values(data: bytes) -> list[float]:
    """Little-endian float32 bytes → floats."""
    values = array("f")
    values.frombytes(data)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def float32_rows(data: bytes, count: int, dim: int) -> list[list[float]]:
    """``count`` rows of ``dim`` little-endian float32 → lists of floats."""
    values = float32_values(data)
    return [values[i * dim : (i + 1) * dim] for i in range(count)]
