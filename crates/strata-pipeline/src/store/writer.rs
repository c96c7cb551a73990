//! The append path: one writer thread owns the active segment and the
//! deduplication index, and makes appends durable by group commit.
//!
//! `append` takes a [`Batch`], whose records the parser already encoded as
//! frames with their dedup keys, and queues it to the writer. The writer
//! takes everything queued, decides per record whether it is a duplicate
//! (against the durable index and the rest of the group, so concurrent
//! requests cannot race), writes the accepted frames with one `write` and
//! one `fdatasync`, and only then adds the keys to the index and answers
//! every caller of the group. That order is the commit point: a key is in
//! the index exactly when its record is durable, and no caller hears
//! "accepted" before then.
//!
//! If the write or sync fails, every caller of the group gets an error and
//! nothing of it counts as seen; the segment is cut back to its previous
//! length (and the store refuses appends if even that fails).
//!
//! The writer also seals segments — when the active one passes
//! `segment_bytes`, or when the compactor asks — so that sealing is ordered
//! with the appends around it, and forgets keys past the window once per
//! UTC day.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::stats::kind_index;
use super::{Inner, SegInfo, StoreOptions};
use crate::compact::Layout;
use crate::dedup::{Index, Key, KeyHasher};
use crate::error::{Result, StoreError};
use crate::log::{ActiveSegment, HEADER_LEN};
use crate::record::utc_day;
use crate::{Batch, Outcome, SinkError};

/// Nice value the log writer asks for (granted only with `CAP_SYS_NICE`).
const WRITER_NICE: i32 = -5;

type Reply = oneshot::Sender<std::result::Result<Vec<Outcome>, SinkError>>;

pub(super) struct AppendReq {
    /// The frames, with each record's kind and dedup key.
    batch: Batch,
    reply: Reply,
}

pub(super) enum Cmd {
    Append(AppendReq),
    /// Seal the active segment if it holds records; answers the id of the
    /// newest sealed segment (0 if none).
    Rotate(oneshot::Sender<Result<u64>>),
    Stop(oneshot::Sender<()>),
}

pub(super) struct Writer {
    rx: mpsc::Receiver<Cmd>,
    inner: Weak<Inner>,
    layout: Layout,
    seg: ActiveSegment,
    index: Index,
    segment_bytes: u64,
    max_group_bytes: usize,
    window_days: i32,
    expired_on: i64,
    poisoned: Option<String>,
}

impl Inner {
    pub(super) async fn append(
        &self,
        records: Batch,
    ) -> std::result::Result<Vec<Outcome>, SinkError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(SinkError::Unavailable {
                reason: "store is shutting down".into(),
                retry_after: Duration::from_secs(1),
            });
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The batch is already a run of log frames with each record's dedup
        // key, so the single writer does nothing but check keys, copy and
        // sync.
        let (reply, rx) = oneshot::channel();
        let req = AppendReq {
            batch: records,
            reply,
        };
        self.tx
            .send(Cmd::Append(req))
            .await
            .map_err(|_| SinkError::Unavailable {
                reason: "log writer stopped".into(),
                retry_after: Duration::from_secs(1),
            })?;
        rx.await
            .map_err(|_| SinkError::Io("log writer stopped before answering".into()))?
    }

    /// Asks the writer to seal the active segment; answers the id of the
    /// newest sealed segment.
    pub(super) async fn rotate(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Rotate(tx))
            .await
            .map_err(|_| StoreError::Closed("log writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Closed("log writer stopped before answering".into()))?
    }
}

impl Writer {
    /// The writer of `seg`, deduplicating against `index`, taking commands
    /// from `rx`. It holds `inner` weakly: `inner` holds the sending end of
    /// `rx`, so a strong reference would keep the writer waiting for ever
    /// after the store is dropped.
    pub(super) fn new(
        rx: mpsc::Receiver<Cmd>,
        inner: &Arc<Inner>,
        layout: Layout,
        seg: ActiveSegment,
        index: Index,
        opts: &StoreOptions,
    ) -> Writer {
        Writer {
            rx,
            inner: Arc::downgrade(inner),
            layout,
            seg,
            index,
            segment_bytes: opts.segment_bytes,
            max_group_bytes: opts.max_group_bytes,
            window_days: opts.window_days(),
            expired_on: utc_day(crate::record::now_micros()),
            poisoned: None,
        }
    }

    /// Runs the writer on its own thread until it is told to stop or every
    /// sender is gone.
    pub(super) fn spawn(self, dir: &Path) -> Result<()> {
        std::thread::Builder::new()
            .name("strata-log-writer".into())
            .spawn(move || {
                // Best effort (raising a priority needs CAP_SYS_NICE): every
                // acknowledgement waits for this thread, so it goes before
                // request parsing when the cores are busy.
                let _ = rustix::process::setpriority_process(None, WRITER_NICE);
                self.run()
            })
            .map_err(|e| StoreError::io("spawn log writer", dir, e))?;
        Ok(())
    }

    fn run(mut self) {
        let mut pending: HashSet<Key, BuildHasherDefault<KeyHasher>> = HashSet::default();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut rotates = Vec::new();
            let mut stop = None;
            let mut bytes = 0usize;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Append(a) => {
                        bytes += a.batch.frames().len();
                        appends.push(a);
                    }
                    Cmd::Rotate(r) => rotates.push(r),
                    Cmd::Stop(s) => {
                        stop = Some(s);
                        break;
                    }
                }
                if bytes < self.max_group_bytes {
                    next = self.rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends, &mut pending, &mut buf);
            }
            let full = self.seg.len >= self.segment_bytes;
            if !rotates.is_empty() || full {
                let res = if self.seg.len > HEADER_LEN {
                    self.rotate()
                } else {
                    Ok(())
                };
                let sealed = self.seg.id - 1;
                for r in rotates {
                    let _ = r.send(match &res {
                        Ok(()) => Ok(sealed),
                        Err(e) => Err(StoreError::Closed(format!(
                            "cannot start a new segment: {e}"
                        ))),
                    });
                }
            }
            self.expire();
            if let Some(s) = stop {
                let _ = s.send(());
                return;
            }
        }
    }

    fn commit(
        &mut self,
        appends: Vec<AppendReq>,
        pending: &mut HashSet<Key, BuildHasherDefault<KeyHasher>>,
        buf: &mut Vec<u8>,
    ) {
        if let Some(reason) = &self.poisoned {
            for a in appends {
                let _ = a.reply.send(Err(SinkError::Io(reason.clone())));
            }
            return;
        }
        pending.clear();
        buf.clear();
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut accepted_days = Vec::new();
        let mut counts = [[0u64; 2]; super::stats::KINDS];
        for a in &appends {
            let mut out = Vec::with_capacity(a.batch.len());
            for (i, meta) in a.batch.meta().iter().enumerate() {
                let (key, day) = meta.key;
                let k = kind_index(meta.kind);
                if self.index.contains(&key) || !pending.insert(key) {
                    out.push(Outcome::Duplicate);
                    counts[k][1] += 1;
                } else {
                    buf.extend_from_slice(a.batch.frame(i));
                    accepted_days.push((key, day));
                    out.push(Outcome::Accepted);
                    counts[k][0] += 1;
                }
            }
            outcomes.push(out);
        }
        let inner = self.inner.upgrade();
        let started = Instant::now();
        if !buf.is_empty() {
            if let Err(f) = self.seg.append_durable(buf) {
                if let Some(inner) = &inner {
                    inner.metrics.append_errors.fetch_add(1, Ordering::Relaxed);
                }
                let msg = f.error.to_string();
                tracing::error!(error = %msg, rolled_back = f.rolled_back, "log append failed");
                if !f.rolled_back {
                    self.poisoned = Some(format!("log unusable after a failed append: {msg}"));
                }
                for a in appends {
                    let _ = a.reply.send(Err(SinkError::Io(msg.clone())));
                }
                return;
            }
        }
        for (k, d) in accepted_days {
            self.index.insert(k, d);
        }
        self.index.grow_ahead();
        if let Some(inner) = &inner {
            let m = &inner.metrics;
            if !buf.is_empty() {
                m.fsyncs.fetch_add(1, Ordering::Relaxed);
                m.fsync_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.log_bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            for (k, [accepted, duplicates]) in counts.iter().enumerate() {
                m.accepted[k].fetch_add(*accepted, Ordering::Relaxed);
                m.duplicates[k].fetch_add(*duplicates, Ordering::Relaxed);
            }
            m.set_index(&self.index);
            if let Ok(mut s) = inner.segments.lock() {
                let len = self.seg.len;
                let info = s.map.entry(self.seg.id).or_insert(SegInfo {
                    bytes: HEADER_LEN,
                    since: SystemTime::now(),
                });
                if info.bytes <= HEADER_LEN {
                    info.since = SystemTime::now();
                }
                info.bytes = len;
            }
        }
        for (a, out) in appends.into_iter().zip(outcomes) {
            let _ = a.reply.send(Ok(out));
        }
    }

    fn rotate(&mut self) -> Result<()> {
        let seg = ActiveSegment::create(&self.layout.log, self.seg.id + 1)?;
        self.seg = seg;
        if let Some(inner) = self.inner.upgrade() {
            if let Ok(mut s) = inner.segments.lock() {
                s.active = self.seg.id;
                s.map.insert(
                    self.seg.id,
                    SegInfo {
                        bytes: HEADER_LEN,
                        since: SystemTime::now(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Forgets keys past the window, once per UTC day.
    fn expire(&mut self) {
        let today = utc_day(crate::record::now_micros());
        if today != self.expired_on {
            self.expired_on = today;
            let first = i32::try_from(today)
                .unwrap_or(i32::MAX)
                .saturating_sub(self.window_days);
            self.index.expire(first);
        }
    }
}
