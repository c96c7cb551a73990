#!/usr/bin/env python3
"""Reference fixture of the clustered quantile interval
(``strata_stats::quantile``, a sample built with ``QuantileSample::from_units``),
computed with numpy.

Each case gives the values of several units (a list of lists), the quantile
``q`` and ``alpha``. The estimate is numpy's default (linear, Hyndman & Fan 7)
quantile of all values; ``a_i`` counts unit i's values at or below it and
``m_i`` its values; ``p = sum(a) / sum(m)``; the delta-method variance of that
ratio over the ``k`` units is ``sigma^2 = sum((a_i - p m_i)^2) / (k (k - 1)
mbar^2)`` (Deng, Knoblich & Lu 2018, "Applying the delta method in metric
analytics", KDD); the interval is ``[x_(L), x_(U)]`` (1-based order statistics
of all values sorted) with ``L = floor(N (q - z sigma))``, ``U = ceil(N (q + z
sigma))`` and ``z = scipy.stats.norm.isf(alpha / 2)``. The Rust test
(``tests/integration/reference.rs``) compares with ``quantile_clustered.json``,
which is committed; the Rust tests never run Python.

Regenerate (seconds)::

    pip install "scipy==1.17.*" numpy
    python3 crates/strata-stats/tests/reference/quantile_clustered.py
"""

import json
import math
import os

import numpy as np
import scipy
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))


def case(name, units, q, alpha):
    values = np.concatenate([np.asarray(u, dtype=float) for u in units])
    estimate = float(np.quantile(values, q))
    a = np.array([np.sum(np.asarray(u) <= estimate) for u in units], dtype=float)
    m = np.array([len(u) for u in units], dtype=float)
    k, n = len(units), float(m.sum())
    p = a.sum() / m.sum()
    sigma = math.sqrt(np.sum((a - p * m) ** 2) / (k * (k - 1)) / (m.mean() ** 2))
    z = float(stats.norm.isf(alpha / 2))
    lo_rank = math.floor(n * (q - z * sigma))
    hi_rank = math.ceil(n * (q + z * sigma))
    x = np.sort(values)
    return {
        "name": name,
        "units": [list(map(float, u)) for u in units],
        "q": q,
        "alpha": alpha,
        "estimate": estimate,
        "lower_rank": lo_rank,
        "upper_rank": hi_rank,
        "lower": float(x[lo_rank - 1]),
        "upper": float(x[hi_rank - 1]),
    }


def units_with_effects(rng, k, spread):
    # Each unit's values share its own level: the values of one unit move
    # together (a slow device loads every page slowly).
    out = []
    for _ in range(k):
        level = rng.lognormal(0.0, spread)
        size = int(rng.integers(1, 9))
        out.append(np.round(1000 * level * rng.lognormal(0.0, 0.3, size), 3).tolist())
    return out


def main():
    rng = np.random.default_rng(20261205)
    cases = [
        case("p95_correlated_units", units_with_effects(rng, 300, 0.5), 0.95, 0.05),
        case("median_correlated_units", units_with_effects(rng, 200, 0.5), 0.5, 0.05),
        case("p90_mild_correlation", units_with_effects(rng, 400, 0.1), 0.9, 0.01),
    ]
    payload = {
        "generator": "quantile_clustered.py",
        "versions": {"scipy": scipy.__version__, "numpy": np.__version__},
        "quantile_clustered": cases,
    }
    with open(os.path.join(HERE, "quantile_clustered.json"), "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
