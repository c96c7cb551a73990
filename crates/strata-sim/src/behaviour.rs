//! Behaviour models: what a visit does, and how a variant changes it.
//!
//! A visit views a few pages (each with its load time, sometimes an error)
//! and sometimes ends in a purchase. Pages load slower on mobile, and
//! members buy several times as often as guests, so a plan mix that
//! differs between variants can reverse an effect (Simpson's paradox). A variant's [`Effect`] multiplies the rates; an
//! effect may fade after a unit's first days (novelty).

use rand::Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

use crate::population::{Plan, Platform, User};

/// What a visit does before any experiment changes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Mean page views per visit (at least one).
    pub pages: f64,
    /// Purchase probability per visit: member, guest.
    pub purchase: [f64; 2],
    /// Median order value.
    pub order_value: f64,
    /// Median page-load time in ms: desktop, mobile.
    pub load_ms: [f64; 2],
    /// Error probability per page view.
    pub error_per_page: f64,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            pages: 3.0,
            purchase: [0.10, 0.015],
            order_value: 40.0,
            load_ms: [800.0, 1500.0],
            error_per_page: 0.004,
        }
    }
}

/// How a variant changes a visit: multipliers, 1 for no change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effect {
    /// Purchase probability.
    pub purchase: f64,
    /// Purchase probability by plan (member, guest), on top of
    /// `purchase`.
    pub purchase_by_plan: [f64; 2],
    /// Order value.
    pub order_value: f64,
    /// Page-load time.
    pub load: f64,
    /// Error probability.
    pub errors: f64,
    /// The purchase effect holds only during a unit's first this many days
    /// after its first exposure, then vanishes (novelty).
    pub fades_after_days: Option<f64>,
}

impl Effect {
    /// No change at all.
    pub const NONE: Effect = Effect {
        purchase: 1.0,
        purchase_by_plan: [1.0, 1.0],
        order_value: 1.0,
        load: 1.0,
        errors: 1.0,
        fades_after_days: None,
    };

    /// The effect on a unit first exposed `days` ago: a fading effect
    /// past its days has no purchase effect left.
    pub fn at(&self, days: f64) -> Effect {
        match self.fades_after_days {
            Some(limit) if days >= limit => Effect {
                purchase: 1.0,
                purchase_by_plan: [1.0, 1.0],
                fades_after_days: None,
                ..*self
            },
            _ => Effect {
                fades_after_days: None,
                ..*self
            },
        }
    }

    /// Both effects at once (a unit in several experiments): the
    /// multipliers multiply.
    pub fn and(&self, other: &Effect) -> Effect {
        Effect {
            purchase: self.purchase * other.purchase,
            purchase_by_plan: [
                self.purchase_by_plan[0] * other.purchase_by_plan[0],
                self.purchase_by_plan[1] * other.purchase_by_plan[1],
            ],
            order_value: self.order_value * other.order_value,
            load: self.load * other.load,
            errors: self.errors * other.errors,
            fades_after_days: None,
        }
    }
}

/// One thing a visit does, tracked as an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// `page_view`.
    PageView,
    /// `page_load` with its time in ms.
    PageLoad(f64),
    /// `error`.
    Error,
    /// `purchase` with its order value.
    Purchase(f64),
}

impl Act {
    /// The event type and value.
    pub fn event(&self) -> (&'static str, Option<f64>) {
        match *self {
            Act::PageView => ("page_view", None),
            Act::PageLoad(ms) => ("page_load", Some(ms)),
            Act::Error => ("error", None),
            Act::Purchase(v) => ("purchase", Some(v)),
        }
    }
}

