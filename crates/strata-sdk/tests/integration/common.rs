//! Test harness: a fake config server and a fake collector that misbehave
//! on purpose (raw HTTP/1.1 over loopback TCP, so that they can stall,
//! truncate and reset connections), and a real `strata-server` on a
//! loopback port over SQLite.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// Reads what is available (tokio's `io-util` is not among the
/// workspace's features, so readiness plus `try_read`).
pub async fn read_some(s: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Writes all of `data`.
pub async fn write_all(s: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A parsed request.
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Reads one request (head and `Content-Length` body).
pub async fn read_request(s: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        let n = read_some(s, &mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = read_some(s, &mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

/// Writes a complete response and closes the connection.
pub async fn respond(s: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = write_all(s, head.as_bytes()).await;
    let _ = write_all(s, body).await;
}

/// Closes a connection with a TCP reset.
// A zero linger is deprecated because it can block on drop; here the reset
// it causes is the point, and the socket has nothing left to send.
#[allow(deprecated)]
pub fn reset(s: TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
    drop(s);
}

/// A snapshot document with the given experiments (key, flag, status).
pub fn snapshot(version: u64, experiments: &[(&str, &str, &str)]) -> Value {
    let exps: Vec<Value> = experiments
        .iter()
        .map(|(key, flag, status)| {
            json!({"key": key, "flag": flag, "salt": format!("salt-{key}"), "status": status,
                   "variants": [{"key": "control", "weight": 1}, {"key": "treatment", "weight": 1}]})
        })
        .collect();
    json!({"version": version, "experiments": exps})
}

/// How the fake config server answers `/sdk/v1/config`.
#[derive(Clone, Debug)]
pub enum ConfigMode {
    /// The current snapshot, with ETag and 304.
    Normal,
    /// Reads the request and never answers.
    Stall,
    /// Resets the connection.
    Reset,
    /// Announces the full length and closes halfway through the body.
    TruncatedTransfer,
    /// A complete response whose body is cut JSON.
    TruncatedJson,
    /// A status with an error body.
    Status(u16),
    /// This exact body (200).
    Body(Vec<u8>),
    /// A body of this many bytes (valid JSON up to its end).
    Huge(usize),
}

/// How the fake config server answers `/sdk/v1/stream`.
#[derive(Clone, Debug)]
pub enum StreamMode {
    /// The version on connect and each new one.
    Normal,
    /// 503.
    Refuse,
    /// This many events with increasing versions, as fast as possible.
    Flood(u64),
}

pub struct ConfigState {
    pub snapshot: Value,
    pub config: ConfigMode,
    pub stream: StreamMode,
    pub config_hits: usize,
    pub stream_hits: usize,
}

/// The fake control plane.
pub struct FakeServer {
    pub url: String,
    pub state: Arc<Mutex<ConfigState>>,
    versions: broadcast::Sender<u64>,
}

impl FakeServer {
    pub async fn start(snapshot: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ConfigState {
            snapshot,
            config: ConfigMode::Normal,
            stream: StreamMode::Normal,
            config_hits: 0,
            stream_hits: 0,
        }));
        let (versions, _) = broadcast::channel(1024);
        let (st, tx) = (state.clone(), versions.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_config(s, st.clone(), tx.clone()));
            }
        });
        Self {
            url,
            state,
            versions,
        }
    }

    pub fn set_mode(&self, mode: ConfigMode) {
        self.state.lock().unwrap().config = mode;
    }

    pub fn set_stream(&self, mode: StreamMode) {
        self.state.lock().unwrap().stream = mode;
    }

    /// Publishes a new snapshot and announces it on open streams.
    pub fn publish(&self, snapshot: Value) {
        let v = snapshot["version"].as_u64().unwrap();
        self.state.lock().unwrap().snapshot = snapshot;
        let _ = self.versions.send(v);
    }

    pub fn config_hits(&self) -> usize {
        self.state.lock().unwrap().config_hits
    }
}

