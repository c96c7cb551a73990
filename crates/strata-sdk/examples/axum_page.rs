//! A tiny axum app that serves a page by variant.
//!
//! ```sh
//! # Against a running `strata serve` (keys from `strata token create` or POST /api/v1/keys):
//! STRATA_URL=http://127.0.0.1:8080 STRATA_SDK_KEY=… STRATA_INGEST_KEY=… \
//!     cargo run -p strata-sdk --example axum_page
//! # Or with no server at all, from the example snapshot:
//! STRATA_BOOTSTRAP=examples/snapshot.json cargo run -p strata-sdk --example axum_page
//! curl 'http://127.0.0.1:3000/?user=user-42'
//! curl -X POST 'http://127.0.0.1:3000/buy?user=user-42&amount=19.99'
//! ```
//!
//! `GET /` picks the page of the `exp_checkout_button` experiment (flag
//! `f_2b` of `examples/snapshot.json`; set `STRATA_FLAG` for another), which
//! logs one exposure per user and day; `POST /buy` tracks a purchase.
//! Ctrl-C flushes what is buffered before exiting.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use strata_sdk::{Client, Context};

#[derive(Clone)]
struct App {
    strata: Client,
    flag: String,
}

#[derive(Deserialize)]
struct Visitor {
    user: Option<String>,
    country: Option<String>,
    amount: Option<f64>,
}

impl Visitor {
    fn context(&self) -> Context {
        let mut ctx = Context::for_user(self.user.as_deref().unwrap_or("anonymous"));
        ctx.insert("country", self.country.as_deref().unwrap_or("US"));
        ctx
    }
}

async fn page(State(app): State<App>, Query(v): Query<Visitor>) -> Html<String> {
    // Never fails and never waits on the network: the default when in doubt.
    let variant = app.strata.variant(&v.context(), &app.flag, "control");
    let button = match variant.as_str() {
        "green" => r#"<button style="background:#2a2">Buy now</button>"#,
        _ => r#"<button>Buy</button>"#,
    };
    Html(format!(
        "<!doctype html><title>Checkout</title><h1>Checkout</h1>{button}\
         <p><small>variant {variant} ({:?}), config version {}</small></p>",
        variant.reason(),
        app.strata.version()
    ))
}

async fn buy(State(app): State<App>, Query(v): Query<Visitor>) -> &'static str {
    app.strata
        .track(&v.context(), "purchase", v.amount.or(Some(1.0)), None);
    "thanks\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let url = env("STRATA_URL").unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let mut builder = Client::builder(&url, &env("STRATA_SDK_KEY").unwrap_or_default())
        .hooks(|e: &strata_sdk::SdkEvent<'_>| eprintln!("strata: {e:?}"));
    if let Some(key) = env("STRATA_INGEST_KEY") {
        builder = builder.ingest_key(key);
    }
    if let Some(file) = env("STRATA_BOOTSTRAP") {
        builder = builder.bootstrap_file(file);
    }
    let strata = builder.build()?;
    if !strata.ready(Duration::from_secs(2)).await {
        eprintln!("no config yet: serving defaults until one arrives");
    }
    let app = App {
        strata: strata.clone(),
        flag: env("STRATA_FLAG").unwrap_or_else(|| "f_2b".to_owned()),
    };
    let router = Router::new()
        .route("/", get(page))
        .route("/buy", post(buy))
        .with_state(app);
    let addr = env("LISTEN").unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let report = strata.shutdown(Duration::from_secs(5)).await;
    eprintln!("strata: {report:?}");
    Ok(())
}
