//! Prometheus metrics: request counts and latency by route, the config
//! version, connected streaming SDKs, store errors and the health checks of
//! published looks, rendered as text at `GET /metrics`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use strata_http::prometheus::Histogram;

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug)]
struct RouteStats(Histogram);

impl Default for RouteStats {
    fn default() -> Self {
        Self(Histogram::new(&BUCKETS))
    }
}

type RouteKey = (&'static str, String, u16);

/// Stats of one route template, by (method, status).
type PerRoute = RwLock<HashMap<(&'static str, u16), Arc<RouteStats>>>;

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: RwLock<HashMap<String, Arc<PerRoute>>>,
    config_version: AtomicU64,
    sse_clients: AtomicI64,
    store_errors: AtomicU64,
    /// Remote evaluations that could not read or keep sticky assignments
    /// and evaluated without them.
    sticky_failures: AtomicU64,
    /// Remote evaluations of a known bot answered with the defaults.
    bot_evaluations: AtomicU64,
    /// Health checks of published looks by (experiment, check, status).
    health_checks: RwLock<BTreeMap<(String, String, &'static str), u64>>,
    /// Alerts raised by event.
    alerts: RwLock<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, seconds: f64) {
        let per_route = {
            let map = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            map.get(route).cloned()
        };
        let per_route = match per_route {
            Some(p) => p,
            None => self
                .routes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(route.to_owned())
                .or_default()
                .clone(),
        };
        let stats = {
            let map = per_route.read().unwrap_or_else(PoisonError::into_inner);
            map.get(&(method, status)).cloned()
        };
        let stats = match stats {
            Some(s) => s,
            None => per_route
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((method, status))
                .or_default()
                .clone(),
        };
        stats.0.observe(seconds);
    }

    /// Sets the served config version.
    pub fn set_config_version(&self, v: u64) {
        self.config_version.store(v, Ordering::Relaxed);
    }

    /// A streaming SDK connected (+1) or left (-1).
    pub fn sse_delta(&self, d: i64) {
        self.sse_clients.fetch_add(d, Ordering::Relaxed);
    }

    /// Connected streaming SDKs.
    pub fn sse_clients(&self) -> i64 {
        self.sse_clients.load(Ordering::Relaxed)
    }

    /// Counts a store error.
    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a remote evaluation that evaluated without its sticky
    /// assignments (the store failed).
    pub fn sticky_failure(&self) {
        self.sticky_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a remote evaluation of a known bot.
    pub fn bot_evaluation(&self) {
        self.bot_evaluations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one health check of a published look.
    pub fn health_check(&self, experiment: &str, check: &str, status: &'static str) {
        *self
            .health_checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((experiment.to_owned(), check.to_owned(), status))
            .or_default() += 1;
    }

    /// Counts one alert raised.
    pub fn alert(&self, event: &'static str) {
        *self
            .alerts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(event)
            .or_default() += 1;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut map: HashMap<RouteKey, Arc<RouteStats>> = HashMap::new();
        for (route, per) in self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            for ((m, st), stats) in per.read().unwrap_or_else(PoisonError::into_inner).iter() {
                map.insert((m, route.clone(), *st), stats.clone());
            }
        }
        let mut keys: Vec<&RouteKey> = map.keys().collect();
        keys.sort();
        out.push_str("# HELP strata_http_requests_total HTTP requests by method, route and status.\n# TYPE strata_http_requests_total counter\n");
        for k in &keys {
            if let Some(s) = map.get(*k) {
                let _ = writeln!(
                    out,
                    "strata_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}",
                    k.0,
                    k.1,
                    k.2,
                    s.0.count()
                );
            }
        }
        out.push_str("# HELP strata_http_request_duration_seconds Request latency by method, route and status.\n# TYPE strata_http_request_duration_seconds histogram\n");
        for k in &keys {
            let Some(s) = map.get(*k) else { continue };
            let labels = format!("method=\"{}\",route=\"{}\",status=\"{}\"", k.0, k.1, k.2);
            s.0.render(&mut out, "strata_http_request_duration_seconds", &labels);
        }
        let _ = writeln!(
            out,
            "# HELP strata_config_version The config version served.\n# TYPE strata_config_version gauge\nstrata_config_version {}",
            self.config_version.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_sse_clients Connected streaming SDKs.\n# TYPE strata_sse_clients gauge\nstrata_sse_clients {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_store_errors_total Failed store operations.\n# TYPE strata_store_errors_total counter\nstrata_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_sticky_failures_total Remote evaluations that evaluated without sticky assignments because the store failed.\n# TYPE strata_sticky_failures_total counter\nstrata_sticky_failures_total {}",
            self.sticky_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP strata_bot_evaluations_total Remote evaluations whose context is a known bot (served the defaults, no exposure).\n# TYPE strata_bot_evaluations_total counter\nstrata_bot_evaluations_total {}",
            self.bot_evaluations.load(Ordering::Relaxed)
        );
        let checks = self
            .health_checks
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let alerts = self.alerts.read().unwrap_or_else(PoisonError::into_inner);
        if !alerts.is_empty() {
            out.push_str("# HELP strata_alerts_total Alerts raised, by event.\n# TYPE strata_alerts_total counter\n");
            for (event, n) in alerts.iter() {
                let _ = writeln!(out, "strata_alerts_total{{event=\"{event}\"}} {n}");
            }
        }
        if !checks.is_empty() {
            out.push_str("# HELP strata_health_checks Health checks of published looks by experiment, check and status.\n# TYPE strata_health_checks counter\n");
            for ((experiment, check, status), n) in checks.iter() {
                let _ = writeln!(
                    out,
                    "strata_health_checks{{experiment=\"{}\",check=\"{}\",status=\"{status}\"}} {n}",
                    label(experiment),
                    label(check)
                );
            }
        }
        out
    }
}

/// Middleware recording every request.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        _ => "OTHER",
    };
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    metrics.observe(
        method,
        route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// A label value escaped for the text exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
