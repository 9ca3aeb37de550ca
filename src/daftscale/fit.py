"""The one straight-line fit every cost estimate uses: least squares of ``y = a + b x``.

The UDF's per-call and per-row cost is such a line wherever daftscale measures it (a profile's timed
batches, a run's call records, a calibration), each with its own policy for noise (clamping, falling
back to all-per-row); the policies live with their callers, the arithmetic here.
"""

from __future__ import annotations

from collections.abc import Sequence


def fit_line(xs: Sequence[float], ys: Sequence[float], *, min_spread: float = 0.0) -> tuple[float, float] | None:
    """Least squares ``y = a + b x``: ``(a, b)``, or None when x does not vary enough to tell ``a`` from ``b``.

    "Enough" is a standard deviation of x above ``min_spread`` times its mean (0: any two distinct x).

    >>> [round(v, 6) for v in fit_line([10, 30], [0.03, 0.07])]
    [0.01, 0.002]
    >>> fit_line([10, 10], [0.03, 0.07]) is None, fit_line([100, 101], [1, 2], min_spread=0.05) is None
    (True, True)
    """
    n = len(xs)
    if n < 2:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx <= (min_spread * mean_x) ** 2 * n:
        return None
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - b * mean_x, b


__all__ = ["fit_line"]