async fn serve_config(
    mut s: TcpStream,
    state: Arc<Mutex<ConfigState>>,
    versions: broadcast::Sender<u64>,
) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    if req.path.starts_with("/sdk/v1/stream") {
        let (mode, version) = {
            let mut st = state.lock().unwrap();
            st.stream_hits += 1;
            (st.stream.clone(), st.snapshot["version"].as_u64().unwrap())
        };
        let mut rx = versions.subscribe();
        match mode {
            StreamMode::Refuse => return respond(&mut s, 503, &[], b"{}").await,
            StreamMode::Normal | StreamMode::Flood(_) => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n";
                if write_all(&s, head.as_bytes()).await.is_err() {
                    return;
                }
                let event =
                    |v: u64| format!("event: config\nid: {v}\ndata: {{\"version\":{v}}}\n\n");
                if let StreamMode::Flood(n) = mode {
                    for i in 0..n {
                        if write_all(&s, event(version + i).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                } else if write_all(&s, event(version).as_bytes()).await.is_err() {
                    return;
                }
                while let Ok(v) = rx.recv().await {
                    if write_all(&s, event(v).as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
        return;
    }
    let (mode, body, version) = {
        let mut st = state.lock().unwrap();
        st.config_hits += 1;
        (
            st.config.clone(),
            serde_json::to_vec(&st.snapshot).unwrap(),
            st.snapshot["version"].as_u64().unwrap(),
        )
    };
    match mode {
        ConfigMode::Normal => {
            let etag = format!("\"{version}\"");
            if req.headers.get("if-none-match") == Some(&etag) {
                respond(&mut s, 304, &[("etag", etag)], b"").await;
            } else {
                respond(&mut s, 200, &[("etag", etag)], &body).await;
            }
        }
        ConfigMode::Stall => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        ConfigMode::Reset => reset(s),
        ConfigMode::TruncatedTransfer => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = write_all(&s, head.as_bytes()).await;
            let _ = write_all(&s, &body[..body.len() / 2]).await;
            reset(s);
        }
        ConfigMode::TruncatedJson => respond(&mut s, 200, &[], &body[..body.len() / 2]).await,
        ConfigMode::Status(code) => respond(&mut s, code, &[], b"{\"error\":{}}").await,
        ConfigMode::Body(b) => respond(&mut s, 200, &[], &b).await,
        ConfigMode::Huge(n) => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
            let _ = write_all(&s, head.as_bytes()).await;
            let filler = vec![b' '; 64 * 1024];
            let mut sent = 0;
            while sent < n {
                let k = filler.len().min(n - sent);
                if write_all(&s, &filler[..k]).await.is_err() {
                    return;
                }
                sent += k;
            }
        }
    }
}

/// What the fake collector does with the next request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Misbehave {
    Ok,
    Status500,
    /// 429 with `Retry-After` in seconds.
    TooMany(u64),
    /// 503 with `Retry-After` in seconds.
    Unavailable(u64),
    /// Stores the batch, then never answers (the acknowledgement is lost).
    StoreThenStall,
    /// Stores the batch, then resets the connection.
    StoreThenReset,
    /// Resets without storing.
    Reset,
    /// Stores the records at even indices and refuses the others for now
    /// (`retryable`, as strata-pipeline sheds low-priority events under
    /// load), with `Retry-After: 0`.
    ShedOdd,
    /// Refuses the first record for good and stores the rest.
    RejectFirst,
}

#[derive(Default)]
pub struct CollectorState {
    pub script: VecDeque<Misbehave>,
    /// Events by `event_id`.
    pub events: HashMap<String, Value>,
    /// Exposures by (unit, experiment, UTC day).
    pub exposures: HashMap<(String, String, String), Value>,
    pub duplicates: u64,
    pub requests: Vec<(Instant, String, Misbehave)>,
    pub bad_requests: Vec<String>,
}

/// A collector that stores what it receives, deduplicating like the real
/// one: events by `event_id`, exposures by (unit, experiment, day).
pub struct FakeCollector {
    pub url: String,
    pub state: Arc<Mutex<CollectorState>>,
}

impl FakeCollector {
    pub async fn start(script: &[Misbehave]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(CollectorState {
            script: script.iter().copied().collect(),
            ..CollectorState::default()
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_collect(s, st.clone()));
            }
        });
        Self { url, state }
    }

    pub fn events(&self) -> usize {
        self.state.lock().unwrap().events.len()
    }

    pub fn exposures(&self) -> usize {
        self.state.lock().unwrap().exposures.len()
    }
}

