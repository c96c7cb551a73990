//! The simulated population: users with the attributes experiments segment
//! by, drawn from a seed so that the same seed gives the same people.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_core::Context;

/// The device a user visits from: pages load slower on a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// A desktop browser: loads faster.
    Desktop,
    /// A phone: loads slower.
    Mobile,
}

impl Platform {
    /// The attribute value (`platform`).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Desktop => "desktop",
            Platform::Mobile => "mobile",
        }
    }
}

/// Whether a user has an account with a plan: members buy several times as
/// often as guests, which is what makes a segment mix matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    /// A signed-in member.
    Member,
    /// A guest.
    Guest,
}

impl Plan {
    /// The attribute value (`plan`).
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Member => "member",
            Plan::Guest => "guest",
        }
    }
}

/// Share of users who are members.
pub const MEMBER_SHARE: f64 = 0.5;

/// Countries and their shares of the population.
pub const COUNTRIES: [(&str, f64); 5] = [
    ("us", 0.40),
    ("de", 0.20),
    ("fr", 0.15),
    ("jp", 0.15),
    ("br", 0.10),
];

/// Share of users on desktop.
pub const DESKTOP_SHARE: f64 = 0.5;

/// One simulated user.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Position in the population, `0..size`.
    pub index: u32,
    /// The unit id (`user_id`).
    pub id: String,
    /// Device.
    pub platform: Platform,
    /// Member or guest.
    pub plan: Plan,
    /// Country code.
    pub country: &'static str,
    /// Relative activity: how much more often than a typical user this one
    /// visits (see [`Activity`]).
    pub activity: f64,
}

impl User {
    /// The SDK context of a visit: the unit id and the segment attributes.
    pub fn context(&self) -> Context {
        let mut ctx = Context::for_user(self.id.as_str());
        ctx.insert("platform", self.platform.as_str());
        ctx.insert("plan", self.plan.as_str());
        ctx.insert("country", self.country);
        ctx
    }
}

/// How users' relative activity is spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activity {
    /// Lognormal with median 1 and this σ, capped at [`MAX_ACTIVITY`]: the
    /// demo's visitors.
    LogNormal {
        /// σ of the logarithm.
        sigma: f64,
    },
    /// Pareto with mean 1 and shape `alpha`, capped at `cap`: with α near 1
    /// a few users produce most of the events, as in zipfian traffic — the
    /// skew that stresses per-unit aggregation in benchmarks.
    Pareto {
        /// Shape α > 1.
        alpha: f64,
        /// The most activity a user has.
        cap: f64,
    },
}

/// A population of `size` users drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Population {
    size: u32,
    seed: u64,
    activity: Activity,
}

/// The most relative activity a user has: heavier users are capped here so
/// that picking visitors by rejection stays cheap.
pub const MAX_ACTIVITY: f64 = 6.0;

impl Population {
    /// `size` users (at least one) from `seed`, with the demo's lognormal
    /// activity (σ = 0.8).
    pub fn new(size: u32, seed: u64) -> Self {
        Self {
            size: size.max(1),
            seed,
            activity: Activity::LogNormal { sigma: 0.8 },
        }
    }

    /// The same users with their activity spread as `activity` (their
    /// attributes do not change).
    pub fn with_activity(self, activity: Activity) -> Self {
        Self { activity, ..self }
    }

    /// The most activity a user of this population has.
    pub fn max_activity(&self) -> f64 {
        match self.activity {
            Activity::LogNormal { .. } => MAX_ACTIVITY,
            Activity::Pareto { cap, .. } => cap,
        }
    }

    /// How many users there are.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// User `index` (taken modulo the size): the same user for the same seed.
    pub fn user(&self, index: u32) -> User {
        let index = index % self.size;
        let mut rng = StdRng::seed_from_u64(mix(self.seed, u64::from(index)));
        let platform = if rng.random_bool(DESKTOP_SHARE) {
            Platform::Desktop
        } else {
            Platform::Mobile
        };
        let plan = if rng.random_bool(MEMBER_SHARE) {
            Plan::Member
        } else {
            Plan::Guest
        };
        let mut pick = rng.random::<f64>();
        let mut country = COUNTRIES[0].0;
        for (c, share) in COUNTRIES {
            country = c;
            if pick < share {
                break;
            }
            pick -= share;
        }
        let activity = match self.activity {
            // A few heavy users, most light ones.
            Activity::LogNormal { sigma } => {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                (sigma * z).exp().min(MAX_ACTIVITY)
            }
            // Mean 1: the scale is (α − 1)/α.
            Activity::Pareto { alpha, cap } => {
                let alpha = alpha.max(1.0 + 1e-9);
                let scale = (alpha - 1.0) / alpha;
                (scale / (1.0 - rng.random::<f64>()).powf(1.0 / alpha)).min(cap)
            }
        };
        User {
            index,
            id: format!("sim-{:x}-{index:07}", self.seed & 0xffff),
            platform,
            plan,
            country,
            activity,
        }
    }

