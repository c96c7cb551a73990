//! The ingestion endpoints over HTTP on loopback, into an in-memory sink:
//! batches, framing, limits, auth, deduplication and backpressure.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_pipeline::http::{Backpressure, IngestConfig};
use strata_pipeline::limits::Rate;
use strata_pipeline::memory::MemorySink;
use strata_pipeline::parse::ParseLimits;
use strata_pipeline::{Pressure, Record};

use crate::ingest_common::{event, exposure, serve, TOKEN};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(
    base: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let mut req = client()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    (status, retry, body)
}

async fn post_json(base: &str, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    post(
        base,
        path,
        serde_json::to_vec(body).unwrap(),
        &[("content-type", "application/json")],
    )
    .await
}

#[tokio::test]
async fn valid_invalid_and_mixed_batches() {
    let sink = MemorySink::new();
    let srv = serve(Arc::new(sink.clone()), IngestConfig::default()).await;
    let batch = json!([
        event("e1", "u1", "purchase"),
        {"event_id": "e2", "type": "purchase", "ts": 1},
        event("e3", "u3", "purchase"),
        {"event_id": "e4", "unit_id": "u4", "type": "purchase", "ts": "not a time"},
    ]);
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["duplicates"], 0);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 1);
    assert_eq!(rejected[0]["field"], "unit_id");
    assert_eq!(rejected[1]["index"], 3);
    assert_eq!(rejected[1]["field"], "ts");
    let stored: Vec<String> = sink
        .records()
        .into_iter()
        .map(|r| match r {
            Record::Event(e) => e.event_id,
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    assert_eq!(stored, vec!["e1", "e3"]);

    // all_or_nothing: the same batch stores nothing and answers 422.
    let (status, _, body) = post_json(
        &srv.base,
        "/collect/v1/events?all_or_nothing=true",
        &json!([
            event("e5", "u1", "purchase"),
            {"event_id": "e6", "type": "purchase", "ts": 1},
        ]),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "batch_rejected");
    assert_eq!(body["error"]["rejected"][0]["index"], 1);
    assert_eq!(sink.len(), 2);

    // Exposures: assigned_variant defaults to variant.
    let (status, _, body) = post_json(
        &srv.base,
        "/collect/v1/exposures",
        &json!([exposure("u1", "exp", "b")]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    let Some(Record::Exposure(x)) = sink.records().pop() else {
        panic!("no exposure stored")
    };
    assert_eq!(x.assigned_variant, "b");
    assert!(x.received_at > 0);

    // Malformed JSON: 400 in the project's error format.
    let (status, _, body) = post(&srv.base, "/collect/v1/events", b"[{".to_vec(), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_body");
    assert!(body["error"]["message"].as_str().unwrap().contains("json"));
}

#[tokio::test]
async fn gzip_and_ndjson_bodies() {
    let sink = MemorySink::new();
    let srv = serve(Arc::new(sink.clone()), IngestConfig::default()).await;
    let ndjson = format!("{}\n{}\n", event("g1", "u", "t"), event("g2", "u", "t"));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(ndjson.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let (status, _, body) = post(
        &srv.base,
        "/collect/v1/events",
        gz,
        &[
            ("content-type", "application/x-ndjson"),
            ("content-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2);

    // A gzip bomb: 64 MiB of spaces inside a JSON array, ~64 KiB compressed.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(b"[").unwrap();
    enc.write_all(&vec![b' '; 64 << 20]).unwrap();
    enc.write_all(b"]").unwrap();
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let (status, _, body) = post(
        &srv.base,
        "/collect/v1/events",
        bomb,
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("decompression"));

    let (status, _, _) = post(
        &srv.base,
        "/collect/v1/events",
        b"[]".to_vec(),
        &[("content-encoding", "br")],
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(sink.len(), 2);
}

/// Writes `requests` on one connection (from a separate task, so that a
/// server that stops reading cannot block the test) and returns the status
/// of every response read before the server closes it.
async fn statuses_on_one_connection(base: &str, requests: Vec<u8>) -> Vec<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may close early; what it answered is what counts.
        let _ = wr.write_all(&requests).await;
        wr
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got)).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&got);
    text.match_indices("HTTP/1.1 ")
        .map(|(i, _)| text[i + 9..i + 12].parse().unwrap())
        .collect()
}

/// A request refused before its body is read (too large, or unauthenticated)
/// still has its body drained: a server that answers and closes with unread
/// bytes on the socket makes the kernel reset the connection, and the client
/// may then see a transport error instead of the status. Drained, the
/// connection even stays usable for the next request.
#[tokio::test]
async fn refused_large_bodies_are_drained_and_the_connection_kept() {
    let sink = MemorySink::new();
    let cfg = IngestConfig {
        parse: ParseLimits {
            max_body_bytes: 64 * 1024,
            ..ParseLimits::default()
        },
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(sink.clone()), cfg).await;
    let big = vec![b' '; 3 << 20];
    let next = serde_json::to_vec(&json!([event("e1", "u1", "t")])).unwrap();
    let request = |token: &str, framing: &str, body: &[u8], close: bool| {
        let mut r = format!(
            "POST /collect/v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n{framing}{}\r\n",
            if close { "connection: close\r\n" } else { "" }
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let follow_up = request(
        TOKEN,
        &format!("content-length: {}\r\n", next.len()),
        &next,
        true,
    );
    let declared = format!("content-length: {}\r\n", big.len());
    let mut chunked = Vec::new();
    for part in big.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let cases = [
        (
            "declared too large",
            request(TOKEN, &declared, &big, false),
            413,
        ),
        (
            "unauthenticated",
            request("not-a-key", &declared, &big, false),
            401,
        ),
        (
            "chunked too large",
            request(TOKEN, "transfer-encoding: chunked\r\n", &chunked, false),
            413,
        ),
    ];
    for (name, first, status) in cases {
        let mut both = first;
        both.extend_from_slice(&follow_up);
        let got = statuses_on_one_connection(&srv.base, both).await;
        assert_eq!(got, vec![status, 200], "{name}");
    }
    assert_eq!(sink.len(), 1);
}

#[tokio::test]
async fn batch_limits_answer_413() {
    let sink = MemorySink::new();
    let cfg = IngestConfig {
        parse: ParseLimits {
            max_records: 10,
            max_body_bytes: 64 * 1024,
            ..ParseLimits::default()
        },
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(sink.clone()), cfg).await;
    let eleven: Vec<Value> = (0..11).map(|i| event(&format!("e{i}"), "u", "t")).collect();
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &Value::Array(eleven)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_many_records");
    let big =
        json!([{"event_id": "x", "unit_id": "u", "type": "t", "ts": 1, "pad": "y".repeat(70_000)}]);
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &big).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "body_too_large");
    // At the limit: fine.
    let ten: Vec<Value> = (0..10)
        .map(|i| event(&format!("e{i}"), &format!("u{i}"), "t"))
        .collect();
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &Value::Array(ten)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 10);
}

#[tokio::test]
async fn a_retried_batch_is_deduplicated() {
    let sink = MemorySink::new();
    let srv = serve(Arc::new(sink.clone()), IngestConfig::default()).await;
    let batch = json!([
        event("r1", "u1", "t"),
        event("r2", "u2", "t"),
        exposure("u1", "exp", "a")
    ]);
    let (_, _, first) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([batch[0], batch[1]]),
    )
    .await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(2), Some(0))
    );
    let (_, _, again) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([batch[0], batch[1], event("r3", "u3", "t")]),
    )
    .await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(1), Some(2))
    );
    for expected_dup in [0, 1] {
        let (_, _, x) = post_json(&srv.base, "/collect/v1/exposures", &json!([batch[2]])).await;
        assert_eq!(x["duplicates"], expected_dup);
    }
    assert_eq!(sink.len(), 4);
    let mut metrics = String::new();
    srv.ingest.render_metrics(&mut metrics);
    assert!(
        metrics.contains("strata_pipeline_records_duplicate_total{kind=\"events\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("strata_pipeline_records_accepted_total{kind=\"events\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "strata_pipeline_exposures_by_variant_total{experiment=\"exp\",variant=\"a\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn per_unit_rate_limit_rejects_records_of_the_hot_unit_only() {
    let sink = MemorySink::new();
    let cfg = IngestConfig {
        unit_rate: Rate::per_second(5.0),
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(sink.clone()), cfg).await;
    let mut batch: Vec<Value> = (0..8)
        .map(|i| event(&format!("hot{i}"), "hot", "t"))
        .collect();
    batch.push(event("cold", "cold", "t"));
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &Value::Array(batch)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 6);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(
        rejected
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    assert!(rejected.iter().all(|r| r["field"] == "unit_id"));
}

#[tokio::test]
async fn per_key_and_per_ip_limits_answer_429_with_retry_after() {
    let sink = MemorySink::new();
    let cfg = IngestConfig {
        key_rate: Rate::per_second(10.0),
        ip_rate: Rate::per_second(1000.0),
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(sink.clone()), cfg).await;
    let batch: Vec<Value> = (0..30)
        .map(|i| event(&format!("k{i}"), &format!("u{i}"), "t"))
        .collect();
    // The first batch passes on credit (30 > the 10/s burst)…
    let (status, _, _) = post_json(
        &srv.base,
        "/collect/v1/events",
        &Value::Array(batch.clone()),
    )
    .await;
    assert_eq!(status, 200);
    // …and the key then waits about 2 s to repay the debt.
    let (status, retry, body) =
        post_json(&srv.base, "/collect/v1/events", &Value::Array(batch)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((2..=3).contains(&retry), "{retry}");
    assert_eq!(sink.len(), 30);

    // The per-IP limit applies whatever the key.
    let cfg = IngestConfig {
        ip_rate: Rate::per_second(5.0),
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(MemorySink::new()), cfg).await;
    let batch = Value::Array(
        (0..10)
            .map(|i| event(&format!("i{i}"), &format!("u{i}"), "t"))
            .collect(),
    );
    let (status, _, _) = post_json(&srv.base, "/collect/v1/events", &batch).await;
    assert_eq!(status, 200);
    let resp = client()
        .post(format!("{}/collect/v1/events", srv.base))
        .bearer_auth("other-token")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn authentication() {
    let srv = serve(Arc::new(MemorySink::new()), IngestConfig::default()).await;
    let url = format!("{}/collect/v1/events", srv.base);
    let body = json!([event("a", "u", "t")]);
    let none = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let e: Value = none.json().await.unwrap();
    assert_eq!(e["error"]["code"], "unauthorized");
    let bad = client()
        .post(&url)
        .bearer_auth("nope")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    let sdk = client()
        .post(&url)
        .bearer_auth("sdk-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(sdk.status().as_u16(), 403);
    let e: Value = sdk.json().await.unwrap();
    assert_eq!(e["error"]["code"], "forbidden");
}

#[tokio::test]
async fn backpressure_sheds_low_priority_events_first_and_exposures_last() {
    let sink = MemorySink::new();
    let cfg = IngestConfig {
        backpressure: Backpressure {
            max_backlog_bytes: 1000,
            retry_after: Duration::from_secs(7),
            ..Backpressure::default()
        },
        ..IngestConfig::default()
    };
    let srv = serve(Arc::new(sink.clone()), cfg).await;
    let backlog = |b| {
        sink.set_pressure(Pressure {
            backlog_bytes: b,
            ..Pressure::default()
        })
    };
    let mixed = json!([event("p1", "u", "page_view"), event("b1", "u", "purchase")]);

    // Level 0.6: page views shed (retryable), purchases stored.
    backlog(600);
    let (status, retry, body) = post_json(&srv.base, "/collect/v1/events", &mixed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"][0]["index"], 0);
    assert_eq!(body["rejected"][0]["retryable"], true);
    assert_eq!(retry.as_deref(), Some("7"));
    let (status, retry, _) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([event("p2", "u", "page_view")]),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (503, Some("7")));

    // Level 0.9: all events refused, exposures still taken.
    backlog(900);
    let (status, _, body) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([event("b2", "u", "purchase")]),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "overloaded");
    let (status, _, _) = post_json(
        &srv.base,
        "/collect/v1/exposures",
        &json!([exposure("u", "exp", "a")]),
    )
    .await;
    assert_eq!(status, 200);

    // Level 1: exposures refused too; nothing grows.
    backlog(1000);
    let before = sink.len();
    let (status, retry, _) = post_json(
        &srv.base,
        "/collect/v1/exposures",
        &json!([exposure("v", "exp", "a")]),
    )
    .await;
    assert_eq!((status, retry.as_deref()), (503, Some("7")));
    assert_eq!(sink.len(), before);

    // Disk almost full counts the same way.
    sink.set_pressure(Pressure {
        disk_free_bytes: Some(1),
        ..Pressure::default()
    });
    let (status, _, _) = post_json(
        &srv.base,
        "/collect/v1/exposures",
        &json!([exposure("v", "exp", "a")]),
    )
    .await;
    assert_eq!(status, 503);

    // Back to normal.
    backlog(0);
    let fresh = json!([event("p3", "u", "page_view"), event("b3", "u", "purchase")]);
    let (status, _, body) = post_json(&srv.base, "/collect/v1/events", &fresh).await;
    assert_eq!(status, 200);
    assert_eq!(body["accepted"], 2);
}

#[tokio::test]
async fn a_failing_sink_acknowledges_nothing() {
    let sink = MemorySink::new();
    let srv = serve(Arc::new(sink.clone()), IngestConfig::default()).await;
    sink.set_failure(Some("disk full".into()));
    let (status, _, body) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([event("f1", "u", "t")]),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "storage");
    sink.set_failure(None);
    let (status, _, body) = post_json(
        &srv.base,
        "/collect/v1/events",
        &json!([event("f1", "u", "t")]),
    )
    .await;
    assert_eq!((status, body["accepted"].as_u64()), (200, Some(1)));
}

#[tokio::test]
async fn aliases_are_validated_stored_and_deduplicated() {
    let sink = MemorySink::new();
    let srv = serve(Arc::new(sink.clone()), IngestConfig::default()).await;
    let ts = crate::ingest_common::now_ms();
    let batch = json!([
        {"anonymous_id": "d-1", "user_id": "u-1", "ts": ts},
        {"anonymous_id": "d-2", "user_id": "d-2", "ts": ts},
        {"anonymous_id": "d-3", "ts": ts},
        {"anonymous_id": 17, "user_id": "u-2", "ts": ts}
    ]);
    let (status, _, body) = post_json(&srv.base, "/collect/v1/aliases", &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    let fields: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(fields, [(1, "user_id"), (2, "user_id")]);
    // The same pair again is a duplicate, whatever its time.
    let (_, _, again) = post_json(
        &srv.base,
        "/collect/v1/aliases",
        &json!([{"anonymous_id": "d-1", "user_id": "u-1", "ts": ts - 1000}]),
    )
    .await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    let stored: Vec<(String, String)> = sink
        .records()
        .into_iter()
        .map(|r| match r {
            Record::Alias(a) => (a.anonymous_id, a.user_id),
            other => panic!("not an alias: {other:?}"),
        })
        .collect();
    assert_eq!(
        stored,
        [("d-1".into(), "u-1".into()), ("17".into(), "u-2".into())]
    );
    let mut metrics = String::new();
    srv.ingest.render_metrics(&mut metrics);
    assert!(
        metrics.contains("strata_pipeline_records_accepted_total{kind=\"aliases\"} 2"),
        "{metrics}"
    );
}
