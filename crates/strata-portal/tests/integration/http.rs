//! Sign-in, sessions, CSRF, permissions and every page over plain HTTP.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use strata_portal::PortalSettings;

use crate::common::{results, Env, ADMIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_http_only_cookie_and_signing_out_ends_it() {
    let env = Env::start().await;
    let mut b = env.browser();
    // Signed out: every page leads to the sign-in form.
    let p = b.get("/experiments").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), Some("/login"));
    let form = b.get("/login").await;
    assert!(form.body.contains("<form"), "{}", form.body);
    assert!(form.headers.contains_key("content-security-policy"));
    let p = b.sign_in(&env.checkout_exp).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), Some("/experiments"));
    let cookie = p
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("strata_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=46800"),
        "12 h and the grace hour: {cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let list = b.get("/experiments").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("checkout-experimenter"), "{}", list.body);
    assert!(list.body.contains("no experiments yet"), "{}", list.body);
    assert_eq!(env.portal.sessions().len(), 1);
    // Signing out needs the form's token too.
    let csrf = list.csrf();
    let out = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.location(), Some("/login"));
    assert!(env.portal.sessions().is_empty());
    assert_eq!(b.get("/experiments").await.location(), Some("/login"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_tls() {
    let env = Env::start().await;
    let b = env.browser();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client
        .get(format!("{}/login", b.base))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let c = form.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(c.ends_with("; Secure"), "{c}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_refuses_unknown_tokens_other_kinds_and_forms_without_their_token() {
    let env = Env::start().await;
    let mut b = env.browser();
    let p = b.sign_in("not-a-token").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("unknown or has been revoked"), "{}", p.body);
    assert!(p.body.contains("aria-invalid=\"true\""), "{}", p.body);
    let (s, sdk) = env
        .api(
            Method::POST,
            "/api/v1/keys",
            ADMIN,
            Some(json!({"kind": "sdk", "name": "web"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let p = b.sign_in(sdk["token"].as_str().unwrap()).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("a sdk key cannot sign in"), "{}", p.body);
    // The form's token must match its cookie.
    b.get("/login").await;
    let p = b
        .post(
            "/login",
            &[("token", &env.checkout_exp), ("csrf", "forged")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = b.post("/login", &[("token", &env.checkout_exp)]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert!(env.portal.sessions().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_without_its_csrf_token_is_refused_and_changes_nothing() {
    let env = Env::start().await;
    env.setup_registry().await;
    env.create(&env.checkout_exp, "csrf_exp", "checkout", json!({}))
        .await;
    env.act(&env.checkout_exp, "csrf_exp", "submit", json!({}))
        .await;
    let mut b = env.signed_in(&env.checkout_exp).await;
    let start = "/experiments/csrf_exp/actions/start";
    for form in [
        vec![("ramp_percent", "10")],
        vec![("ramp_percent", "10"), ("csrf", "forged")],
    ] {
        let p = b.post(start, &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{form:?}");
        assert!(p.body.contains("security token"), "{}", p.body);
    }
    let (_, e) = env
        .api(Method::GET, "/api/v1/experiments/csrf_exp", ADMIN, None)
        .await;
    assert_eq!(e["status"], "submitted");
    // Another session's token is no better.
    let mut other = env.signed_in(&env.checkout_admin).await;
    let foreign = other.csrf().await;
    let p = b
        .post(start, &[("ramp_percent", "10"), ("csrf", &foreign)])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // With it, the action happens, under the token's name in the audit log.
    let csrf = b.csrf().await;
    let p = b
        .post(start, &[("ramp_percent", "10"), ("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), Some("/experiments/csrf_exp?done=start"));
    let (_, e) = env
        .api(Method::GET, "/api/v1/experiments/csrf_exp", ADMIN, None)
        .await;
    assert_eq!(e["status"], "running");
    assert_eq!(e["ramp_percent"], 10.0);
    let page = b.get("/experiments/csrf_exp?done=start").await;
    assert!(page.body.contains("done: started"), "{}", page.body);
    assert!(
        page.body.contains("checkout-experimenter"),
        "timeline names the actor"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_goes_back_to_sign_in() {
    let env = Env::start_with(PortalSettings {
        session_ttl: Duration::from_millis(400),
        ..PortalSettings::default()
    })
    .await;
    let mut b = env.signed_in(&env.viewer).await;
    assert_eq!(b.get("/experiments").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = b.get("/experiments").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), Some("/login?expired=1"));
    let form = b.get("/login?expired=1").await;
    assert!(
        form.body.contains("your session has expired"),
        "{}",
        form.body
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_token_ends_its_sessions() {
    let env = Env::start().await;
    let mut b = env.signed_in(&env.checkout_exp).await;
    assert_eq!(b.get("/experiments").await.status, StatusCode::OK);
    let (s, v) = env
        .api(
            Method::DELETE,
            &format!("/api/v1/keys/{}", env.checkout_exp_id),
            ADMIN,
            None,
        )
        .await;
    assert!(s.is_success(), "{s} {v}");
    let p = b.get("/experiments").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location(), Some("/login"));
    assert!(env.portal.sessions().is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttons_follow_the_permission_table_and_forbidden_pages_answer_403() {
    let env = Env::start().await;
    env.setup_registry().await;
    env.create(&env.checkout_exp, "perm_exp", "checkout", json!({}))
        .await;
    env.act(&env.checkout_exp, "perm_exp", "submit", json!({}))
        .await;
    env.act(
        &env.checkout_exp,
        "perm_exp",
        "start",
        json!({"ramp_percent": 5}),
    )
    .await;
    // The owner's experimenter sees the buttons its role may use.
    let mut owner = env.signed_in(&env.checkout_exp).await;
    let page = owner.get("/experiments/perm_exp").await;
    assert!(page.body.contains("id=\"lifecycle\""), "{}", page.body);
    for action in ["ramp", "pause", "conclude"] {
        assert!(
            page.body
                .contains(&format!("/experiments/perm_exp/actions/{action}")),
            "{action}"
        );
    }
    assert!(page.body.contains("/experiments/perm_exp/kill"));
    // Not legal from running: no button.
    assert!(!page.body.contains("/actions/start"));
    assert!(page.body.contains("Results →"));
    // A viewer reads, with no button at all.
    let mut viewer = env.signed_in(&env.viewer).await;
    let page = viewer.get("/experiments/perm_exp").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("id=\"lifecycle\""), "{}", page.body);
    let kill = viewer.get("/experiments/perm_exp/kill").await;
    assert_eq!(kill.status, StatusCode::FORBIDDEN);
    assert!(kill.body.contains("experiments:kill"), "{}", kill.body);
    // Another team's experimenter: no buttons, and its results are 403.
    let mut other = env.signed_in(&env.search_exp).await;
    let page = other.get("/experiments/perm_exp").await;
    assert!(!page.body.contains("id=\"lifecycle\""));
    assert!(!page.body.contains("Results →"));
    let results = other.get("/experiments/perm_exp/results").await;
    assert_eq!(results.status, StatusCode::FORBIDDEN);
    assert!(results.body.contains("results:read"), "{}", results.body);
    assert!(results.body.contains("belongs to team"), "{}", results.body);
    // Posting the action anyway is refused by the service, audited as a denial.
    let csrf = other.csrf().await;
    let p = other
        .post(
            "/experiments/perm_exp/actions/pause",
            &[("csrf", &csrf), ("reason", "mine now")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let (_, audit) = env
        .api(Method::GET, "/api/v1/audit?action=denied", ADMIN, None)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"] == "search-experimenter"),
        "{audit}"
    );
    let (_, e) = env
        .api(Method::GET, "/api/v1/experiments/perm_exp", ADMIN, None)
        .await;
    assert_eq!(e["status"], "running");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_shown_on_the_page_with_the_services_message() {
    let env = Env::start().await;
    env.setup_registry().await;
    env.create(&env.checkout_exp, "ramp_exp", "checkout", json!({}))
        .await;
    env.act(&env.checkout_exp, "ramp_exp", "submit", json!({}))
        .await;
    env.act(
        &env.checkout_exp,
        "ramp_exp",
        "start",
        json!({"ramp_percent": 20}),
    )
    .await;
    let mut b = env.signed_in(&env.checkout_exp).await;
    let csrf = b.csrf().await;
    let p = b
        .post(
            "/experiments/ramp_exp/actions/ramp",
            &[("csrf", &csrf), ("ramp_percent", "10")],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("ramp_percent can only go up"), "{}", p.body);
    let p = b
        .post(
            "/experiments/ramp_exp/actions/ramp",
            &[("csrf", &csrf), ("ramp_percent", "lots")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("ramp_percent must be a number"),
        "{}",
        p.body
    );
    // Kill needs the confirmation and a reason.
    let p = b
        .post(
            "/experiments/ramp_exp/actions/kill",
            &[("csrf", &csrf), ("reason", "errors")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(p.body.contains("tick the confirmation"), "{}", p.body);
    let p = b
        .post(
            "/experiments/ramp_exp/actions/kill",
            &[("csrf", &csrf), ("confirm", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("reason"), "{}", p.body);
    let p = b
        .post(
            "/experiments/ramp_exp/actions/kill",
            &[
                ("csrf", &csrf),
                ("confirm", "yes"),
                ("reason", "checkout errors doubled"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = b.get("/experiments/ramp_exp").await;
    assert!(
        page.body.contains("killed: checkout errors doubled"),
        "{}",
        page.body
    );
    assert!(page.body.contains("status-killed"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_searches_filters_and_pages() {
    let env = Env::start().await;
    env.setup_registry().await;
    for i in 0..55 {
        let team = if i % 5 == 0 { "search" } else { "checkout" };
        let token = if team == "search" {
            &env.search_exp
        } else {
            &env.checkout_exp
        };
        env.create(
            token,
            &format!("exp_{i:02}"),
            team,
            json!({"name": if i == 7 { "Blue button".to_owned() } else { format!("Experiment {i}") }}),
        )
        .await;
    }
    env.act(&env.checkout_exp, "exp_01", "submit", json!({}))
        .await;
    // Names that a search through the stored JSON could get wrong.
    for (key, name) in [
        ("pct", "Green 100% _sale_"),
        ("umlaut", "Über checkout"),
        ("quoted", "the \"fast\" path"),
    ] {
        env.create(&env.checkout_exp, key, "checkout", json!({"name": name}))
            .await;
    }
    let mut b = env.signed_in(&env.viewer).await;
    for (q, key) in [
        ("100%", "pct"),
        ("_sale_", "pct"),
        ("über", "umlaut"),
        ("\"fast\"", "quoted"),
    ] {
        let url = format!(
            "/experiments?{}",
            serde_urlencoded::to_string([("q", q)]).unwrap()
        );
        let p = b.get(&url).await;
        assert!(p.body.contains("1 experiment match"), "{q}: {}", p.body);
        assert!(
            p.body.contains(&format!("/experiments/{key}\"")),
            "{q}: {}",
            p.body
        );
    }
    let p1 = b.get("/experiments").await;
    assert!(p1.body.contains("58 experiments"), "{}", p1.body);
    assert_eq!(
        p1.body.matches("<tr>").count(),
        51,
        "50 rows and the header"
    );
    assert!(p1.body.contains("Page 1 of 2"));
    let p2 = b.get("/experiments?page=2").await;
    assert!(
        p2.body.contains("exp_54") && !p2.body.contains("exp_00"),
        "{}",
        p2.body
    );
    let blue = b.get("/experiments?q=blue").await;
    assert!(blue.body.contains("1 experiment match"), "{}", blue.body);
    assert!(blue.body.contains("exp_07"));
    let search = b.get("/experiments?team=search").await;
    assert!(
        search.body.contains("11 experiments match"),
        "{}",
        search.body
    );
    let submitted = b.get("/experiments?status=submitted").await;
    assert!(
        submitted.body.contains("1 experiment match"),
        "{}",
        submitted.body
    );
    assert!(submitted.body.contains("exp_01"));
    let none = b.get("/experiments?q=nothing-like-this").await;
    assert!(none.body.contains("no experiment matches these filters"));
    let bad = b.get("/experiments?status=sleeping").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("unknown status"), "{}", bad.body);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_page_shows_every_look_with_plots_health_and_decision() {
    let next = strata_portal::NextRun::default();
    next.set(std::time::SystemTime::now() + Duration::from_secs(1800));
    let env = Env::start_with(PortalSettings {
        analysis_interval: Some(Duration::from_secs(3600)),
        next_analysis: Some(next),
        ..PortalSettings::default()
    })
    .await;
    env.setup_registry().await;
    env.create(&env.checkout_exp, "res_exp", "checkout", json!({}))
        .await;
    env.act(&env.checkout_exp, "res_exp", "submit", json!({}))
        .await;
    let started = env
        .act(
            &env.checkout_exp,
            "res_exp",
            "start",
            json!({"ramp_percent": 50}),
        )
        .await;
    let start = started["started_at"].as_str().unwrap().to_owned();
    let mut b = env.signed_in(&env.checkout_exp).await;
    let empty = b.get("/experiments/res_exp/results").await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.body);
    assert!(
        empty
            .body
            .contains("no looks yet: the next scheduled analysis runs at")
            && empty.body.contains("(in 29 min)")
            && empty.body.contains("then every 1 h"),
        "{}",
        empty.body
    );
    assert!(empty.body.contains("no guardrail evaluation yet"));
    let t0 = chrono::DateTime::parse_from_rfc3339(&start).unwrap();
    for look in 1..=3u32 {
        let as_of = (t0 + chrono::Duration::milliseconds(i64::from(look) * 10))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        env.publish(
            "res_exp",
            &results(
                "res_exp",
                &as_of,
                &start,
                0.05 * f64::from(look),
                look,
                look == 3,
            ),
        )
        .await;
    }
    let page = b.get("/experiments/res_exp/results").await;
    assert_eq!(page.status, StatusCode::OK);
    let body = &page.body;
    assert!(body.contains("Look 3 of 3"), "{body}");
    // The SRM banner, the failed check, the decision and its reasons.
    assert!(body.contains("id=\"srm\""), "{body}");
    assert!(body.contains("Sample ratio mismatch"));
    assert!(body.contains("health-fail"));
    assert!(body.contains("verdict-unhealthy"));
    assert!(body.contains("about 11 days left"));
    // A forest plot per metric, and the effect over the three looks.
    assert!(body.contains("id=\"metric-conversion\"") && body.contains("id=\"metric-revenue\""));
    assert!(body.matches("<svg").count() >= 3, "{body}");
    assert!(body.contains("Simpson's paradox: conversion (treatment)"));
    // An earlier look by its number.
    let first = b.get("/experiments/res_exp/results?look=1").await;
    assert!(first.body.contains("Look 1 of 3"), "{}", first.body);
    assert!(!first.body.contains("id=\"srm\""));
    let missing = b.get("/experiments/res_exp/results?look=99").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Killed after a look that said keep running: the list shows no advice
    // to keep it running, and the results page says the decision is not an
    // action left to take.
    let as_of = (t0 + chrono::Duration::milliseconds(40))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    env.publish(
        "res_exp",
        &results("res_exp", &as_of, &start, 0.2, 4, false),
    )
    .await;
    let list = b.get("/experiments").await;
    assert!(list.body.contains("verdict-keep_running"), "{}", list.body);
    env.act(
        &env.checkout_exp,
        "res_exp",
        "kill",
        json!({"reason": "errors"}),
    )
    .await;
    let list = b.get("/experiments").await;
    assert!(!list.body.contains("verdict-keep_running"), "{}", list.body);
    assert!(list.body.contains(">ended</span>"), "{}", list.body);
    let page = b.get("/experiments/res_exp/results").await;
    assert!(
        page.body
            .contains("this experiment is killed: it no longer runs"),
        "{}",
        page.body
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_lookup_says_which_experiments_assign_a_unit_and_why_not() {
    let env = Env::start().await;
    env.setup_registry().await;
    env.create(
        &env.checkout_exp,
        "us_only",
        "checkout",
        json!({"size": null, "range": [0, 1000],
               "targeting": {"all": [{"attr": "country", "op": "in", "values": ["US", "CA"]}]}}),
    )
    .await;
    env.act(&env.checkout_exp, "us_only", "submit", json!({}))
        .await;
    env.act(
        &env.checkout_exp,
        "us_only",
        "start",
        json!({"ramp_percent": 100}),
    )
    .await;
    let mut b = env.signed_in(&env.viewer).await;
    let form = b.get("/lookup").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("id=\"context\""), "{}", form.body);
    let look = |ctx: &str| {
        format!(
            "/lookup?{}",
            serde_urlencoded::to_string([("context", ctx)]).unwrap()
        )
    };
    let us = b.get(&look(r#"{"user_id": "u-1", "country": "US"}"#)).await;
    assert_eq!(us.status, StatusCode::OK);
    assert!(us.body.contains("In 1 of 1 experiments"), "{}", us.body);
    let fr = b.get(&look(r#"{"user_id": "u-1", "country": "FR"}"#)).await;
    assert!(fr.body.contains("In 0 of 1 experiments"), "{}", fr.body);
    assert!(fr.body.contains("targeting not met"), "{}", fr.body);
    assert!(fr.body.contains("country"), "{}", fr.body);
    let nobody = b.get(&look(r#"{"country": "US"}"#)).await;
    assert!(nobody.body.contains("no unit"), "{}", nobody.body);
    let bad = b.get(&look("[1, 2")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.body.contains("context is not valid JSON"),
        "{}",
        bad.body
    );
    // The API answers the same question.
    let (s, v) = env
        .api(
            Method::POST,
            "/api/v1/explain",
            &env.viewer,
            Some(json!({"context": {"user_id": "u-1", "country": "FR"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["experiments"][0]["outcome"], "targeting_not_met");
    assert_eq!(v["experiments"][0]["variant"], serde_json::Value::Null);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_experiment_form_shows_the_apis_refusals_at_the_field_and_creates_the_draft() {
    let env = Env::start().await;
    env.setup_registry().await;
    let mut viewer = env.signed_in(&env.viewer).await;
    assert!(!viewer
        .get("/experiments")
        .await
        .body
        .contains("/experiments/new"));
    let p = viewer.get("/experiments/new").await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let mut b = env.signed_in(&env.checkout_exp).await;
    assert!(b
        .get("/experiments")
        .await
        .body
        .contains("/experiments/new"));
    let form = b.get("/experiments/new").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body.contains("<option value=\"conversion\""),
        "{}",
        form.body
    );
    assert!(form.body.contains("of 1000 buckets free"), "{}", form.body);
    let csrf = form.csrf();
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("key", "wizard_exp"),
        ("name", "Wizard"),
        ("hypothesis", "a shorter form converts better"),
        ("owner_team", "checkout"),
        ("unit", "user_id"),
        ("variant_key_1", "control"),
        ("variant_weight_1", "50"),
        ("variant_key_2", "short_form"),
        ("variant_weight_2", "50"),
        ("layer", "checkout_layer"),
        ("size", "100"),
        ("primary_metric", "conversion"),
        ("secondary", "revenue"),
        ("mde", "-0.5"),
        ("alpha", "0.05"),
        ("planned_units", "20000"),
        ("min_duration_days", "7"),
        ("sequential", "group_sequential"),
        ("ramp_plan", "10:24, 50:24, 100"),
        ("intent", "create"),
    ];
    // The service refuses the mde; the page says so at the field and keeps
    // what was typed.
    let p = b.post("/experiments/new", &fields).await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(
        p.body.contains("id=\"mde\" name=\"mde\" value=\"-0.5\""),
        "{}",
        p.body
    );
    assert!(p.body.contains("aria-invalid=\"true\""), "{}", p.body);
    assert!(p.body.contains("mde"), "{}", p.body);
    assert!(
        p.body.contains("value=\"a shorter form converts better\"")
            || p.body.contains(">a shorter form converts better<")
    );
    // The power calculator plans the units from the mde and the traffic.
    for f in fields.iter_mut() {
        if f.0 == "mde" {
            f.1 = "0.05";
        }
    }
    let mut with_power = fields.clone();
    with_power.retain(|f| f.0 != "intent");
    with_power.extend([
        ("baseline_rate", "0.1"),
        ("daily_traffic", "10000"),
        ("intent", "power"),
    ]);
    let p = b.post("/experiments/new", &with_power).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("units per variant"), "{}", p.body);
    assert!(p.body.contains("days at the daily traffic"), "{}", p.body);
    // Without traffic typed, the layer's running experiments' looks are
    // read; with none, the page says why there is no duration.
    let mut observed = with_power.clone();
    observed.retain(|f| f.0 != "daily_traffic");
    let p = b.post("/experiments/new", &observed).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(p.body.contains("units per variant"), "{}", p.body);
    assert!(
        p.body
            .contains("no running experiment of this layer has a look"),
        "{}",
        p.body
    );
    assert!(
        !p.body.contains("name=\"planned_units\" value=\"20000\""),
        "the plan fills the units in"
    );
    // Corrected, the draft is created as typed.
    let p = b.post("/experiments/new", &fields).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location(), Some("/experiments/wizard_exp?done=create"));
    let (_, e) = env
        .api(Method::GET, "/api/v1/experiments/wizard_exp", ADMIN, None)
        .await;
    assert_eq!(e["status"], "draft");
    assert_eq!(e["variants"][1]["key"], "short_form");
    assert_eq!(e["secondary_metrics"], json!(["revenue"]));
    assert_eq!(e["ramp_plan"].as_array().unwrap().len(), 3);
    assert_eq!(e["created_by"], "checkout-experimenter");
    // Another team's experiment is refused by the service, at the team.
    for f in fields.iter_mut() {
        match f.0 {
            "owner_team" => f.1 = "search",
            "key" => f.1 = "not_mine",
            _ => {}
        }
    }
    let p = b.post("/experiments/new", &fields).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_pages_offer_each_role_its_changes_through_the_services() {
    let env = Env::start().await;
    env.setup_registry().await;
    // A viewer reads the shared pages, and is offered no change.
    let mut viewer = env.signed_in(&env.viewer).await;
    let nav = viewer.get("/experiments").await.body;
    for (href, shown) in [
        ("/layers", true),
        ("/registry", true),
        ("/guardrails", true),
        ("/holdout", true),
        ("/audit", false),
        ("/keys", false),
        ("/alerts", false),
    ] {
        assert_eq!(nav.contains(&format!("href=\"{href}\"")), shown, "{href}");
    }
    let layers = viewer.get("/layers").await;
    assert!(layers.body.contains("checkout_layer"), "{}", layers.body);
    assert!(!layers.body.contains("New layer"));
    assert!(!viewer
        .get("/registry")
        .await
        .body
        .contains("New definition"));
    assert_eq!(viewer.get("/keys").await.status, StatusCode::FORBIDDEN);
    assert_eq!(viewer.get("/audit").await.status, StatusCode::FORBIDDEN);
    // An analyst defines metrics; a definition the registry refuses is
    // shown with what was typed.
    let (analyst, _) = env.key("analyst", "").await;
    let mut a = env.signed_in(&analyst).await;
    let csrf = a.csrf().await;
    let p = a
        .post(
            "/registry",
            &[
                ("csrf", &csrf),
                ("definition", r#"{"key": "aov", "type": "mean"}"#),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(
        p.body.contains("&quot;aov&quot;") || p.body.contains("\"aov\""),
        "kept: {}",
        p.body
    );
    let p = a
        .post(
            "/registry",
            &[
                ("csrf", &csrf),
                (
                    "definition",
                    r#"{"key": "checkouts", "type": "count", "filter": {"type": "checkout"}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(a.get("/registry").await.body.contains("checkouts"));
    // Edited while nothing relies on it; refused, naming the experiment,
    // once one does.
    let edit = a.get("/registry/checkouts/edit").await;
    assert_eq!(edit.status, StatusCode::OK, "{}", edit.body);
    assert!(
        edit.body.contains("&quot;count&quot;") || edit.body.contains("\"count\""),
        "{}",
        edit.body
    );
    let p = a
        .post(
            "/registry/checkouts/edit",
            &[
                ("csrf", &csrf),
                (
                    "definition",
                    r#"{"key": "checkouts", "type": "binomial", "filter": {"type": "checkout"}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert!(a.get("/registry").await.body.contains("binomial"));
    env.create(
        &env.checkout_exp,
        "uses_checkouts",
        "checkout",
        json!({"secondary_metrics": ["checkouts"]}),
    )
    .await;
    let p = a
        .post(
            "/registry/checkouts/edit",
            &[
                ("csrf", &csrf),
                (
                    "definition",
                    r#"{"key": "checkouts", "type": "count", "filter": {"type": "checkout"}}"#,
                ),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("uses_checkouts"), "{}", p.body);
    assert_eq!(
        viewer.get("/registry/checkouts/edit").await.status,
        StatusCode::FORBIDDEN
    );
    let p = a
        .post("/guardrails", &[("csrf", &csrf), ("definition", "{}")])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // The bot detection limits: the defaults until an analyst changes them.
    let page = a.get("/registry").await.body;
    assert!(
        page.contains("Bot detection") && page.contains("the defaults"),
        "{page}"
    );
    assert!(page.contains("20000"), "{page}");
    let p = a
        .post(
            "/registry/bot-detection",
            &[("csrf", &csrf), ("bot_detection", r#"{"per_day": 75}"#)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = a.get("/registry").await.body;
    assert!(page.contains("75") && page.contains("revision 1"), "{page}");
    let p = a
        .post(
            "/registry/bot-detection",
            &[("csrf", &csrf), ("bot_detection", r#"{"per_day": -3}"#)],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("per_day"), "{}", p.body);
    let viewer_csrf = viewer.csrf().await;
    let p = viewer
        .post(
            "/registry/bot-detection",
            &[("csrf", &viewer_csrf), ("bot_detection", "{}")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    // An admin runs layers, the holdout, keys and alerts.
    let mut admin = env.signed_in(&env.checkout_admin).await;
    let csrf = admin.csrf().await;
    let p = admin
        .post("/layers", &[("csrf", &csrf), ("key", "checkout_layer")])
        .await;
    assert_eq!(p.status, StatusCode::CONFLICT, "{}", p.body);
    assert!(p.body.contains("already exists"), "{}", p.body);
    let p = admin
        .post(
            "/layers",
            &[
                ("csrf", &csrf),
                ("key", "search_layer"),
                ("description", "search ranking"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let p = admin
        .post("/holdout", &[("csrf", &csrf), ("percent", "5")])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let before = admin.get("/holdout").await.body;
    assert!(before.contains("5 %"), "{before}");
    let p = admin
        .post(
            "/holdout",
            &[("csrf", &csrf), ("percent", "5"), ("rotate", "yes")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_ne!(admin.get("/holdout").await.body, before, "a new salt");
    let p = admin
        .post("/holdout", &[("csrf", &csrf), ("percent", "250")])
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    let audit = admin.get("/audit?action=holdout.rotate").await;
    assert_eq!(audit.status, StatusCode::OK);
    assert!(
        audit.body.contains("holdout.rotate") && audit.body.contains("checkout-admin"),
        "{}",
        audit.body
    );
    // A key's token is shown once; its holder signs in with it; revoking it
    // ends the session.
    let p = admin
        .post(
            "/keys",
            &[
                ("csrf", &csrf),
                ("name", "ana"),
                ("kind", "api"),
                ("role", "experimenter"),
                ("team", ""),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("an experimenter key needs a team"),
        "{}",
        p.body
    );
    let p = admin
        .post(
            "/keys",
            &[
                ("csrf", &csrf),
                ("name", "ana"),
                ("kind", "api"),
                ("role", "viewer"),
                ("team", "search"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let at = p
        .body
        .find("<code id=\"token\">")
        .expect("the token is shown")
        + "<code id=\"token\">".len();
    let token = p.body[at..at + p.body[at..].find('<').unwrap()].to_owned();
    assert!(
        !admin.get("/keys").await.body.contains(&token),
        "shown only once"
    );
    let mut ana = env.signed_in(&token).await;
    assert_eq!(ana.get("/experiments").await.status, StatusCode::OK);
    let (_, keys) = env.api(Method::GET, "/api/v1/keys", ADMIN, None).await;
    let id = keys["items"]
        .as_array()
        .or(keys.as_array())
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ana")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = admin
        .post(&format!("/keys/{id}/revoke"), &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(ana.get("/experiments").await.location(), Some("/login"));
    // Webhooks: the service's checks, then one registered and deleted.
    let p = admin
        .post(
            "/alerts",
            &[
                ("csrf", &csrf),
                ("url", "https://hooks.example.com/x"),
                ("secret", "short"),
                ("events", "guardrail.breach"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(p.body.contains("secret"), "{}", p.body);
    let p = admin
        .post(
            "/alerts",
            &[
                ("csrf", &csrf),
                ("url", "https://hooks.example.com/x"),
                ("secret", "0123456789abcdef0123"),
                ("events", "guardrail.breach"),
                ("events", "health.srm"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = admin.get("/alerts").await.body;
    assert!(
        page.contains("https://hooks.example.com/x")
            && page.contains("guardrail.breach, health.srm"),
        "{page}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_awaiting_approval_is_confirmed_and_a_look_retracted_from_the_results_page() {
    use strata_server::guardrail::{evaluate, EvaluationInput, PartitionFacts, VariantFacts};
    use strata_server::service::{Actor, GuardrailService};
    let env = Env::start().await;
    env.setup_registry().await;
    env.create(
        &env.checkout_exp,
        "guard_exp",
        "checkout",
        json!({"requires_approval": true}),
    )
    .await;
    env.act(&env.checkout_exp, "guard_exp", "submit", json!({}))
        .await;
    env.act(&env.checkout_admin, "guard_exp", "approve", json!({}))
        .await;
    let started = env
        .act(
            &env.checkout_exp,
            "guard_exp",
            "start",
            json!({"ramp_percent": 50}),
        )
        .await;
    let start = started["started_at"].as_str().unwrap().to_owned();
    for look in 1..=2u32 {
        let as_of = (chrono::DateTime::parse_from_rfc3339(&start).unwrap()
            + chrono::Duration::milliseconds(i64::from(look)))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        env.publish(
            "guard_exp",
            &results("guard_exp", &as_of, &start, 0.01, look, false),
        )
        .await;
    }
    // The monitor found a breach whose action waits for a person.
    let variant = |key: &str, p: f64| VariantFacts {
        key: key.into(),
        weight: 0.5,
        exposed: 5100,
        events: 100_000,
        n: 5000,
        mean: p,
        variance: p * (1.0 - p) * 5000.0 / 4999.0,
    };
    let input = EvaluationInput {
        experiment: "guard_exp".into(),
        guardrail: serde_json::from_value(json!({"key": "errors", "metric": "conversion",
            "threshold": 0.01, "direction": "increase_is_bad", "window_minutes": 15,
            "min_samples": 500, "auto_action": "kill"}))
        .unwrap(),
        requires_approval: true,
        control: "control".into(),
        budget: 0.01,
        guardrails: 1,
        planned_units: 20_000,
        config_version: 1,
        cutoff: start.clone(),
        activated_at: Some(start.clone()),
        age_minutes: 180.0,
        pipeline_lag_seconds: 1.0,
        partitions: (0..4)
            .map(|i| PartitionFacts {
                part: format!("{i:02}"),
                events: 1000,
                silent_seconds: 1.0,
            })
            .collect(),
        partition_count: 4,
        variants: vec![variant("control", 0.02), variant("treatment", 0.10)],
        data_error: None,
    };
    let evaluation = evaluate(&input);
    let state = env.server.as_ref().unwrap().state.clone();
    GuardrailService::new(state)
        .record(
            &Actor::system("guardrails").granting([strata_server::auth::Perm::ResultsWrite]),
            &input,
            &evaluation,
        )
        .await
        .unwrap();
    // A viewer sees it, with no button; the owning team's experimenter
    // confirms it and the experiment is killed.
    let mut viewer = env.signed_in(&env.viewer).await;
    let page = viewer.get("/experiments/guard_exp/results").await;
    assert!(
        page.body.contains("Guardrail errors breached"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("/guardrails/errors/confirm"));
    assert!(!page.body.contains("Retract this look"));
    let mut owner = env.signed_in(&env.checkout_exp).await;
    let page = owner.get("/experiments/guard_exp/results").await;
    assert!(
        page.body.contains("/guardrails/errors/confirm"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let p = owner
        .post(
            "/experiments/guard_exp/guardrails/errors/confirm",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = owner.get(p.location().unwrap()).await;
    assert!(
        page.body
            .contains("breach of errors confirmed; the experiment is killed"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("Guardrail errors breached"));
    let (_, e) = env
        .api(Method::GET, "/api/v1/experiments/guard_exp", ADMIN, None)
        .await;
    assert_eq!(e["status"], "killed");
    // An admin retracts the latest look: the one before is the latest again.
    let mut admin = env.signed_in(&env.checkout_admin).await;
    let page = admin.get("/experiments/guard_exp/results").await;
    assert!(
        page.body.contains("Look 2 of 2") && page.body.contains("Retract this look"),
        "{}",
        page.body
    );
    let csrf = page.csrf();
    let p = admin
        .post(
            "/experiments/guard_exp/results/2/retract",
            &[("csrf", &csrf), ("reason", "double-counted events")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = admin.get("/experiments/guard_exp/results").await;
    assert!(page.body.contains("Look 1 of 2"), "{}", page.body);
    let old = admin.get("/experiments/guard_exp/results?look=2").await;
    assert!(
        old.body.contains("this look was retracted") && old.body.contains("double-counted events"),
        "{}",
        old.body
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_page_is_the_portals_not_found_page_and_the_api_stays_json() {
    let env = Env::start().await;
    let client = reqwest::Client::new();
    let get = |path: &str, accept: &str| {
        client
            .get(format!("{}{path}", env.base))
            .header("accept", accept)
            .send()
    };
    let page = get("/experimentz", "text/html,application/xhtml+xml")
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    let body = page.text().await.unwrap();
    assert!(
        body.contains("there is no such page") && body.contains("/experiments"),
        "{body}"
    );
    // The API's prefixes, and clients that do not ask for HTML, get JSON.
    for (path, accept) in [
        ("/api/v1/nope", "text/html"),
        ("/experimentz", "application/json"),
    ] {
        let r = get(path, accept).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "not_found", "{path}: {v}");
    }
    env.stop().await;
}

/// A look at the holdout's period as the scheduled analysis publishes it:
/// the holdout against everyone else on `conversion` (a lift of `lift`),
/// with its contamination check.
pub fn holdout_look(
    as_of: &str,
    lift: f64,
    contaminated: u64,
) -> strata_model::holdout::HoldoutLook {
    let base = 0.10;
    let status = if contaminated > 0 { "fail" } else { "ok" };
    let results = serde_json::from_value(json!({
        "experiment": "$holdout", "as_of": as_of, "start": "2026-01-01T00:00:00Z", "analysis": "itt",
        "units": {"holdout": 500, "rest": 9500},
        "srm": {"chi2": 0.1, "df": 1, "p_value": 0.75, "flagged": false,
                "observed": {"holdout": 500, "rest": 9500}, "expected": {"holdout": 500.0, "rest": 9500.0}},
        "metrics": [{"metric": "conversion", "role": "primary", "type": "binomial", "direction": "increase_is_good",
            "variants": {"holdout": {"n": 500, "mean": base}, "rest": {"n": 9500, "mean": base * (1.0 + lift)}},
            "effects": [{"variant": "rest", "control": "holdout", "delta": base * lift,
                "ci": [0.0, 0.0], "relative": lift, "relative_ci": [lift - 0.03, lift + 0.03],
                "p_value": 0.001, "significant": true, "tier": "high", "warnings": []}]}],
        "segments": {}, "novelty": null, "warnings": [],
        "health": [{"check": "holdout_contamination", "status": status,
            "figures": {"holdout_units": 500.0, "contaminated_units": contaminated as f64},
            "message": format!("{contaminated} of the 500 held-out units saw a treatment")}]
    }))
    .unwrap();
    strata_model::holdout::HoldoutLook {
        as_of: as_of.to_owned(),
        final_look: false,
        results,
        contamination: strata_model::holdout::Contamination {
            holdout_units: 500,
            contaminated_units: contaminated,
            exposures: Vec::new(),
        },
        attribution: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holdout_page_shows_what_everything_shipped_adds_up_to() {
    use strata_server::auth::Perm;
    use strata_server::service::{Actor, HoldoutService};
    let env = Env::start().await;
    env.setup_registry().await;
    let mut admin = env.signed_in(&env.checkout_admin).await;
    let csrf = admin.csrf().await;
    let p = admin
        .post(
            "/holdout",
            &[
                ("csrf", &csrf),
                ("percent", "5"),
                ("rotate_every_days", "90"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let page = admin.get("/holdout").await.body;
    assert!(page.contains("Rotated every 90 days"), "{page}");
    assert!(page.contains("No key metrics are set"), "{page}");
    let p = admin
        .post(
            "/holdout",
            &[
                ("csrf", &csrf),
                ("percent", "5"),
                ("rotate_every_days", "soon"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("rotate_every_days must be a number"),
        "{}",
        p.body
    );
    let p = admin
        .post(
            "/holdout/key-metrics",
            &[("csrf", &csrf), ("key_metrics", "conversion, clicks")],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST);
    assert!(
        p.body.contains("unknown metric") && p.body.contains("conversion, clicks"),
        "{}",
        p.body
    );
    let p = admin
        .post(
            "/holdout/key-metrics",
            &[("csrf", &csrf), ("key_metrics", "conversion")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    // A winner concluded during the period, measured by its own look.
    env.create(
        &env.checkout_exp,
        "checkout_redesign",
        "checkout",
        json!({}),
    )
    .await;
    for action in ["submit", "start"] {
        env.act(&env.checkout_exp, "checkout_redesign", action, json!({}))
            .await;
    }
    let now = chrono::Utc::now();
    let at = |d: i64| {
        (now + chrono::Duration::seconds(d)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    env.publish(
        "checkout_redesign",
        &results("checkout_redesign", &at(0), &at(-3600), 0.12, 4, false),
    )
    .await;
    env.act(
        &env.checkout_exp,
        "checkout_redesign",
        "conclude",
        json!({"winner": "treatment"}),
    )
    .await;
    let state = env.server.as_ref().unwrap().state.clone();
    let actor = Actor::system("analysis").granting([Perm::HoldoutWrite]);
    let keys = vec!["conversion".to_owned()];
    HoldoutService::new(state.clone())
        .publish_look(&actor, 1, holdout_look(&at(1), 0.09, 40), "rest", &keys)
        .await
        .unwrap();
    let page = admin.get("/holdout").await.body;
    assert!(page.contains("Key metrics: conversion"), "{page}");
    assert!(page.contains("+9.0%"), "the measured lift: {page}");
    assert!(page.contains("+12.0%"), "the winner's claimed lift: {page}");
    assert!(page.contains("(sum of 1)"), "{page}");
    assert!(
        page.contains("href=\"/experiments/checkout_redesign\""),
        "{page}"
    );
    assert!(page.contains("Contamination: fail"), "{page}");
    assert!(page.contains("running"), "the period history: {page}");
    // Another team's experimenter sees the organisation's figures, not the
    // winner's own lifts (its team's results).
    let mut other = env.signed_in(&env.search_exp).await;
    let page = other.get("/holdout").await.body;
    assert!(
        page.contains("+9.0%") && page.contains("(sum of 1)"),
        "{page}"
    );
    assert!(
        page.contains("withheld: another team") && !page.contains("+12.0% ["),
        "{page}"
    );
    // A viewer reads it and is offered no change.
    let mut viewer = env.signed_in(&env.viewer).await;
    let page = viewer.get("/holdout").await.body;
    assert!(
        page.contains("+9.0%") && !page.contains("Save key metrics"),
        "{page}"
    );
    let csrf = viewer.csrf().await;
    let p = viewer
        .post(
            "/holdout/key-metrics",
            &[("csrf", &csrf), ("key_metrics", "revenue")],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    env.stop().await;
}
