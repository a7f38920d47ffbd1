"""Wilson score interval for a binomial proportion (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the
Wald interval, which collapses to [0, 0] at 0/n and is badly under-covering for small n)."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

Z95 = 1.959963984540054  # two-sided 95% standard-normal quantile, Phi^-1(0.975)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) bounds for k successes in n trials; (0.0, 1.0) when n == 0 (no information)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n (got k={k}, n={n})")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At k == 0 or k == n the bound is exactly 0 or 1 in exact arithmetic; floats give +-1e-17.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


class Rate(BaseModel):
    """k of n with its Wilson 95% interval; `rate` is None when n == 0."""

    model_config = ConfigDict(frozen=True)

    k: int
    n: int
    rate: float | None
    lo: float
    hi: float

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        lo, hi = wilson_interval(k, n)
        return cls(k=k, n=n, rate=k / n if n else None, lo=lo, hi=hi)

    def fmt(self, digits: int = 1) -> str:
        """'12.5% [8.1, 18.7] (n=120)' in percent; 'n/a (n=0)' when empty."""
        if self.rate is None:
            return "n/a (n=0)"
        return f"{100 * self.rate:.{digits}f}% [{100 * self.lo:.{digits}f}, {100 * self.hi:.{digits}f}] (n={self.n})"