    /// A visitor: users are picked in proportion to their activity.
    pub fn visitor(&self, rng: &mut impl Rng) -> User {
        loop {
            let u = self.user(rng.random_range(0..self.size));
            if rng.random::<f64>() * self.max_activity() < u.activity {
                return u;
            }
        }
    }
}

/// SplitMix64 of a seed and an index: independent streams per user.
pub(crate) fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed
        .wrapping_add(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_people() {
        let a = Population::new(1000, 7);
        let b = Population::new(1000, 7);
        let c = Population::new(1000, 8);
        assert_eq!(a.user(42), b.user(42));
        assert_ne!(a.user(42).id, c.user(42).id);
        assert_eq!(a.user(1042), a.user(42), "indices wrap around the size");
    }

    #[test]
    fn pareto_activity_is_heavy_tailed_with_the_same_attributes() {
        let lognormal = Population::new(20_000, 3);
        let pareto = lognormal.with_activity(Activity::Pareto {
            alpha: 1.2,
            cap: 200.0,
        });
        let mut a: Vec<f64> = (0..20_000)
            .map(|i| {
                let (l, p) = (lognormal.user(i), pareto.user(i));
                assert_eq!(
                    (l.plan, l.platform, l.country),
                    (p.plan, p.platform, p.country)
                );
                p.activity
            })
            .collect();
        a.sort_by(f64::total_cmp);
        let total: f64 = a.iter().sum();
        // Mean 1 before the cap; the cap keeps about 0.8 of it.
        assert!(
            (0.65..1.0).contains(&(total / 20_000.0)),
            "{}",
            total / 20_000.0
        );
        // The most active tenth of users has most of the activity.
        let top: f64 = a[18_000..].iter().sum();
        assert!(top / total > 0.5, "{}", top / total);
        assert!(a[19_999] <= 200.0 && a[19_999] > 50.0);
    }

    #[test]
    fn attributes_follow_their_shares() {
        let p = Population::new(20_000, 1);
        let users: Vec<User> = (0..20_000).map(|i| p.user(i)).collect();
        let desktop = users
            .iter()
            .filter(|u| u.platform == Platform::Desktop)
            .count();
        assert!(
            (desktop as f64 / 20_000.0 - DESKTOP_SHARE).abs() < 0.02,
            "{desktop}"
        );
        let members = users.iter().filter(|u| u.plan == Plan::Member).count();
        assert!(
            (members as f64 / 20_000.0 - MEMBER_SHARE).abs() < 0.02,
            "{members}"
        );
        for (c, share) in COUNTRIES {
            let n = users.iter().filter(|u| u.country == c).count() as f64;
            assert!((n / 20_000.0 - share).abs() < 0.02, "{c}: {n}");
        }
        let mut act: Vec<f64> = users.iter().map(|u| u.activity).collect();
        act.sort_by(f64::total_cmp);
        assert!(
            (act[10_000] - 1.0).abs() < 0.1,
            "median activity {}",
            act[10_000]
        );
        assert!(act.iter().all(|a| *a > 0.0 && *a <= MAX_ACTIVITY));
    }

    #[test]
    fn visitors_are_picked_by_activity() {
        let p = Population::new(5_000, 3);
        let mut rng = StdRng::seed_from_u64(9);
        let visits: Vec<User> = (0..20_000).map(|_| p.visitor(&mut rng)).collect();
        let mean_visitor: f64 = visits.iter().map(|u| u.activity).sum::<f64>() / 20_000.0;
        let mean_user: f64 = (0..5_000).map(|i| p.user(i).activity).sum::<f64>() / 5_000.0;
        // Size-biased: a visitor is more active than the average user.
        assert!(
            mean_visitor > 1.3 * mean_user,
            "{mean_visitor} vs {mean_user}"
        );
    }

    #[test]
    fn a_context_carries_the_unit_and_its_segments() {
        let u = Population::new(10, 1).user(3);
        let ctx = u.context();
        assert_eq!(
            ctx.get("user_id").and_then(|v| v.as_str()),
            Some(u.id.as_str())
        );
        assert_eq!(
            ctx.get("platform").and_then(|v| v.as_str()),
            Some(u.platform.as_str())
        );
        assert_eq!(ctx.get("country").and_then(|v| v.as_str()), Some(u.country));
        assert_eq!(
            ctx.get("plan").and_then(|v| v.as_str()),
            Some(u.plan.as_str())
        );
    }
}
