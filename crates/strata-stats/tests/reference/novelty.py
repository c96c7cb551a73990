#!/usr/bin/env python3
"""Reference fixture of the novelty decay test (``strata_stats::novelty``),
computed with scipy.

Each case gives, for the early and the late window, the per-arm summary
statistics ``[n, mean, variance]`` of control and treatment. Each window's
effect is its relative lift ``r = mean_t / mean_c - 1`` with the delta-method
standard error ``sqrt(v_t/n_t / m_c^2 + m_t^2 v_c/n_c / m_c^4)`` (relative,
because the windows' baselines differ: a unit's first week and the days after
it are not equally long, so a constant lift has a smaller absolute effect in
the shorter window); the early window's significance is its Welch test
(``scipy.stats.ttest_ind_from_stats``, equal_var=False). The decay statistic is
``z = (r_early - r_late) / sqrt(se_early^2 + se_late^2)`` with the two-sided
p-value ``2 * scipy.stats.norm.sf(|z|)``, and the decay is flagged when that
p-value and the early effect's are below alpha and the late lift is smaller in
magnitude. The Rust test
(``tests/integration/reference.rs``) compares with ``novelty.json``, which is
committed; the Rust tests never run Python.

Regenerate (seconds)::

    pip install "scipy==1.17.*" numpy
    python3 crates/strata-stats/tests/reference/novelty.py
"""

import json
import math
import os

import numpy as np
import scipy
from scipy import stats

HERE = os.path.dirname(os.path.abspath(__file__))


def window(control, treatment):
    nc, mc, vc = control
    nt, mt, vt = treatment
    r = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
    lift = mt / mc - 1
    se = math.sqrt(vt / nt / mc**2 + mt**2 * (vc / nc) / mc**4)
    return lift, se, float(r.pvalue)


def cases():
    # (name, early control, early treatment, late control, late treatment, alpha)
    specs = [
        # A conversion lift that fades: 12% -> 13.2% early, 12% -> 12.1% later.
        ("fading_conversion", [40_000, 0.12, 0.1056], [40_000, 0.132, 0.114576],
         [25_000, 0.12, 0.1056], [25_000, 0.121, 0.106359], 0.05),
        # A stable effect: the same lift in both windows.
        ("stable_revenue", [20_000, 10.0, 400.0], [20_000, 10.5, 410.0],
         [12_000, 10.0, 400.0], [12_000, 10.5, 410.0], 0.05),
        # A growing (primacy) effect: significant difference, no decay flag.
        ("growing_count", [5_000, 3.0, 9.0], [5_000, 3.05, 9.2],
         [3_000, 3.0, 9.0], [3_000, 3.6, 9.5], 0.05),
        # A decay significant at 5% but not at the strict level below.
        ("moderate_decay", [2_000, 1.0, 1.0], [2_000, 1.07, 1.0],
         [1_500, 1.0, 1.0], [1_500, 0.95, 1.0], 0.05),
        # The same data at a strict level.
        ("moderate_decay_strict", [2_000, 1.0, 1.0], [2_000, 1.07, 1.0],
         [1_500, 1.0, 1.0], [1_500, 0.95, 1.0], 0.001),
        # A sign flip: the late effect is negative and smaller in magnitude.
        ("sign_flip", [8_000, 50.0, 100.0], [8_000, 51.0, 100.0],
         [6_000, 50.0, 100.0], [6_000, 49.8, 100.0], 0.05),
        # A constant relative lift (+30 %) over a shorter late window with a
        # lower baseline: the absolute effect shrinks (0.06 -> 0.024), the
        # lift does not; no novelty.
        ("constant_lift_lower_baseline", [6_000, 0.20, 0.16], [6_000, 0.26, 0.1924],
         [4_000, 0.08, 0.0736], [4_000, 0.104, 0.093184], 0.05),
        # Small windows with unequal variances.
        ("small_unequal", [30, 2.0, 4.0], [45, 4.0, 0.5],
         [12, 2.0, 4.0], [20, 2.2, 0.5], 0.05),
    ]
    out = []
    for name, ec, et, lc, lt, alpha in specs:
        de, se, pe = window(ec, et)
        dl, sl, _ = window(lc, lt)
        z = (de - dl) / math.sqrt(se * se + sl * sl)
        p = float(2 * stats.norm.sf(abs(z)))
        out.append(
            {
                "name": name,
                "early": {"control": ec, "treatment": et},
                "late": {"control": lc, "treatment": lt},
                "alpha": alpha,
                "early_p_value": pe,
                "z": z,
                "p_value": p,
                "flagged": bool(p < alpha and pe < alpha and abs(dl) < abs(de)),
            }
        )
    return out


def main():
    payload = {
        "generator": "novelty.py",
        "versions": {"scipy": scipy.__version__, "numpy": np.__version__},
        "novelty_decay": cases(),
    }
    with open(os.path.join(HERE, "novelty.json"), "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