/// What `user` does on one visit under `effect` (already resolved with
/// [`Effect::at`] and combined with [`Effect::and`]).
pub fn visit(base: &Baseline, user: &User, effect: &Effect, rng: &mut impl Rng) -> Vec<Act> {
    let p = match user.platform {
        Platform::Desktop => 0,
        Platform::Mobile => 1,
    };
    let m = match user.plan {
        Plan::Member => 0,
        Plan::Guest => 1,
    };
    let extra = Poisson::new((base.pages - 1.0).max(1e-9)).map_or(0.0, |d| d.sample(rng));
    let pages = 1 + extra as usize;
    let load = LogNormal::new((base.load_ms[p] * effect.load).ln(), 0.35).ok();
    let error = (base.error_per_page * effect.errors).clamp(0.0, 1.0);
    let mut acts = Vec::with_capacity(2 * pages + 1);
    for _ in 0..pages {
        acts.push(Act::PageView);
        if let Some(d) = &load {
            acts.push(Act::PageLoad(d.sample(rng).round()));
        }
        if rng.random_bool(error) {
            acts.push(Act::Error);
        }
    }
    let buy = (base.purchase[m] * effect.purchase * effect.purchase_by_plan[m]).clamp(0.0, 1.0);
    if rng.random_bool(buy) {
        let value = LogNormal::new((base.order_value * effect.order_value).ln(), 0.5)
            .map_or(base.order_value, |d| d.sample(rng));
        acts.push(Act::Purchase((value * 100.0).round() / 100.0));
    }
    acts
}

/// The interactions around a visit's pages that the demo does not track but
/// a product's event stream is full of, for data sets that look like one
/// (`crate::dataset`): clicks on each page, searches, an add to cart before
/// every purchase (and often without one), shares, guests signing up and
/// members logging out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interactions {
    /// Mean clicks per page view.
    pub clicks_per_page: f64,
    /// Probability that a visit searches.
    pub search: f64,
    /// Probability of an add to cart without a purchase, per visit.
    pub cart_abandon: f64,
    /// Probability that a visit shares something.
    pub share: f64,
    /// Probability that a guest's visit signs up.
    pub signup: f64,
    /// Probability that a member's visit ends with a logout.
    pub logout: f64,
}

impl Default for Interactions {
    fn default() -> Self {
        Self {
            clicks_per_page: 1.5,
            search: 0.3,
            cart_abandon: 0.1,
            share: 0.05,
            signup: 0.02,
            logout: 0.1,
        }
    }
}

