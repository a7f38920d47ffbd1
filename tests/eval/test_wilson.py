from __future__ import annotations

import math

import pytest

from safecls.eval.wilson import Rate, wilson_interval

Z = 1.959963984540054


def quadratic_roots(k: int, n: int) -> tuple[float, float]:
    """Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved independently of the module."""
    ph = k / n
    a = 1 + Z * Z / n
    b = -(2 * ph + Z * Z / n)
    c = ph * ph
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


# Rounded bounds as tabulated for the Wilson score interval; the quadratic roots are the exact check.
@pytest.mark.parametrize(("k", "n", "published"), [
    (0, 10, (0.0, 0.2775)),      # upper bound z^2 / (n + z^2)
    (5, 10, (0.2366, 0.7634)),
    (10, 10, (0.7225, 1.0)),
    (1, 100, (0.0018, 0.0545)),
])
def test_known_values(k, n, published):
    lo, hi = wilson_interval(k, n)
    assert (lo, hi) == pytest.approx(quadratic_roots(k, n), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == published


def test_bounds_are_clamped_and_empty_is_uninformative():
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k=3, n=2"):
        wilson_interval(3, 2)


def test_rate_formatting():
    r = Rate.of(5, 10)
    assert r.rate == 0.5 and r.fmt() == "50.0% [23.7, 76.3] (n=10)"
    assert Rate.of(0, 0).rate is None and Rate.of(0, 0).fmt() == "n/a (n=0)"
