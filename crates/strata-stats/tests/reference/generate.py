#!/usr/bin/env python3
"""Reference fixtures for strata-stats, computed with scipy and statsmodels.

Every statistic of the crate is evaluated here by an independent
implementation (scipy/statsmodels where they provide one, numpy on raw
per-unit data otherwise) on fixed inputs, and written to JSON files that the
Rust integration tests (``tests/integration/reference.rs``) compare against.
The Rust tests never run Python: the JSON files are committed.

Regenerate (takes a few minutes, dominated by the multivariate normal
integrals of the group-sequential fixture)::

    pip install "scipy==1.17.*" "statsmodels==0.15.*" numpy
    python3 crates/strata-stats/tests/reference/generate.py

The inputs are drawn from a fixed seed, so regenerating with the same
library versions reproduces the files exactly (up to the quasi-Monte Carlo
integration of ``group_sequential.json``, whose seed is also fixed).
"""

import json
import math
import os
import sys

import numpy as np
import scipy
import statsmodels
from scipy import stats
from scipy.optimize import brentq
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = np.random.default_rng(20261124)


def write(name, payload):
    payload = {
        "generator": "generate.py",
        "versions": {"scipy": scipy.__version__, "statsmodels": statsmodels.__version__, "numpy": np.__version__},
        **payload,
    }
    with open(os.path.join(HERE, name), "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def fl(x):
    return [float(v) for v in x]


def welch_cases():
    """Welch's t-test on raw data (scipy.stats.ttest_ind, equal_var=False)."""
    cases = []
    specs = [
        ("normal_small", lambda n: RNG.normal(10.0, 2.0, n), 12, 15, 0.05),
        ("normal_unequal_var", lambda n: RNG.normal(0.0, 1.0, n) * (1 + 3 * (n > 40)), 35, 60, 0.05),
        ("skewed_revenue", lambda n: RNG.lognormal(3.0, 1.2, n), 150, 140, 0.05),
        ("binomial", lambda n: (RNG.random(n) < 0.12).astype(float), 200, 190, 0.05),
        ("alpha_01", lambda n: RNG.normal(5.0, 1.0, n), 40, 41, 0.01),
        # Revenue-sized values (10^6 ± 3) on a 2^-20 grid, so that subtracting
        # the offset is exact and scipy works on well-conditioned numbers.
        ("large_offset", lambda n: 1e6 + np.round(RNG.normal(0.0, 3.0, n) * 2**20) / 2**20, 80, 90, 0.10),
    ]
    for name, draw, nc, nt, alpha in specs:
        c, t = draw(nc), draw(nt)
        if name in ("normal_small", "large_offset"):
            t = t + 1.5
        shift = 1e6 if name == "large_offset" else 0.0
        r = stats.ttest_ind(t - shift, c - shift, equal_var=False)
        ci = r.confidence_interval(1 - alpha)
        mc, mt = c.mean(), t.mean()
        vc, vt = c.var(ddof=1) / nc, t.var(ddof=1) / nt
        lift = mt / mc - 1
        lift_se = math.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
        z = stats.norm.isf(alpha / 2)
        cases.append(
            {
                "name": name,
                "alpha": alpha,
                "control": fl(c),
                "treatment": fl(t),
                "t": float(r.statistic),
                "p_value": float(r.pvalue),
                "df": float(r.df),
                "ci_lower": float(ci.low),
                "ci_upper": float(ci.high),
                "lift": lift,
                "lift_se": lift_se,
                "lift_ci_lower": lift - z * lift_se,
                "lift_ci_upper": lift + z * lift_se,
            }
        )
    return cases


def welch_summary_cases():
    """Welch's t-test from summary statistics at experiment sizes
    (scipy.stats.ttest_ind_from_stats; interval from scipy.stats.t.isf)."""
    out = []
    specs = [
        (1_000_000, 0.1000, 0.09, 1_002_000, 0.1012, 0.0910, 0.05),
        (250_000, 52.3, 410.0, 249_000, 52.9, 395.0, 0.05),
        (5_000_000, 3.0, 1.0, 5_000_000, 3.0004, 1.0, 0.05),
        (30, 1.0, 4.0, 2_000, 2.5, 0.25, 0.05),
        (100_000, 10.0, 9.0, 100_000, 10.2, 9.0, 0.001),
    ]
    for nc, mc, vc, nt, mt, vt, alpha in specs:
        r = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
        a, b = vt / nt, vc / nc
        se = math.sqrt(a + b)
        df = (a + b) ** 2 / (a * a / (nt - 1) + b * b / (nc - 1))
        q = stats.t.isf(alpha / 2, df)
        d = mt - mc
        out.append(
            {
                "control": [nc, mc, vc],
                "treatment": [nt, mt, vt],
                "alpha": alpha,
                "t": float(r.statistic),
                "p_value": float(r.pvalue),
                "df": df,
                "ci_lower": d - q * se,
                "ci_upper": d + q * se,
            }
        )
    return out


def distribution_cases():
    """scipy.stats.t / norm / chi2 at points the tests use."""
    t = []
    for df in [1.0, 2.5, 7.0, 29.3, 180.5, 2000.3, 2.1e4, 2.3e5, 1.7e6, 3.1e7]:
        for x in [0.3, 1.0, 1.96, 2.5, 3.3, 5.0, 8.0]:
            t.append({"x": x, "df": df, "sf": float(stats.t.sf(x, df))})
    tq = []
    for df in [1.0, 2.5, 7.0, 29.3, 180.5, 2.1e4, 3.1e7]:
        for q in [0.25, 0.05, 0.025, 0.005, 0.0005, 1e-8]:
            tq.append({"q": q, "df": df, "isf": float(stats.t.isf(q, df))})
    nq = [{"q": q, "isf": float(stats.norm.isf(q))} for q in [0.4, 0.1, 0.025, 1e-3, 1e-6, 1e-12, 1e-30, 1e-100]]
    ns = [{"x": x, "sf": float(stats.norm.sf(x))} for x in [-3.0, -0.5, 0.0, 0.7, 1.96, 4.0, 8.0, 15.0, 30.0]]
    chi = []
    for k in [1, 2, 3, 4, 5, 9, 20]:
        for x in [0.01, 0.5, 2.0, 7.8, 15.0, 40.0, 90.0]:
            chi.append({"x": x, "df": k, "sf": float(stats.chi2.sf(x, k))})
    return {"t_sf": t, "t_isf": tq, "norm_isf": nq, "norm_sf": ns, "chi2_sf": chi}


def ratio_cases():
    """Ratio metrics: delta-method variance on raw data (numpy), then
    scipy.stats.ttest_ind_from_stats with that variance."""
    out = []
    for nc, nt, lift in [(120, 130, 0.0), (400, 380, 0.08), (60, 2000, -0.05)]:
        def draw(n, lift):
            orders = RNG.poisson(2.0, n) + 1.0
            revenue = orders * RNG.gamma(4.0, 5.0, n) * (1 + lift)
            return revenue, orders

        (cn, cd), (tn, td) = draw(nc, 0.0), draw(nt, lift)
        arms = []
        for num, den in [(cn, cd), (tn, td)]:
            n = len(num)
            r = num.sum() / den.sum()
            cov = np.cov(num, den, ddof=1)
            var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / den.mean() ** 2
            arms.append((n, r, var))
        (n0, r0, v0), (n1, r1, v1) = arms
        res = stats.ttest_ind_from_stats(r1, math.sqrt(v1), n1, r0, math.sqrt(v0), n0, equal_var=False)
        out.append(
            {
                "control_num": fl(cn),
                "control_den": fl(cd),
                "treatment_num": fl(tn),
                "treatment_den": fl(td),
                "ratio_control": r0,
                "ratio_treatment": r1,
                "var_control": v0,
                "var_treatment": v1,
                "t": float(res.statistic),
                "p_value": float(res.pvalue),
            }
        )
    return out


def cuped_cases():
    """CUPED on raw data: theta from the pooled covariance (numpy), adjusted
    per-unit values y - theta (x - mean x), then scipy's Welch test on them."""
    out = []
    for k, rho, n, effect in [(2, 0.7, 300, 0.2), (3, 0.4, 150, 0.0), (2, 0.95, 80, 0.05)]:
        ys, xs = [], []
        for v in range(k):
            x = RNG.normal(20.0, 4.0, n + 7 * v)
            y = 20.0 + rho * (x - 20.0) + math.sqrt(1 - rho * rho) * RNG.normal(0, 4.0, n + 7 * v)
            if v > 0:
                y = y + effect * v
            ys.append(y)
            xs.append(x)
        ay, ax = np.concatenate(ys), np.concatenate(xs)
        cov = np.cov(ax, ay, ddof=1)
        theta = cov[0, 1] / cov[0, 0]
        xbar = ax.mean()
        adj = [y - theta * (x - xbar) for y, x in zip(ys, xs)]
        comps = []
        for v in range(1, k):
            r = stats.ttest_ind(adj[v], adj[0], equal_var=False)
            comps.append({"t": float(r.statistic), "p_value": float(r.pvalue), "df": float(r.df)})
        all_adj = ay - theta * (ax - xbar)
        out.append(
            {
                "y": [fl(y) for y in ys],
                "x": [fl(x) for x in xs],
                "theta": theta,
                "covariate_mean": xbar,
                "adjusted_means": [float(a.mean()) for a in adj],
                "adjusted_variances": [float(a.var(ddof=1)) for a in adj],
                "variance_reductions": [float(1 - a.var(ddof=1) / y.var(ddof=1)) for a, y in zip(adj, ys)],
                "pooled_variance_reduction": float(1 - all_adj.var(ddof=1) / ay.var(ddof=1)),
                "comparisons": comps,
            }
        )
    return out


def srm_cases():
    """scipy.stats.chisquare against expected counts from the weights."""
    out = []
    for obs, w in [
        ([5000, 5050], [0.5, 0.5]),
        ([5000, 5400], [1, 1]),
        ([2480, 7520], [25, 75]),
        ([10012, 9950, 10101], [1, 1, 1]),
        ([100, 130, 90, 80], [1, 2, 1, 1]),
        ([1_000_000, 1_003_500], [50, 50]),
        ([7, 3], [0.5, 0.5]),
    ]:
        n = sum(obs)
        exp = [n * x / sum(w) for x in w]
        r = stats.chisquare(obs, exp)
        out.append({"observed": obs, "weights": [float(x) for x in w], "chi_squared": float(r.statistic), "p_value": float(r.pvalue)})
    return out


def multiple_cases():
    """statsmodels.stats.multitest.multipletests (bonferroni, holm, fdr_bh)."""
    out = []
    sets = [
        [0.01, 0.04, 0.03, 0.005],
        list(RNG.uniform(0, 0.2, 12)),
        list(RNG.uniform(0, 1, 30)),
        [0.02, 0.02, 0.02, 0.5, 0.001, 0.001],
        [0.9],
        [0.0, 1.0, 0.5, 0.04999],
    ]
    for p in sets:
        entry = {"p_values": fl(p)}
        for m in ["bonferroni", "holm", "fdr_bh"]:
            entry[m] = fl(multipletests(p, alpha=0.05, method=m)[1])
        out.append(entry)
    return out


def power_cases():
    """statsmodels NormalIndPower (ratio=1, two-sided).

    ``solve_power`` stops at its root finder's default tolerance (about 1e-5
    relative for the effect size), so its answers are polished by
    scipy.optimize.brentq at full precision on statsmodels' own ``power``.
    """
    pw = NormalIndPower()
    out = []
    for kind, base, mde, alpha, power in [
        ("mean_absolute", {"mean": 10.0, "variance": 4.0}, ("absolute", 0.25), 0.05, 0.8),
        ("mean_relative", {"mean": 52.3, "variance": 410.0}, ("relative", 0.02), 0.05, 0.9),
        ("rate_relative", {"rate": 0.1}, ("relative", 0.05), 0.05, 0.8),
        ("rate_absolute", {"rate": 0.5}, ("absolute", 0.01), 0.01, 0.8),
        ("large_effect", {"mean": 1.0, "variance": 1.0}, ("absolute", 1.2), 0.05, 0.95),
    ]:
        if "rate" in base:
            mean, sd = base["rate"], math.sqrt(base["rate"] * (1 - base["rate"]))
        else:
            mean, sd = base["mean"], math.sqrt(base["variance"])
        delta = mde[1] if mde[0] == "absolute" else mde[1] * mean
        d = delta / sd
        n0 = pw.solve_power(effect_size=d, nobs1=None, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
        n = brentq(lambda x: pw.power(d, x, alpha, ratio=1.0) - power, 0.9 * n0, 1.1 * n0, xtol=1e-300, rtol=1e-15)
        n_fixed = 5000.0
        d0 = pw.solve_power(effect_size=None, nobs1=n_fixed, alpha=alpha, power=power, ratio=1.0, alternative="two-sided")
        d_at_n = brentq(lambda x: pw.power(x, n_fixed, alpha, ratio=1.0) - power, 0.9 * d0, 1.1 * d0, xtol=1e-300, rtol=1e-15)
        p_at = pw.power(effect_size=d, nobs1=1234.0, alpha=alpha, ratio=1.0, alternative="two-sided")
        out.append(
            {
                "name": kind,
                "baseline": base,
                "mde": {"kind": mde[0], "value": mde[1]},
                "alpha": alpha,
                "power": power,
                "effect_size": d,
                "n_per_variant": float(n),
                "mde_effect_size_at_5000": float(d_at_n),
                "power_at_1234": float(p_at),
            }
        )
    return out


def bayes_cases():
    """Posterior summaries under the normal approximation, with scipy.stats.norm
    and, for the expected loss, numerical integration (scipy.integrate.quad)."""
    from scipy.integrate import quad

    out = []
    for d, se, prior in [(0.3, 0.2, None), (-0.05, 0.1, None), (0.3, 0.2, (0.0, 0.2)), (2.0, 0.5, (1.0, 3.0))]:
        if prior is None:
            m, s = d, se
        else:
            wl, wp = 1 / se**2, 1 / prior[1] ** 2
            m, s = (d * wl + prior[0] * wp) / (wl + wp), (wl + wp) ** -0.5
        post = stats.norm(m, s)
        loss_t = quad(lambda x: max(0.0, -x) * post.pdf(x), m - 12 * s, m + 12 * s, points=[0.0], epsabs=1e-14, epsrel=1e-13)[0]
        loss_c = quad(lambda x: max(0.0, x) * post.pdf(x), m - 12 * s, m + 12 * s, points=[0.0], epsabs=1e-14, epsrel=1e-13)[0]
        out.append(
            {
                "difference": d,
                "std_error": se,
                "prior": None if prior is None else {"mean": prior[0], "std_dev": prior[1]},
                "posterior_mean": m,
                "posterior_std_dev": s,
                "prob_treatment_better": float(post.sf(0.0)),
                "expected_loss_treatment": loss_t,
                "expected_loss_control": loss_c,
            }
        )
    return out


def quantile_cases():
    """numpy.quantile (linear) and order-statistic ranks from scipy.stats.binom."""
    out = []
    for n, q, alpha in [(20, 0.5, 0.05), (200, 0.95, 0.05), (1000, 0.99, 0.05), (537, 0.5, 0.01), (5000, 0.95, 0.1)]:
        x = RNG.exponential(100.0, n)
        b = stats.binom(n, q)
        # l: largest with P(B <= l-1) <= alpha/2; u: smallest with P(B >= u) <= alpha/2.
        l = max(k for k in range(1, n + 1) if b.cdf(k - 1) <= alpha / 2)
        u = min(k for k in range(1, n + 1) if b.sf(k - 1) <= alpha / 2)
        xs = np.sort(x)
        out.append(
            {
                "values": fl(x),
                "q": q,
                "alpha": alpha,
                "estimate": float(np.quantile(x, q)),
                "lower_rank": l,
                "upper_rank": u,
                "lower": float(xs[l - 1]),
                "upper": float(xs[u - 1]),
                "coverage": float(b.cdf(u - 1) - b.cdf(l - 1)),
            }
        )
    return out


def gs_boundaries(fractions, alpha, spending, maxpts=10_000_000):
    """Two-sided symmetric Lan-DeMets boundaries by root finding on
    scipy.stats.multivariate_normal's CDF (Genz's quasi-Monte Carlo method)."""

    def alpha_side(t):
        if spending == "obrien_fleming":
            # 2 − 2Φ(x) written as 2Φ̄(x) to avoid cancellation at small t.
            return 2 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(t))
        return alpha / 2 * math.log(1 + (math.e - 1) * t)

    bounds = []
    for k, t in enumerate(fractions):
        if k == 0:
            bounds.append(float(stats.norm.isf(alpha_side(t))))
            continue
        fr = fractions[: k + 1]
        cov = np.array([[math.sqrt(min(a, b) / max(a, b)) for b in fr] for a in fr])
        prev = np.array(bounds)
        # P(no crossing before look k) in k dimensions.
        mvn_prev = stats.multivariate_normal(np.zeros(k), cov[:k, :k], seed=1, maxpts=maxpts, abseps=1e-13, releps=1e-13)
        cont_prev = 1.0 if k == 0 else float(mvn_prev.cdf(prev, lower_limit=-prev))
        target = 2 * (alpha_side(t) - alpha_side(fractions[k - 1]))
        mvn = stats.multivariate_normal(np.zeros(k + 1), cov, seed=1, maxpts=maxpts, abseps=1e-13, releps=1e-13)

        def f(b):
            lim = np.append(prev, b)
            return (cont_prev - float(mvn.cdf(lim, lower_limit=-lim))) - target

        bounds.append(brentq(f, 0.5, 12.0, xtol=1e-12))
    return bounds


def group_sequential_cases():
    designs = [
        ([0.13, 0.37, 0.81, 1.0], 0.05, "obrien_fleming"),
        ([0.25, 0.6, 1.0], 0.05, "pocock"),
        ([0.3, 0.55, 0.9], 0.05, "obrien_fleming"),
        ([0.2, 0.45, 0.7, 1.0], 0.1, "pocock"),
    ]
    out = []
    for fr, alpha, sp in designs:
        print("group sequential", fr, sp, file=sys.stderr)
        out.append({"fractions": fr, "alpha": alpha, "spending": sp, "boundaries": gs_boundaries(fr, alpha, sp)})
    return out


def main():
    write(
        "fixtures.json",
        {
            "welch_raw": welch_cases(),
            "welch_summary": welch_summary_cases(),
            "distributions": distribution_cases(),
            "ratio": ratio_cases(),
            "cuped": cuped_cases(),
            "srm": srm_cases(),
            "multiple": multiple_cases(),
            "power": power_cases(),
            "bayes": bayes_cases(),
            "quantile": quantile_cases(),
        },
    )
    if "--skip-sequential" not in sys.argv:
        write("group_sequential.json", {"designs": group_sequential_cases()})


if __name__ == "__main__":
    main()