/// Everything a visit does, tracked as events in order: [`visit`]'s pages,
/// load times, errors and purchase, with [`Interactions`] around them.
pub fn session(
    base: &Baseline,
    interactions: &Interactions,
    user: &User,
    effect: &Effect,
    rng: &mut impl Rng,
) -> Vec<(&'static str, Option<f64>)> {
    let acts = visit(base, user, effect, rng);
    let clicks = Poisson::new(interactions.clicks_per_page.max(1e-9)).ok();
    let mut out = Vec::with_capacity(acts.len() * 2 + 4);
    if rng.random_bool(interactions.search.clamp(0.0, 1.0)) {
        out.push(("search", None));
    }
    let mut bought = false;
    for act in &acts {
        if let Act::Purchase(_) = act {
            out.push(("add_to_cart", None));
            bought = true;
        }
        out.push(act.event());
        if let (Act::PageView, Some(d)) = (act, &clicks) {
            for _ in 0..d.sample(rng) as u64 {
                out.push(("click", None));
            }
        }
    }
    if !bought && rng.random_bool(interactions.cart_abandon.clamp(0.0, 1.0)) {
        out.push(("add_to_cart", None));
    }
    if rng.random_bool(interactions.share.clamp(0.0, 1.0)) {
        out.push(("share", None));
    }
    let last = match user.plan {
        Plan::Guest => ("signup", interactions.signup),
        Plan::Member => ("logout", interactions.logout),
    };
    if rng.random_bool(last.1.clamp(0.0, 1.0)) {
        out.push((last.0, None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::population::Population;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rates(platform: Platform, plan: Plan, effect: &Effect) -> (f64, f64, f64) {
        let pop = Population::new(1000, 5);
        let user = (0..1000)
            .map(|i| pop.user(i))
            .find(|u| u.platform == platform && u.plan == plan)
            .unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let (mut buys, mut load, mut loads, mut errors, mut pages) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let n = 40_000;
        for _ in 0..n {
            for a in visit(&Baseline::default(), &user, effect, &mut rng) {
                match a {
                    Act::Purchase(_) => buys += 1.0,
                    Act::PageLoad(ms) => {
                        load += ms;
                        loads += 1.0;
                    }
                    Act::Error => errors += 1.0,
                    Act::PageView => pages += 1.0,
                }
            }
        }
        (buys / f64::from(n), load / loads, errors / pages)
    }

    #[test]
    fn the_baseline_differs_by_platform_and_plan() {
        let (d_buy, d_load, _) = rates(Platform::Desktop, Plan::Member, &Effect::NONE);
        let (m_buy, m_load, m_err) = rates(Platform::Mobile, Plan::Guest, &Effect::NONE);
        assert!((d_buy - 0.10).abs() < 0.006, "{d_buy}");
        assert!((m_buy - 0.015).abs() < 0.003, "{m_buy}");
        // A lognormal's mean is its median × e^(σ²/2).
        let k = (0.35f64 * 0.35 / 2.0).exp();
        assert!((d_load / (800.0 * k) - 1.0).abs() < 0.02, "{d_load}");
        assert!((m_load / (1500.0 * k) - 1.0).abs() < 0.02, "{m_load}");
        assert!((m_err - 0.004).abs() < 0.001, "{m_err}");
    }

    #[test]
    fn effects_multiply_the_rates() {
        let bad = Effect {
            load: 1.5,
            errors: 4.0,
            ..Effect::NONE
        };
        let (_, base_load, base_err) = rates(Platform::Desktop, Plan::Guest, &Effect::NONE);
        let (_, load, err) = rates(Platform::Desktop, Plan::Guest, &bad);
        assert!(
            (load / base_load - 1.5).abs() < 0.03,
            "{load} / {base_load}"
        );
        assert!((err / base_err - 4.0).abs() < 0.6, "{err} / {base_err}");
        let up = Effect {
            purchase: 1.5,
            ..Effect::NONE
        }
        .and(&Effect {
            purchase_by_plan: [2.0, 1.0],
            ..Effect::NONE
        });
        let (buy, _, _) = rates(Platform::Mobile, Plan::Member, &up);
        assert!((buy / 0.10 - 3.0).abs() < 0.2, "{buy}");
    }

    #[test]
    fn a_novelty_effect_fades_after_its_days() {
        let novel = Effect {
            purchase: 2.0,
            load: 1.2,
            fades_after_days: Some(7.0),
            ..Effect::NONE
        };
        assert_eq!(novel.at(3.0).purchase, 2.0);
        let late = novel.at(7.5);
        assert_eq!((late.purchase, late.load), (1.0, 1.2));
        assert_eq!(Effect::NONE.at(100.0), Effect::NONE);
    }

    #[test]
    fn a_session_adds_interactions_around_the_visit() {
        let pop = Population::new(100, 3);
        let mut rng = StdRng::seed_from_u64(4);
        let (mut counts, n) = (std::collections::BTreeMap::new(), 20_000);
        for i in 0..n {
            let user = pop.user(i % 100);
            let events = session(
                &Baseline::default(),
                &Interactions::default(),
                &user,
                &Effect::NONE,
                &mut rng,
            );
            // Every purchase follows an add to cart.
            for (k, e) in events.iter().enumerate() {
                if e.0 == "purchase" {
                    assert_eq!(events[k - 1].0, "add_to_cart");
                }
            }
            for e in events {
                *counts.entry(e.0).or_insert(0.0) += 1.0 / f64::from(n);
            }
        }
        let per_visit = |k: &str| counts.get(k).copied().unwrap_or(0.0);
        assert!((per_visit("page_view") - 3.0).abs() < 0.05);
        assert!((per_visit("click") / per_visit("page_view") - 1.5).abs() < 0.05);
        assert!((per_visit("search") - 0.3).abs() < 0.02);
        for k in [
            "share",
            "signup",
            "logout",
            "add_to_cart",
            "purchase",
            "error",
        ] {
            assert!(per_visit(k) > 0.0, "{k}: {counts:?}");
        }
    }
}
