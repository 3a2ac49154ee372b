"""Compare two quick-check reports of the same file made in different processes.

The same check, seed and file give the same report up to floating-point summation order: BLAS and
numba's parallel loops sum in an order that depends on the number of threads (a single-threaded
Dask worker against a multi-threaded process). That moves the last bits of a float64 (measured on
8 sessions of 5 minutes, 2 x 32 channels: means differ by up to about 1e-10), which a surrogate z
amplifies by 1 / (null standard deviation, ~0.004): up to 5e-8 measured. A value the JSON rounds
(5 decimals for matrices and per-pair p-values) can land on either side of a rounding boundary:
one unit of its last decimal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Keys that differ between two runs by design: when the report was made and how long it took.
RUN_KEYS = ("generated_utc", "timing_s")
#: Difference allowed, times max(1, |value|): 20 times the largest measured (5e-8 in a z), and
#: far below any difference that means something (a metric's surrogate spread is ~1e-3).
SCALED = 1e-6
#: One unit in the 5th decimal: a value rounded to 5 decimals (MATRIX_DECIMALS) on either side
#: of a rounding boundary.
ROUNDED_UNIT = 1e-5


def differences(a: Any, b: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Places where report ``a`` and ``b`` differ beyond summation order: (path, a's, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            yield path, sorted(a), sorted(b)
            return
        for key in a:
            if not path and key in RUN_KEYS:
                continue
            yield from differences(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield path, len(a), len(b)
            return
        for index, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{index}]")
    elif isinstance(a, float) and isinstance(b, float):
        rounded = round(a, 5) == a and round(b, 5) == b
        tolerance = ROUNDED_UNIT * 1.01 if rounded else SCALED * max(1.0, abs(a), abs(b))
        if abs(a - b) > tolerance:
            yield path, a, b
    elif a != b or type(a) is not type(b):
        yield path, a, b


def largest_difference(a: Any, b: Any) -> float:
    """Largest ``|x - y| / max(1, |x|, |y|)`` over the reports' float values (0 if equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((largest_difference(a[k], b[k]) for k in a if k in b and k not in RUN_KEYS), default=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return max((largest_difference(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) / max(1.0, abs(a), abs(b))
    return 0.0
