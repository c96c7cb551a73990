//! One node runs the jobs.
//!
//! Several `strata serve` processes may share one PostgreSQL; the scheduled
//! analysis (and the global holdout's rotation) and the guardrail monitor
//! must still run on exactly one of them, or two nodes would publish the
//! same look or kill the same experiment. The node that holds the lease
//! `jobs` in the config store runs them: it renews the lease every
//! [`RENEW`], and when it dies another node takes the lease over once it
//! has expired ([`TTL`]), so the jobs resume within `TTL + RENEW` (20 s). A
//! clean stop gives the lease up once the jobs' tasks have ended. On the
//! embedded SQLite store the process is alone (its data directory is
//! locked), so it always leads.
//!
//! The jobs ask [`Leadership::is_leader`] before each run or cycle; a node
//! that becomes leader starts a new term ([`Leadership::term`]), so a job
//! can take up what the previous leader stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strata_server::mount::Mount;
use strata_server::AppState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The lease's name in the config store.
pub const LEASE: &str = "jobs";
/// How long a claim holds.
pub const TTL: Duration = Duration::from_secs(15);
/// How often the holder renews (and the others try).
pub const RENEW: Duration = Duration::from_secs(5);

/// Whether this node runs the jobs.
#[derive(Debug, Clone)]
pub struct Leadership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// This node's name in the lease: process id and a random suffix.
    holder: String,
    /// Alone on an embedded store: always the leader.
    alone: bool,
    leader: AtomicBool,
    term: AtomicU64,
    /// The holder last seen.
    current: Mutex<String>,
}

impl Leadership {
    /// This node's leadership over `state`'s store (alone on SQLite).
    pub fn new(state: &AppState) -> Self {
        let suffix = strata_server::auth::random_hex(4).unwrap_or_default();
        let alone = state.store.backend().name() == "sqlite";
        Self {
            inner: Arc::new(Inner {
                holder: format!("node-{}-{suffix}", std::process::id()),
                alone,
                leader: AtomicBool::new(alone),
                term: AtomicU64::new(u64::from(alone)),
                current: Mutex::new(String::new()),
            }),
        }
    }

    /// Whether this node runs the jobs now.
    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::Acquire)
    }

    /// How many times this node has become the leader (0: never).
    pub fn term(&self) -> u64 {
        self.inner.term.load(Ordering::Acquire)
    }

    /// This node's name in the lease.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// The node that held the lease when last seen (empty before the
    /// first claim, or alone).
    pub fn leader(&self) -> String {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, holder: String) {
        let leads = holder == self.inner.holder;
        let was = self.inner.leader.swap(leads, Ordering::AcqRel);
        if leads && !was {
            self.inner.term.fetch_add(1, Ordering::AcqRel);
            tracing::info!(node = %holder, "this node now runs the jobs");
        } else if was && !leads {
            tracing::warn!(node = %self.inner.holder, leader = %holder, "this node no longer runs the jobs");
        }
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = holder;
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The lease's keeper as a part of `strata serve`.
#[derive(Debug)]
pub struct LeaderMount {
    state: AppState,
    leadership: Leadership,
}

impl LeaderMount {
    /// The keeper of `leadership` over `state`'s store.
    pub fn new(state: &AppState, leadership: Leadership) -> Self {
        Self {
            state: state.clone(),
            leadership,
        }
    }
}

impl Mount for LeaderMount {
    fn name(&self) -> &'static str {
        "leader"
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP strata_jobs_leader Whether this node runs the jobs (scheduled analysis, guardrail monitor).\n\
             # TYPE strata_jobs_leader gauge\nstrata_jobs_leader {}\n",
            u8::from(self.leadership.is_leader())
        ));
    }

    fn spawn(&self, mut shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        if self.leadership.inner.alone {
            return Vec::new();
        }
        let (state, l) = (self.state.clone(), self.leadership.clone());
        let ttl = i64::try_from(TTL.as_millis()).unwrap_or(i64::MAX);
        vec![tokio::spawn(async move {
            loop {
                match state
                    .store
                    .claim_lease(LEASE, l.holder(), now_ms(), ttl)
                    .await
                {
                    Ok(holder) => l.set(holder),
                    // The store is unreachable: this node cannot know it
                    // still holds the lease, and whatever the jobs would
                    // publish would fail anyway.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the jobs lease");
                        l.set(String::new());
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(RENEW) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })]
    }

    /// Gives the lease up once every task has ended (the jobs included),
    /// so the next leader never starts while this node's last run goes on.
    fn shutdown(&self) -> strata_server::mount::BoxFuture<'_, ()> {
        Box::pin(async move {
            let l = &self.leadership;
            if l.inner.alone || !l.is_leader() {
                return;
            }
            l.set(String::new());
            if let Err(e) = self.state.store.release_lease(LEASE, l.holder()).await {
                tracing::warn!(error = %e, "cannot give the jobs lease up");
            }
        })
    }
}
