#!/usr/bin/env python3
"""Peer timings for the criterion benchmarks in stats.rs, with scipy/statsmodels.

Times the same computations as the Rust benchmarks so that a ratio can be
quoted:

* ``analyze_3x50``: for 3 variants x 50 metrics (30 mean, 10 ratio, 10 CUPED,
  from sufficient statistics): SRM (scipy.stats.chisquare), per comparison a
  Welch test (scipy.stats.ttest_ind_from_stats) with its interval
  (scipy.stats.t.isf), relative lift with a delta-method interval, the
  Bayesian summary (scipy.stats.norm), and Holm over the secondary p-values
  (statsmodels multipletests).
* ``gs_boundaries_5``: Lan-DeMets O'Brien-Fleming boundaries for 5 equally
  spaced looks by root finding on scipy's multivariate normal CDF at its
  default precision. scipy/statsmodels have no group-sequential routine and
  the multivariate normal approach does not scale to 50 looks, so only the
  5-look case has a peer.

Run: ``python3 crates/strata-stats/benches/peer.py``
"""

import math
import time

import numpy as np
from scipy import stats
from scipy.optimize import brentq
from statsmodels.stats.multitest import multipletests

UNITS = [100_000, 100_150, 99_900]


def metrics():
    out = []
    for m in range(50):
        f = float(m)
        kind = m % 5
        if kind <= 2:
            arms = [(n, 10.0 + f + 0.05 * v, 4.0 + f) for v, n in enumerate(UNITS)]
            out.append(("mean", arms))
        elif kind == 3:
            # (n, mean_num, mean_den, var_num, var_den, cov)
            arms = [(n, 20.0 + f + 0.1 * v, 2.0, 30.0, 1.5, 3.0) for v, n in enumerate(UNITS)]
            out.append(("ratio", arms))
        else:
            # (n, mean_y, mean_x, var_y, var_x, cov)
            arms = [(n, 5.0 + 0.02 * v, 5.0, 9.0, 8.0, 6.0) for v, n in enumerate(UNITS)]
            out.append(("cuped", arms))
    return out


def analyze(ms, alpha=0.05):
    n = sum(UNITS)
    stats.chisquare(UNITS, [n / 3] * 3)
    z = stats.norm.isf(alpha / 2)
    secondary = []
    results = []
    for i, (kind, arms) in enumerate(ms):
        if kind == "mean":
            samples = [(a[0], a[1], a[2]) for a in arms]
        elif kind == "ratio":
            samples = []
            for nn, mn, md, vn, vd, c in arms:
                r = mn / md
                samples.append((nn, r, (vn - 2 * r * c + r * r * vd) / md**2))
        else:
            tot = sum(a[0] for a in arms)
            # pooled theta from the merged moments (equal covariate means here)
            cxy = sum((a[0] - 1) * a[5] for a in arms)
            sxx = sum((a[0] - 1) * a[4] for a in arms)
            theta = cxy / sxx
            xbar = sum(a[0] * a[2] for a in arms) / tot
            samples = [(a[0], a[1] - theta * (a[2] - xbar), a[3] - 2 * theta * a[5] + theta**2 * a[4]) for a in arms]
        nc, mc, vc = samples[0]
        for nt, mt, vt in samples[1:]:
            res = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
            a, b = vt / nt, vc / nc
            se = math.sqrt(a + b)
            df = (a + b) ** 2 / (a * a / (nt - 1) + b * b / (nc - 1))
            q = stats.t.isf(alpha / 2, df)
            d = mt - mc
            ci = (d - q * se, d + q * se)
            lift = mt / mc - 1
            lse = math.sqrt(a / mc**2 + mt**2 * b / mc**4)
            lci = (lift - z * lse, lift + z * lse)
            post = stats.norm(d, se)
            p_better = post.sf(0.0)
            zz = d / se
            loss_t = se * stats.norm.pdf(zz) - d * stats.norm.cdf(-zz)
            results.append((res.pvalue, ci, lci, p_better, loss_t))
            if i > 0:
                secondary.append(res.pvalue)
    multipletests(secondary, alpha=alpha, method="holm")
    return results


def gs_boundaries(fractions, alpha=0.05):
    def spend(t):
        return 2 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(t))

    bounds = [stats.norm.isf(spend(fractions[0]))]
    for k in range(1, len(fractions)):
        fr = fractions[: k + 1]
        cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in fr] for a in fr])
        prev = np.array(bounds)
        cont_prev = stats.multivariate_normal(np.zeros(k), cov[:k, :k], seed=1).cdf(prev, lower_limit=-prev)
        target = 2 * (spend(fr[k]) - spend(fr[k - 1]))
        mvn = stats.multivariate_normal(np.zeros(k + 1), cov, seed=1)

        def f(b):
            lim = np.append(prev, b)
            return cont_prev - mvn.cdf(lim, lower_limit=-lim) - target

        bounds.append(brentq(f, 0.5, 12.0, xtol=1e-6))
    return bounds


def timeit(fn, min_time=2.0):
    fn()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        fn()
        reps += 1
    return (time.perf_counter() - start) / reps


def main():
    ms = metrics()
    t = timeit(lambda: analyze(ms))
    print(f"analyze_3x50 (scipy/statsmodels): {t * 1e3:.3f} ms per experiment")
    fr = [0.2, 0.4, 0.6, 0.8, 1.0]
    t = timeit(lambda: gs_boundaries(fr), min_time=5.0)
    print(f"gs_boundaries_5 (scipy multivariate normal): {t * 1e3:.1f} ms; boundaries {np.round(gs_boundaries(fr), 3)}")


if __name__ == "__main__":
    main()
