//! The portal in a real browser: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver) with fantoccini. Every main page is
//! captured under the target directory (`portal-screenshots/`); with
//! `STRATA_UPDATE_SCREENSHOTS=1` the captures also replace those under
//! `docs/screenshots/` that the README shows.
//!
//! Without Chromium and chromedriver these tests say so loudly and skip,
//! unless `STRATA_TEST_BROWSER=required` (as `.ci/run` sets, after
//! installing them), when they fail instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use strata_portal::PortalSettings;

use crate::common::{results, Env};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and a browser session on it; both end on drop
/// (the session is closed by [`Session::close`]).
struct Session {
    client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Session {
    /// Starts chromedriver and a headless Chromium at 1280 × 900, or
    /// returns none (after saying why) when they are not installed and not
    /// required.
    async fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            let msg = format!("{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
            if std::env::var("STRATA_TEST_BROWSER").as_deref() == Ok("required") {
                panic!("browser tests are required: {msg}");
            }
            eprintln!("SKIPPED: browser test: {msg}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-dev-shm-usage",
                         "--window-size=1280,900"]
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut client = None;
        // chromedriver takes a moment to listen.
        for _ in 0..100 {
            let mut b =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            b.capabilities(caps.clone());
            match b.connect(&url).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = client.expect("a chromedriver session within 10 s");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Some(Self {
            client,
            driver,
            shots,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    async fn fill(&self, css: &str, value: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks what submits a form or follows a link, and waits until the
    /// browser is on another URL (a click returns before the navigation it
    /// starts has ended).
    async fn submit(&self, css: &str) {
        let before = self.client.current_url().await.unwrap();
        self.click(css).await;
        for _ in 0..100 {
            if self.client.current_url().await.unwrap() != before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let page = self.body().await;
        panic!("{css}: still on {before} after 5 s; the page says:\n{page}");
    }

    async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        }
    }

    /// Saves a screenshot as `name.png` (and in `docs/screenshots/` when
    /// asked to update them).
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), &png).unwrap();
        if std::env::var("STRATA_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
        }
    }

    async fn sign_in(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        self.fill("#token", token).await;
        self.submit("form button[type=submit]").await;
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_is_created_run_and_killed_through_the_portal() {
    let Some(s) = Session::start().await else {
        return;
    };
    let env = Env::start_with(PortalSettings {
        analysis_interval: Some(Duration::from_secs(3600)),
        ..PortalSettings::default()
    })
    .await;
    env.setup_registry().await;
    for i in 0..6 {
        env.create(
            &env.checkout_exp,
            &format!("other_{i}"),
            "checkout",
            json!({}),
        )
        .await;
    }
    let base = &env.base;

    // Sign in, and create the experiment through the form, correcting
    // what the service refuses.
    s.sign_in(base, &env.checkout_exp).await;
    assert_eq!(s.path().await, "/experiments");
    s.submit("a[href='/experiments/new']").await;
    s.fill("#key", "checkout_redesign").await;
    s.fill("#name", "Checkout redesign").await;
    s.fill("#hypothesis", "a one-page checkout converts better")
        .await;
    s.client
        .find(Locator::Css("#primary_metric"))
        .await
        .unwrap()
        .select_by_value("conversion")
        .await
        .unwrap();
    s.click("input[name=secondary][value=revenue]").await;
    s.fill("input[name=size]", "10").await;
    s.fill("#mde", "0").await;
    s.fill("#planned_units", "20000").await;
    s.fill("#ramp_plan", "10:24, 50:24, 100").await;
    // Refused: the same page comes back with the error.
    s.click("button[value=create]").await;
    s.client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("p.notice-error"))
        .await
        .unwrap();
    let body = s.body().await;
    assert!(body.contains("mde must be a positive number"), "{body}");
    s.shot("new-experiment").await;
    s.fill("#mde", "0.02").await;
    s.submit("button[value=create]").await;
    assert_eq!(s.path().await, "/experiments/checkout_redesign?done=create");
    s.submit("form[action$='/actions/submit'] button").await;
    assert!(s.body().await.contains("done: submitted"));
    s.goto(&format!("{base}/experiments")).await;
    assert!(s.body().await.contains("Checkout redesign"));

    // Start at the plan's first stage, then ramp to the next.
    s.submit("a[href='/experiments/checkout_redesign']").await;
    assert_eq!(s.path().await, "/experiments/checkout_redesign");
    s.fill(
        "form[action$='/actions/start'] input[name=ramp_percent]",
        "10",
    )
    .await;
    s.submit("form[action$='/actions/start'] button").await;
    assert_eq!(s.path().await, "/experiments/checkout_redesign?done=start");
    assert!(s.body().await.contains("done: started"));
    s.submit("form[action$='/actions/ramp'] button").await;
    let body = s.body().await;
    assert!(body.contains("done: ramped"), "{body}");
    assert!(body.contains("Assigning 50 %"), "{body}");
    s.shot("experiment").await;

    // Looks published by the analysis: numbers and plots.
    let (_, e) = env
        .api(
            reqwest::Method::GET,
            "/api/v1/experiments/checkout_redesign",
            &env.checkout_exp,
            None,
        )
        .await;
    let start = e["started_at"].as_str().unwrap().to_owned();
    let t0 = chrono::DateTime::parse_from_rfc3339(&start).unwrap();
    for look in 1..=4u32 {
        let as_of = (t0 + chrono::Duration::milliseconds(i64::from(look) * 10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        env.publish(
            "checkout_redesign",
            &results(
                "checkout_redesign",
                &as_of,
                &start,
                0.04 * f64::from(look),
                look,
                false,
            ),
        )
        .await;
    }
    s.submit("a[href='/experiments/checkout_redesign/results']")
        .await;
    let body = s.body().await;
    assert!(body.contains("Look 4 of 4"), "{body}");
    let plots = s
        .client
        .find_all(Locator::Css("svg[role=img]"))
        .await
        .unwrap();
    assert!(plots.len() >= 3, "forest plots and the effect over looks");
    s.shot("results").await;
    // The list now shows the look's health and decision.
    s.goto(&format!("{base}/experiments")).await;
    assert!(s.body().await.contains("keep running"));
    s.shot("experiments").await;

    // Which experiments is this user in? Through the form.
    s.goto(&format!("{base}/lookup")).await;
    s.fill("#context", r#"{"user_id": "u-7", "country": "US"}"#)
        .await;
    s.submit("form[action='/lookup'] button").await;
    let body = s.body().await;
    assert!(body.contains("of 1 experiments"), "{body}");
    assert!(
        body.contains("not in the ramp")
            || body.contains("assigned")
            || body.contains("outside the layer range"),
        "{body}"
    );
    s.shot("lookup").await;

    // Kill through the confirmation.
    s.goto(&format!("{base}/experiments/checkout_redesign"))
        .await;
    s.submit("#lifecycle a[href$='/kill']").await;
    assert_eq!(s.path().await, "/experiments/checkout_redesign/kill");
    s.fill("#reason", "payment errors doubled in treatment")
        .await;
    s.click("input[name=confirm]").await;
    s.shot("kill").await;
    s.submit("button.danger").await;
    let body = s.body().await;
    assert!(body.contains("done: killed"), "{body}");
    assert!(body.contains("killed: payment errors doubled in treatment"));

    // Phone width: nothing overflows sideways.
    s.client.set_window_size(390, 844).await.unwrap();
    s.goto(&format!("{base}/experiments")).await;
    let fits = s
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the list fits a phone's width");
    s.shot("experiments-phone").await;
    s.client.set_window_size(1280, 900).await.unwrap();

    // A form whose CSRF token was removed is refused.
    s.goto(&format!("{base}/experiments/other_0")).await;
    s.client
        .execute(
            "document.querySelectorAll('form[action$=\"/actions/submit\"] input[name=csrf]').forEach(e => e.remove())",
            vec![],
        )
        .await
        .unwrap();
    s.submit("form[action$='/actions/submit'] button").await;
    assert!(s.body().await.contains("security token"));

    // Another team's experimenter gets the 403 page on the results.
    s.goto(&format!("{base}/experiments")).await;
    s.submit("header form button").await;
    assert_eq!(s.path().await, "/login");
    s.sign_in(base, &env.search_exp).await;
    s.goto(&format!("{base}/experiments/checkout_redesign/results"))
        .await;
    let body = s.body().await;
    assert!(body.contains("Forbidden"), "{body}");
    assert!(body.contains("results:read"), "{body}");
    s.shot("forbidden").await;
    s.close().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in_in_the_browser() {
    let Some(s) = Session::start().await else {
        return;
    };
    let env = Env::start_with(PortalSettings {
        session_ttl: Duration::from_secs(2),
        ..PortalSettings::default()
    })
    .await;
    s.sign_in(&env.base, &env.viewer).await;
    assert_eq!(s.path().await, "/experiments");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    s.goto(&format!("{}/experiments", env.base)).await;
    assert_eq!(s.path().await, "/login?expired=1");
    assert!(s.body().await.contains("your session has expired"));
    s.shot("login").await;
    s.close().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holdout_page_in_the_browser() {
    use strata_server::auth::Perm;
    use strata_server::service::{Actor, HoldoutService};
    let Some(s) = Session::start().await else {
        return;
    };
    let env = Env::start().await;
    env.setup_registry().await;
    for (path, body) in [
        (
            "/api/v1/holdout",
            json!({"percent": 5, "rotate_every_days": 180}),
        ),
        (
            "/api/v1/key-metrics",
            json!({"metrics": ["conversion", "revenue"]}),
        ),
    ] {
        let (st, v) = env
            .api(reqwest::Method::PUT, path, &env.checkout_admin, Some(body))
            .await;
        assert!(st.is_success(), "{v}");
    }
    let as_of = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    HoldoutService::new(env.server.as_ref().unwrap().state.clone())
        .publish_look(
            &Actor::system("analysis").granting([Perm::HoldoutWrite]),
            1,
            crate::http::holdout_look(&as_of, 0.047, 0),
            "rest",
            &["conversion".to_owned(), "revenue".to_owned()],
        )
        .await
        .unwrap();
    s.sign_in(&env.base, &env.checkout_admin).await;
    s.goto(&format!("{}/holdout", env.base)).await;
    assert!(s.text("#holdout").await.contains("Rotated every 180 days"));
    let body = s.body().await;
    assert!(
        body.contains("+4.7%") && body.contains("Contamination: ok"),
        "{body}"
    );
    s.shot("holdout").await;
    s.client.set_window_size(390, 844).await.unwrap();
    s.goto(&format!("{}/holdout", env.base)).await;
    let fits = s
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the holdout page fits a phone's width");
    s.shot("holdout-phone").await;
    s.close().await;
    env.stop().await;
}