fn store(st: &mut CollectorState, path: &str, records: &[Value]) -> (u64, u64) {
    let (mut accepted, mut dups) = (0, 0);
    for r in records {
        let fresh = if path.ends_with("/events") {
            let id = r["event_id"].as_str().unwrap_or_default().to_owned();
            st.events.insert(id, r.clone()).is_none()
        } else {
            let day = r["ts"]
                .as_str()
                .unwrap_or_default()
                .get(..10)
                .unwrap_or_default()
                .to_owned();
            let key = (
                r["unit_id"].as_str().unwrap_or_default().to_owned(),
                r["experiment"].as_str().unwrap_or_default().to_owned(),
                day,
            );
            st.exposures.insert(key, r.clone()).is_none()
        };
        if fresh {
            accepted += 1;
        } else {
            dups += 1;
        }
    }
    st.duplicates += dups;
    (accepted, dups)
}

async fn serve_collect(mut s: TcpStream, state: Arc<Mutex<CollectorState>>) {
    let Some(req) = read_request(&mut s).await else {
        return;
    };
    let action = {
        let mut st = state.lock().unwrap();
        let a = st.script.pop_front().unwrap_or(Misbehave::Ok);
        st.requests.push((Instant::now(), req.path.clone(), a));
        a
    };
    let parse = || -> Result<Vec<Value>, String> {
        if req.headers.get("authorization").map(String::as_str) != Some("Bearer ingest-key") {
            return Err("bad authorization".into());
        }
        if req.headers.get("content-encoding").map(String::as_str) != Some("gzip") {
            return Err("not gzip".into());
        }
        let mut text = String::new();
        flate2::read::GzDecoder::new(&req.body[..])
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let records = match parse() {
        Ok(r) => r,
        Err(e) => {
            state.lock().unwrap().bad_requests.push(e);
            return respond(&mut s, 400, &[], b"{}").await;
        }
    };
    match action {
        Misbehave::Ok => {
            let (accepted, dups) = store(&mut state.lock().unwrap(), &req.path, &records);
            let body = json!({"accepted": accepted, "duplicates": dups, "rejected": []});
            respond(&mut s, 200, &[], body.to_string().as_bytes()).await;
        }
        Misbehave::Status500 => respond(&mut s, 500, &[], b"{}").await,
        Misbehave::TooMany(secs) => {
            respond(&mut s, 429, &[("retry-after", secs.to_string())], b"{}").await
        }
        Misbehave::Unavailable(secs) => {
            respond(&mut s, 503, &[("retry-after", secs.to_string())], b"{}").await
        }
        Misbehave::StoreThenStall => {
            store(&mut state.lock().unwrap(), &req.path, &records);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Misbehave::StoreThenReset => {
            store(&mut state.lock().unwrap(), &req.path, &records);
            reset(s);
        }
        Misbehave::Reset => reset(s),
        Misbehave::ShedOdd | Misbehave::RejectFirst => {
            let refused = |i: usize| match action {
                Misbehave::ShedOdd => i % 2 == 1,
                _ => i == 0,
            };
            let kept: Vec<Value> = records
                .iter()
                .enumerate()
                .filter(|(i, _)| !refused(*i))
                .map(|(_, r)| r.clone())
                .collect();
            let (accepted, dups) = store(&mut state.lock().unwrap(), &req.path, &kept);
            let rejected: Vec<Value> = (0..records.len())
                .filter(|i| refused(*i))
                .map(|i| match action {
                    Misbehave::ShedOdd => json!({"index": i,
                        "reason": "shed under load, retry later", "field": "type", "retryable": true}),
                    _ => json!({"index": i, "reason": "missing field unit_id", "field": "unit_id"}),
                })
                .collect();
            let body = json!({"accepted": accepted, "duplicates": dups, "rejected": rejected});
            let headers = [("retry-after", "0".to_owned())];
            respond(&mut s, 200, &headers, body.to_string().as_bytes()).await;
        }
    }
    let _ = req.method;
}

/// Waits until `cond` holds, at most `within`; returns whether it did.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Units `0..n` as contexts.
pub fn users(n: usize) -> Vec<strata_sdk::Context> {
    (0..n)
        .map(|i| strata_sdk::Context::for_user(format!("user-{i}")))
        .collect()
}

/// Unused-set helper: the distinct values of an iterator.
pub fn distinct<T: std::hash::Hash + Eq>(it: impl IntoIterator<Item = T>) -> usize {
    it.into_iter().collect::<HashSet<T>>().len()
}
