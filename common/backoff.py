"""Exponential backoff with full jitter, the one schedule every retry in AegisPay follows.

After the ``attempt``-th failure (counted from 1) the ceiling is ``base * factor**(attempt - 1)``,
capped at ``cap``; the wait is drawn uniformly from ``[0, ceiling]`` ("full jitter"), so
callers that failed together do not all come back at the same moment. Callers pass their own
base, cap and factor (named settings) and keep a thin wrapper named for what they retry.
"""

from __future__ import annotations

import random


def backoff_ceiling(attempt: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """The longest wait after the ``attempt``-th failure: ``base * factor**(attempt - 1)``,
    at most ``cap``. An attempt below 1 counts as the first. The power is taken in floats, so
    it costs the same for any attempt, and one too large for a float is the cap."""
    exponent = max(attempt - 1, 0)
    try:
        grown = base * float(factor) ** exponent
    except OverflowError:
        return cap
    return min(cap, grown)


def backoff_seconds(
    attempt: int,
    *,
    base: float,
    cap: float,
    factor: float = 2.0,
    rng: random.Random | None = None,
) -> float:
    """Full jitter: uniform in ``[0, backoff_ceiling(...)]``. ``rng`` makes the draw
    reproducible (tests, the simulator); without it the ``random`` module's shared generator
    draws, as every caller did before this module existed."""
    source = rng if rng is not None else random
    ceiling = backoff_ceiling(attempt, base=base, cap=cap, factor=factor)
    return source.uniform(0, ceiling)
