"""Percentiles and ratios, the arithmetic behind every figure in the report."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between ranks (numpy's default).

    With the 100 to a few hundred samples a run takes, nearest-rank would make p99 simply the
    maximum; interpolation keeps p95/p99 comparable across sample counts.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(values: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p95, p99 and max of a list of latencies (seconds); just n=0 when empty."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def ratio(ours: float | None, baseline: float | None) -> float | None:
    """ours / baseline; None when either is unknown or the baseline is zero (no finite ratio)."""
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline
