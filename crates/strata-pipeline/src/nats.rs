//! Scale-out mode: a NATS JetStream stream as the durable log.
//!
//! [`JetStreamSink`] publishes every record to one stream, on the subject
//! `<prefix>.<kind>.<part>` where `part` is [`user_partition`] of the unit,
//! and answers only once JetStream has acknowledged the publish (the record
//! is then stored by the stream's own replication and fsync policy).
//! Every message carries `Nats-Msg-Id` so that JetStream drops a retried
//! record within the stream's duplicate window: `e:<event_id>` for events,
//! `x:<hash>` for exposures, the hash being of (unit, experiment, UTC day),
//! the exposure deduplication key. A publish JetStream reports as a
//! duplicate is answered [`Outcome::Duplicate`]. Beyond the window, a
//! duplicate can reach Parquet; the analysis deduplicates events by
//! `event_id` and keeps the first exposure per unit, so that costs rows, not
//! correctness.
//!
//! A message's payload is the record in the log's binary encoding
//! ([`crate::codec`]); JetStream checksums and replicates it, so it carries
//! no frame header. Payloads that start with `{` are read as the JSON of a
//! [`Record`], the format of earlier versions, so a stream written by them
//! still drains.
//!
//! [`NatsCompactor`] drains the stream through a durable pull consumer into
//! the same Parquet layout as the local store, with the same writer
//! ([`crate::parquet::write_records`]). The acknowledgement policy is
//! "all": after a batch's Parquet files are durable, acking its last message
//! acknowledges the whole batch. Files are named after the batch's stream
//! sequence range (`nats-<first>-<last>`); a batch written but not
//! acknowledged before a crash is redelivered, so at start-up the consumer
//! removes every file whose first sequence lies above the consumer's ack
//! floor before writing again. Because one acknowledgement covers every
//! earlier message, a batch fetched and not acknowledged must never be
//! skipped: when a compactor starts with deliveries pending (its
//! predecessor died holding a batch) and after any round that failed or
//! was dropped, the durable consumer is recreated to deliver from the ack
//! floor again (and the unacknowledged batch's files are removed first),
//! rather than waiting for JetStream's redelivery while later batches are
//! acknowledged over it. One compactor process per durable consumer.
//!
//! Like local compaction, each batch writes a file per (kind, date,
//! partition) it has records for, so a trickle of small batches would leave
//! file counts proportional to rounds, not to data: every
//! [`CompactorOptions::merge_every`] the compactor merges runs of its small
//! files whose sequences are all acknowledged ([`crate::merge`], naming
//! [`Ranges::Stream`]); a merged file's first sequence is at or below the ack
//! floor, so the start-up removal never touches it, and a merge interrupted
//! by a crash is finished at the next start. Readers in other processes see
//! a merged file and its inputs together only between the rename and the
//! deletions, and can tell with [`crate::merge::overlapping_files`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::codec;
use crate::error::StoreError;
use crate::merge::{merge_small_parquet, recover_parquet, MergeOptions, MergeReport, Ranges};
use crate::parquet::{list_parquet_files, write_records, WriteOptions};
use crate::partition::{user_partition, DEFAULT_PARTITIONS};
use crate::record::{Record, RecordRef};
use crate::{Batch, BoxFuture, Outcome, Pressure, Sink, SinkError};

/// Why a JetStream operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// Connecting to the server failed.
    #[error("connect to nats at {url}: {reason}")]
    Connect {
        /// The server URL.
        url: String,
        /// The cause.
        reason: String,
    },
    /// Creating or inspecting the stream or consumer failed.
    #[error("jetstream {what}: {reason}")]
    JetStream {
        /// The stream or consumer involved.
        what: String,
        /// The cause.
        reason: String,
    },
    /// Writing Parquet or removing a stale file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operation rewrites the Parquet tree, which only the node
    /// compacting the stream (the jobs leader) may do.
    #[error("{what} runs on the node that compacts the stream (the jobs leader), not on this one")]
    NotCompacting {
        /// The operation.
        what: String,
    },
}

fn js_err(what: impl Into<String>, e: impl std::fmt::Display) -> NatsError {
    NatsError::JetStream {
        what: what.into(),
        reason: e.to_string().to_lowercase(),
    }
}

/// Where records go in JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct NatsOptions {
    /// Stream name (default `STRATA`).
    pub stream: String,
    /// Subject prefix; the stream takes `<prefix>.>` (default `strata`).
    pub subject_prefix: String,
    /// User partitions in subjects (default the store's
    /// [`DEFAULT_PARTITIONS`], so subjects match Parquet partitions).
    pub partitions: u32,
    /// JetStream's duplicate window for `Nats-Msg-Id` (default 1 hour; the
    /// server keeps every id of the window in memory).
    pub duplicate_window: Duration,
    /// Durable consumer name of the compactor (default `strata-compactor`).
    pub durable: String,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            stream: "STRATA".to_owned(),
            subject_prefix: "strata".to_owned(),
            partitions: DEFAULT_PARTITIONS,
            duplicate_window: Duration::from_secs(3600),
            durable: "strata-compactor".to_owned(),
        }
    }
}

/// Connects to `url` and creates the stream of `opts` if it does not exist.
pub async fn connect(
    url: &str,
    opts: &NatsOptions,
) -> Result<(jetstream::Context, stream::Stream), NatsError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|e| NatsError::Connect {
            url: url.to_owned(),
            reason: e.to_string().to_lowercase(),
        })?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: opts.stream.clone(),
            subjects: vec![format!("{}.>", opts.subject_prefix)],
            duplicate_window: opts.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| js_err(format!("stream {}", opts.stream), e))?;
    Ok((js, stream))
}

/// The `Nats-Msg-Id` of a record.
pub fn message_id(record: &RecordRef<'_>) -> String {
    match record {
        RecordRef::Event(e) => format!("e:{}", e.event_id),
        RecordRef::Exposure(x) => format!(
            "x:{:032x}",
            xxhash_rust::xxh3::xxh3_128(&crate::dedup::exposure_key_bytes(
                x.unit_id,
                x.experiment,
                x.ts
            ))
        ),
        RecordRef::Alias(a) => format!(
            "a:{:032x}",
            xxhash_rust::xxh3::xxh3_128(&crate::dedup::alias_key_bytes(a.anonymous_id, a.user_id))
        ),
    }
}

/// The record of a message's payload: the [`crate::codec`] encoding, or the
/// JSON of earlier versions.
pub fn decode_message(payload: &[u8]) -> Result<Record, String> {
    if payload.first() == Some(&b'{') {
        serde_json::from_slice(payload).map_err(|e| e.to_string())
    } else {
        codec::decode(payload).map_err(|e| e.to_string())
    }
}

/// A [`Sink`] publishing to JetStream.
pub struct JetStreamSink {
    js: jetstream::Context,
    opts: NatsOptions,
    pending_messages: Arc<AtomicU64>,
    avg_message_bytes: Arc<AtomicU64>,
    /// Unix milliseconds of the oldest message not compacted (0: none).
    oldest_pending_ms: Arc<AtomicU64>,
    poller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for JetStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSink")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Drop for JetStreamSink {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl JetStreamSink {
    /// Connects, creates the stream if needed, and polls the compactor's
    /// consumer once a second for [`Sink::pressure`].
    pub async fn connect(url: &str, opts: NatsOptions) -> Result<Self, NatsError> {
        let (js, stream) = connect(url, &opts).await?;
        let pending_messages = Arc::new(AtomicU64::new(0));
        let avg_message_bytes = Arc::new(AtomicU64::new(0));
        let oldest_pending_ms = Arc::new(AtomicU64::new(0));
        let (pending, avg, oldest, durable) = (
            pending_messages.clone(),
            avg_message_bytes.clone(),
            oldest_pending_ms.clone(),
            opts.durable.clone(),
        );
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Ok(info) = stream.get_info().await else {
                    continue;
                };
                let s = &info.state;
                if let Some(a) = s.bytes.checked_div(s.messages) {
                    avg.store(a, Ordering::Relaxed);
                }
                let (backlog, next) = match stream.consumer_info(&durable).await {
                    Ok(c) => (
                        c.num_pending + c.num_ack_pending as u64,
                        c.ack_floor.stream_sequence + 1,
                    ),
                    // No compactor yet: the whole stream is backlog.
                    Err(_) => (s.messages, s.first_sequence),
                };
                pending.store(backlog, Ordering::Relaxed);
                let at = if backlog == 0 {
                    0
                } else {
                    // The oldest message not compacted: the one after the
                    // ack floor, or the stream's first if that one is gone.
                    let t = match stream.get_raw_message(next.max(s.first_sequence)).await {
                        Ok(m) => m.time,
                        Err(_) => s.first_timestamp,
                    };
                    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or(0)
                        .max(1)
                };
                oldest.store(at, Ordering::Relaxed);
            }
        });
        Ok(Self {
            js,
            opts,
            pending_messages,
            avg_message_bytes,
            oldest_pending_ms,
            poller,
        })
    }

    /// The subject of a record.
    pub fn subject(&self, record: &RecordRef<'_>) -> String {
        format!(
            "{}.{}.{:02}",
            self.opts.subject_prefix,
            record.kind().dir_name(),
            user_partition(record.unit_id(), self.opts.partitions.max(1))
        )
    }

    async fn publish_all(&self, records: Batch) -> Result<Vec<Outcome>, SinkError> {
        // Publish everything first, then wait for the acks: the whole batch
        // shares the round trips.
        let mut acks = Vec::with_capacity(records.len());
        for (r, payload) in records.iter().zip(records.payloads()) {
            let r = r.map_err(|e| SinkError::Io(format!("batch record does not decode: {e}")))?;
            let publish = jetstream::context::Publish::build()
                .payload(Bytes::copy_from_slice(payload))
                .message_id(message_id(&r));
            let ack = self
                .js
                .send_publish(self.subject(&r), publish)
                .await
                .map_err(|e| unavailable(format!("publish to jetstream: {e}")))?;
            acks.push(ack);
        }
        let mut outcomes = Vec::with_capacity(acks.len());
        for ack in futures_util::future::join_all(
            acks.into_iter().map(std::future::IntoFuture::into_future),
        )
        .await
        {
            let ack = ack.map_err(|e| unavailable(format!("jetstream publish ack: {e}")))?;
            outcomes.push(if ack.duplicate {
                Outcome::Duplicate
            } else {
                Outcome::Accepted
            });
        }
        Ok(outcomes)
    }
}

fn unavailable(reason: String) -> SinkError {
    SinkError::Unavailable {
        reason: reason.to_lowercase(),
        retry_after: Duration::from_secs(1),
    }
}

impl Sink for JetStreamSink {
    fn append(&self, records: Batch) -> BoxFuture<'_, Result<Vec<Outcome>, SinkError>> {
        Box::pin(self.publish_all(records))
    }

    fn pressure(&self) -> Pressure {
        Pressure {
            backlog_bytes: self.pending_messages.load(Ordering::Relaxed)
                * self.avg_message_bytes.load(Ordering::Relaxed),
            compaction_lag: match self.oldest_pending_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                    .ok()
                    .or(Some(Duration::ZERO)),
            },
            disk_free_bytes: None,
        }
    }
}

/// How the compactor consumer batches.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactorOptions {
    /// Most messages per Parquet write (default 100,000).
    pub max_messages: usize,
    /// Longest wait for a batch to fill (default 2 s).
    pub max_wait: Duration,
    /// How small files are merged (`None`: never).
    pub merge: Option<MergeOptions>,
    /// How often small files are merged (default 30 s, as the local store).
    pub merge_every: Duration,
    /// Purge the stream of every message a round has acknowledged (default
    /// off). A stream's default retention keeps messages after they are
    /// consumed; with this on it holds only the backlog, so its size follows
    /// the compaction lag and a unit's deletion leaves no copy behind once
    /// compacted. JetStream keeps a purged message's id in its duplicate
    /// window, so a retry after the purge is still a duplicate.
    pub purge_acknowledged: bool,
}

impl Default for CompactorOptions {
    fn default() -> Self {
        Self {
            max_messages: 100_000,
            max_wait: Duration::from_secs(2),
            merge: Some(MergeOptions::default()),
            merge_every: Duration::from_secs(30),
            purge_acknowledged: false,
        }
    }
}

/// What one compaction round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Messages consumed and acknowledged.
    pub messages: usize,
    /// Records written to Parquet.
    pub records: usize,
    /// Messages that did not decode as a record (acknowledged, logged).
    pub undecodable: usize,
    /// Parquet files written.
    pub files: usize,
    /// Of `records`: exposures.
    pub exposures: usize,
    /// Of `records`: events.
    pub events: usize,
    /// Of `records`: aliases.
    pub aliases: usize,
}

impl RoundReport {
    /// Adds another round's counts.
    pub fn add(&mut self, o: &RoundReport) {
        self.messages += o.messages;
        self.records += o.records;
        self.undecodable += o.undecodable;
        self.files += o.files;
        self.exposures += o.exposures;
        self.events += o.events;
        self.aliases += o.aliases;
    }
}

/// Drains the stream into Parquet under `root`.
pub struct NatsCompactor {
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    root: PathBuf,
    nats: NatsOptions,
    opts: CompactorOptions,
    /// The last stream sequence acknowledged (every one up to it is
    /// durable in Parquet).
    acked: u64,
    /// A round fetched messages and did not acknowledge them (it failed or
    /// was dropped): the next one rewinds the consumer to `acked` first.
    /// With acknowledgement policy "all", fetching past such messages and
    /// acknowledging a later one would acknowledge them unwritten.
    dirty: bool,
    /// The object store the tree is pushed to before each acknowledgement.
    mirror: Option<Arc<crate::mirror::Mirror>>,
    last_merge: std::time::Instant,
}

impl std::fmt::Debug for NatsCompactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCompactor")
            .field("root", &self.root)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl NatsCompactor {
    /// Connects, creates the stream and the durable consumer if needed, and
    /// removes the Parquet files of batches written but never acknowledged.
    /// `root` is the Parquet root (`DATA/parquet`).
    pub async fn open(
        url: &str,
        root: &Path,
        nats: NatsOptions,
        opts: CompactorOptions,
    ) -> Result<Self, NatsError> {
        let (_, stream) = connect(url, &nats).await?;
        let what = || format!("consumer {}", nats.durable);
        let mut consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &nats.durable,
                consumer_config(&nats, &opts, consumer::DeliverPolicy::All),
            )
            .await
            .map_err(|e| js_err(what(), e))?;
        let (floor, pending) = {
            let info = consumer.info().await.map_err(|e| js_err(what(), e))?;
            (info.ack_floor.stream_sequence, info.num_ack_pending)
        };
        if pending > 0 {
            // A compactor died holding a delivered batch: JetStream would
            // redeliver it only after the acknowledgement wait, and this
            // one's first acknowledgement (policy "all") would cover it
            // unwritten. Delivery restarts at the ack floor instead.
            consumer = rewind(&stream, &nats, &opts, floor).await?;
            tracing::info!(
                floor,
                pending,
                "took over the deliveries of a compactor that stopped"
            );
        }
        let root = root.to_path_buf();
        // Finish an interrupted merge first: its inputs lie inside the
        // merged file's range, at or below the floor.
        let (merged_inputs, removed) = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || {
                Ok::<_, StoreError>((
                    recover_parquet(&root, Ranges::Stream)?,
                    remove_unacknowledged(&root, floor)?,
                ))
            })
            .await
            .map_err(|e| js_err("recovery task", e))??
        };
        if merged_inputs > 0 {
            tracing::info!(
                merged_inputs,
                "removed the inputs of a merge interrupted by a crash"
            );
        }
        if removed > 0 {
            tracing::info!(
                removed,
                floor,
                "removed parquet files of unacknowledged jetstream batches"
            );
        }
        Ok(Self {
            stream,
            consumer,
            root,
            nats,
            opts,
            acked: floor,
            dirty: false,
            mirror: None,
            last_merge: std::time::Instant::now(),
        })
    }

    /// Pushes the tree to `mirror` ([`crate::mirror`]) before every
    /// acknowledgement and after every merge, so that what is acknowledged
    /// is on the object store. The caller pulls the tree before
    /// [`NatsCompactor::open`] and pushes once after it.
    pub fn set_mirror(&mut self, mirror: Arc<crate::mirror::Mirror>) {
        self.mirror = Some(mirror);
    }

    async fn push(&self) -> Result<(), NatsError> {
        if let Some(m) = &self.mirror {
            m.push().await?;
        }
        Ok(())
    }

    /// Merges the small Parquet files of acknowledged batches now (nothing
    /// when merging is off).
    pub async fn merge_now(&mut self) -> Result<MergeReport, NatsError> {
        self.last_merge = std::time::Instant::now();
        let Some(opts) = self.opts.merge.clone() else {
            return Ok(MergeReport::default());
        };
        let (root, below) = (self.root.clone(), self.acked.saturating_add(1));
        let r = tokio::task::spawn_blocking(move || {
            merge_small_parquet(&root, Ranges::Stream, below, &opts)
        })
        .await
        .map_err(|e| js_err("merge task", e))??;
        self.push().await?;
        Ok(r)
    }

    /// Consumes one batch (waiting up to `max_wait` for it to fill), writes
    /// it durably as Parquet, then acknowledges it.
    pub async fn run_once(&mut self) -> Result<RoundReport, NatsError> {
        self.round(false).await
    }

    /// The last stream sequence acknowledged: every message up to it is
    /// durable in Parquet.
    pub fn acknowledged(&self) -> u64 {
        self.acked
    }

    /// Compacts every message the stream held when called, in rounds that
    /// do not wait for batches to fill, and returns their sum.
    pub async fn drain(&mut self) -> Result<RoundReport, NatsError> {
        let target = self
            .stream
            .get_info()
            .await
            .map_err(|e| js_err(format!("stream {}", self.nats.stream), e))?
            .state
            .last_sequence;
        let mut total = RoundReport::default();
        let mut idle = 0;
        while self.acked < target {
            let r = self.round(true).await?;
            total.add(&r);
            if r.messages > 0 {
                idle = 0;
                continue;
            }
            // Nothing delivered below the target: the rest of the range is
            // sequences the stream no longer holds (or never assigned), or
            // messages not yet visible to the consumer; give the latter a
            // moment before concluding.
            let pending = {
                let info = self
                    .consumer
                    .info()
                    .await
                    .map_err(|e| js_err(format!("consumer {}", self.nats.durable), e))?;
                info.num_pending + info.num_ack_pending as u64
            };
            if pending == 0 {
                break;
            }
            idle += 1;
            if idle > 100 {
                return Err(js_err(
                    format!("consumer {}", self.nats.durable),
                    format!("{pending} messages pending but none delivered for 5 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(total)
    }

    /// One round: a batch fetched (waiting up to `max_wait` for it to fill
    /// unless `no_wait`), written durably, acknowledged.
    async fn round(&mut self, no_wait: bool) -> Result<RoundReport, NatsError> {
        if self.dirty {
            // As at start-up: the files of the unacknowledged batch go (it
            // may come again split differently), then delivery restarts.
            let (root, floor) = (self.root.clone(), self.acked);
            tokio::task::spawn_blocking(move || remove_unacknowledged(&root, floor))
                .await
                .map_err(|e| js_err("recovery task", e))??;
            self.consumer = rewind(&self.stream, &self.nats, &self.opts, self.acked).await?;
            self.dirty = false;
            tracing::info!(
                floor = self.acked,
                "jetstream compaction resumes after the last acknowledged batch"
            );
        }
        // Cleared only once the fetched messages are acknowledged (or none
        // came): an error or a drop in between leaves it set.
        self.dirty = true;
        let mut messages = if no_wait {
            self.consumer
                .fetch()
                .max_messages(self.opts.max_messages)
                .messages()
                .await
        } else {
            self.consumer
                .batch()
                .max_messages(self.opts.max_messages)
                .expires(self.opts.max_wait)
                .messages()
                .await
        }
        .map_err(|e| js_err("fetch", e))?;
        let mut report = RoundReport::default();
        let mut records = Vec::new();
        let mut first = None;
        let mut last = None;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| js_err("fetch", e))?;
            let seq = msg
                .info()
                .map_err(|e| js_err("message info", e))?
                .stream_sequence;
            first.get_or_insert(seq);
            report.messages += 1;
            match decode_message(&msg.payload) {
                Ok(r) => {
                    match &r {
                        Record::Exposure(_) => report.exposures += 1,
                        Record::Event(_) => report.events += 1,
                        Record::Alias(_) => report.aliases += 1,
                    }
                    records.push(r);
                }
                Err(e) => {
                    report.undecodable += 1;
                    tracing::error!(seq, error = %e, "undecodable jetstream message skipped");
                }
            }
            last = Some((seq, msg));
        }
        let (Some(first), Some((last_seq, last_msg))) = (first, last) else {
            self.dirty = false;
            return Ok(report);
        };
        report.records = records.len();
        if !records.is_empty() {
            let root = self.root.clone();
            let wopts = WriteOptions {
                partitions: self.nats.partitions.max(1),
                ..WriteOptions::new(Ranges::Stream.stem(first, last_seq))
            };
            let files = tokio::task::spawn_blocking(move || write_records(&root, &records, &wopts))
                .await
                .map_err(|e| js_err("parquet task", e))??;
            report.files = files.len();
        }
        // Acknowledged means on the object store too.
        self.push().await?;
        // Ack policy "all": this acknowledges every message of the batch.
        last_msg.double_ack().await.map_err(|e| js_err("ack", e))?;
        self.acked = last_seq;
        self.dirty = false;
        if self.opts.purge_acknowledged {
            // Acknowledged: a failed purge leaves messages a later purge
            // removes, never a gap.
            if let Err(e) = self.stream.purge().sequence(last_seq + 1).await {
                tracing::warn!(error = %e, "purging acknowledged jetstream messages failed");
            }
        }
        if self.opts.merge.is_some() && self.last_merge.elapsed() >= self.opts.merge_every {
            // The batch is acknowledged: a failed merge is logged, not the
            // round's error (its inputs stay as they are).
            match self.merge_now().await {
                Ok(m) if m.parquet_merged > 0 => tracing::debug!(
                    merged = m.parquet_merged,
                    written = m.parquet_written,
                    "merged small jetstream parquet files"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "merging small jetstream parquet files failed")
                }
            }
        }
        Ok(report)
    }

    /// Runs rounds until `stop` resolves, logging and retrying failures.
    pub async fn run(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                r = self.run_once() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "jetstream compaction round failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }
}

/// The durable consumer's configuration, delivering from `deliver_policy`.
fn consumer_config(
    nats: &NatsOptions,
    opts: &CompactorOptions,
    deliver_policy: consumer::DeliverPolicy,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(nats.durable.clone()),
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(120),
        max_ack_pending: i64::try_from(opts.max_messages.saturating_mul(2)).unwrap_or(i64::MAX),
        deliver_policy,
        ..Default::default()
    }
}

/// Recreates the durable consumer so that it delivers from the message
/// after `floor` again: whatever was delivered and not acknowledged is
/// delivered now, not after the acknowledgement wait, and no later
/// acknowledgement can cover it unwritten.
async fn rewind(
    stream: &stream::Stream,
    nats: &NatsOptions,
    opts: &CompactorOptions,
    floor: u64,
) -> Result<consumer::PullConsumer, NatsError> {
    let what = || format!("consumer {}", nats.durable);
    stream
        .delete_consumer(&nats.durable)
        .await
        .map_err(|e| js_err(what(), e))?;
    stream
        .create_consumer(consumer_config(
            nats,
            opts,
            consumer::DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            },
        ))
        .await
        .map_err(|e| js_err(what(), e))
}

/// Removes `nats-<first>-<last>.parquet` files with `first > floor`: their
/// batch was never acknowledged and will be delivered again. Returns how
/// many were removed.
fn remove_unacknowledged(root: &Path, floor: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for path in list_parquet_files(root)? {
        let Some((first, _)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| Ranges::Stream.parse(n))
        else {
            continue;
        };
        if first > floor {
            std::fs::remove_file(&path).map_err(|e| StoreError::Io {
                op: "remove unacknowledged parquet file",
                path: path.clone(),
                source: e,
            })?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::record::{Event, Exposure};

    fn exposure(unit: &str, experiment: &str, ts: i64) -> Record {
        Record::Exposure(Exposure {
            unit_id: unit.into(),
            experiment: experiment.into(),
            variant: "a".into(),
            assigned_variant: "a".into(),
            opted_out: false,
            ts,
            received_at: ts,
            attributes: BTreeMap::new(),
            is_bot: false,
        })
    }

    #[test]
    fn messages_decode_from_the_binary_encoding_and_from_earlier_json() {
        let records = [exposure("u", "x", 5), crate::codec::tests::sample_event(3)];
        for r in &records {
            let mut binary = Vec::new();
            codec::encode(r, &mut binary);
            assert_eq!(decode_message(&binary).as_ref(), Ok(r));
            let json = serde_json::to_vec(r).unwrap();
            assert_eq!(decode_message(&json).as_ref(), Ok(r));
        }
        assert!(decode_message(b"").is_err());
        assert!(decode_message(b"{\"kind\":\"event\"}").is_err());
        assert!(decode_message(&[2, 0xff, 0xff]).is_err());
    }

    #[test]
    fn message_ids_follow_the_deduplication_keys() {
        let day = crate::record::MICROS_PER_DAY;
        let e = Record::Event(Event {
            event_id: "abc".into(),
            unit_id: "u".into(),
            event_type: "t".into(),
            ts: 0,
            received_at: 0,
            value: None,
            properties: BTreeMap::new(),
            is_bot: false,
            opted_out: false,
        });
        assert_eq!(message_id(&e.view()), "e:abc");
        // Same unit, experiment and day: same id; any of them differs: not.
        assert_eq!(
            message_id(&exposure("u", "x", 5).view()),
            message_id(&exposure("u", "x", day - 1).view())
        );
        assert_ne!(
            message_id(&exposure("u", "x", 5).view()),
            message_id(&exposure("u", "x", day).view())
        );
        assert_ne!(
            message_id(&exposure("u", "x", 5).view()),
            message_id(&exposure("u", "y", 5).view())
        );
        // No separator to forge: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            message_id(&exposure("ab", "c", 5).view()),
            message_id(&exposure("a", "bc", 5).view())
        );
    }

    #[test]
    fn start_up_removes_only_files_above_the_ack_floor() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("kind=events/date=2026-01-01/part=00");
        std::fs::create_dir_all(&part).unwrap();
        for name in [
            "nats-00000000000000000001-00000000000000000010",
            "nats-00000000000000000011-00000000000000000020",
            "seg-1-2",
        ] {
            std::fs::write(part.join(format!("{name}.parquet")), b"x").unwrap();
        }
        assert_eq!(remove_unacknowledged(dir.path(), 10).unwrap(), 1);
        assert!(part
            .join("nats-00000000000000000001-00000000000000000010.parquet")
            .exists());
        assert!(!part
            .join("nats-00000000000000000011-00000000000000000020.parquet")
            .exists());
        assert!(part.join("seg-1-2.parquet").exists());
    }
}
