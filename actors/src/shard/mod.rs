//! `ShardActor`: owns one HNSW partition and its durable log.
//!
//! The actor is the shard's address: writes are handed to its writer thread through a bounded
//! queue (group commit, see `writer`), searches to the shared bounded `SearchPool`, so a slow
//! fsync or a slow search never blocks the actor's mailbox. `ShardState` is what the actor, its
//! writer and the router share: the current partition (swapped whole after a rebuild) and the
//! last applied sequence number.

pub mod load;
mod resolve;
mod state;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

pub use resolve::{ReplicatedChange, WriteOp};
pub use state::ShardState;
pub use writer::{WriteJob, WriteOutcome};

use crate::config::EngineConfig;
use crate::error::{EngineError, Overload, Result};
use crate::hub::Hub;
use crate::index::filter::Filter;
use crate::index::hnsw::{PartitionQuery, PartitionSpec, SearchPath, SearchTuning};
use crate::pool::SearchPool;
use crate::storage::wal::{ReplayMode, WriteLog};
use crate::types::Hit;

/// A prepared query shared by every shard of one search.
pub struct ShardQuery {
    /// In graph form (normalised for cosine).
    pub vector: Vec<f32>,
    pub k: usize,
    pub ef: usize,
    pub filter: Option<Filter>,
    pub with_vector: bool,
    pub with_metadata: bool,
}

/// One shard's part of a search, on the calling thread; records its latency by path.
pub fn search_shard(state: &ShardState, q: &ShardQuery, tuning: &SearchTuning) -> Vec<Hit> {
    let t = Instant::now();
    let (hits, path) = state.partition().search(
        &PartitionQuery {
            vector: &q.vector,
            k: q.k,
            ef: q.ef,
            filter: q.filter.as_ref(),
            with_vector: q.with_vector,
            with_metadata: q.with_metadata,
        },
        tuning,
    );
    let path = match path {
        SearchPath::Graph => "graph",
        SearchPath::Exact => "exact",
    };
    metrics::histogram!("ruvector_shard_search_seconds", "path" => path)
        .record(t.elapsed().as_secs_f64());
    hits
}

/// Write ops for this shard, in order; answered once durable and applied.
#[derive(Message)]
#[rtype(result = "Result<WriteOutcome>")]
pub struct ShardWrite(pub Vec<WriteOp>);

/// One shard's part of a search.
#[derive(Message)]
#[rtype(result = "Result<Vec<Hit>>")]
pub struct ShardSearch(pub Arc<ShardQuery>);

/// Stop the shard: the writer drains its queue, snapshots if anything changed, and exits.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopShard;

pub struct ShardActor {
    state: Arc<ShardState>,
    writer: Option<Sender<WriteJob>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    pool: Arc<SearchPool>,
    tuning: SearchTuning,
    search_timeout: Duration,
    mailbox: usize,
    /// `ruvector_shard_queue_depth{collection,shard}`: write requests waiting for the writer.
    queue_depth: metrics::Gauge,
}

/// A shard opened from disk, ready to become an actor.
pub struct OpenedShard {
    pub state: Arc<ShardState>,
    actor: ShardActor,
}

impl OpenedShard {
    /// Loads the newest snapshot, replays the log after it and starts the writer thread.
    pub fn open(
        dir: &Path,
        collection: &str,
        shard: usize,
        spec: PartitionSpec,
        cfg: &EngineConfig,
        pool: Arc<SearchPool>,
        hub: Arc<Hub>,
    ) -> Result<OpenedShard> {
        if !dir.is_dir() {
            // The router creates every shard directory before the collection exists.
            return Err(EngineError::Unavailable(format!(
                "shard directory {} is missing",
                dir.display()
            )));
        }
        let started = Instant::now();
        let loaded = load::load_partition(dir, spec, ReplayMode::Strict)?;
        let (partition, report) = (loaded.partition, loaded.report);
        metrics::counter!("ruvector_shard_loads_total", "graph" => loaded.source).increment(1);
        metrics::counter!("ruvector_wal_replayed_records_total").increment(report.records);
        tracing::info!(
            collection,
            shard,
            graph = loaded.source,
            snapshot_seq = loaded.from_seq,
            replayed = report.records,
            truncated = report.truncated.len(),
            damaged_skipped = report.skipped.len(),
            quarantined = loaded.quarantined,
            points = partition.live(),
            ms = started.elapsed().as_millis() as u64,
            "shard loaded"
        );
        let state = Arc::new(ShardState::new(
            Arc::from(collection),
            shard,
            dir.to_path_buf(),
            log_id(dir)?,
            partition,
            loaded.versions,
            report.last_seq,
            hub,
            cfg.origin.publish,
        ));
        let log = WriteLog::create(dir, report.last_seq + 1)?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.storage.writer_queue);
        let w = writer::Writer {
            dir: dir.to_path_buf(),
            state: state.clone(),
            storage: cfg.storage.clone(),
            index: cfg.index.clone(),
            log,
            rx,
            last_snapshot: Instant::now(),
            ops_since_snapshot: report.records,
            kept_snapshot: (loaded.from_seq > 0).then_some(loaded.from_seq),
            queue_wait: pool.queue_wait().clone(),
            failed: None,
            origin: cfg.origin.clone(),
            last_stamp_ns: 0,
            last_prune: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("writer-{collection}-{shard}"))
            .spawn(move || w.run())?;
        Ok(OpenedShard {
            state: state.clone(),
            actor: ShardActor {
                state,
                writer: Some(tx),
                writer_thread: Some(handle),
                pool,
                tuning: cfg.index.tuning(),
                search_timeout: Duration::from_millis(cfg.index.search_timeout_ms),
                mailbox: cfg.index.shard_mailbox,
                queue_depth: metrics::gauge!(
                    "ruvector_shard_queue_depth",
                    "collection" => collection.to_owned(),
                    "shard" => shard.to_string()
                ),
            },
        })
    }

    /// Starts the actor on `arbiter`.
    pub fn start(self, arbiter: &ArbiterHandle) -> Addr<ShardActor> {
        let actor = self.actor;
        ShardActor::start_in_arbiter(arbiter, move |_| actor)
    }
}

/// The shard's log id (`log_id` in its directory), made on first open.
fn log_id(dir: &Path) -> Result<Arc<str>> {
    let path = dir.join("log_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(Arc::from(id.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = dir.join("log_id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    crate::storage::wal::sync_dir(dir)?;
    Ok(Arc::from(id))
}

/// Directory of shard `i` of a collection.
pub fn shard_dir(collection_dir: &Path, i: usize) -> PathBuf {
    collection_dir.join(format!("shard-{i}"))
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl Handler<ShardWrite> for ShardActor {
    type Result = ResponseFuture<Result<WriteOutcome>>;

    fn handle(&mut self, msg: ShardWrite, _: &mut Self::Context) -> Self::Result {
        let (reply, rx) = oneshot::channel();
        let job = WriteJob {
            ops: msg.0,
            reply,
            enqueued: Instant::now(),
            behind_others: self.writer.as_ref().is_some_and(|w| !w.is_empty()),
        };
        let sent = match &self.writer {
            Some(w) => w.try_send(job).map_err(|e| match e {
                TrySendError::Full(_) => {
                    metrics::counter!("ruvector_overloaded_total", "reason" => "shard_write_queue")
                        .increment(1);
                    EngineError::Overloaded(Overload::WriteQueueFull)
                }
                TrySendError::Disconnected(_) => EngineError::Overloaded(Overload::ShardStopping),
            }),
            None => Err(EngineError::Overloaded(Overload::ShardStopping)),
        };
        if let Some(w) = &self.writer {
            self.queue_depth.set(w.len() as f64);
        }
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| EngineError::Internal("shard writer stopped".into()))?
        })
    }
}

impl Handler<ShardSearch> for ShardActor {
    type Result = ResponseFuture<Result<Vec<Hit>>>;

    fn handle(&mut self, msg: ShardSearch, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let state = self.state.clone();
        let tuning = self.tuning;
        let timeout = self.search_timeout;
        let submitted = self.pool.submit(
            Box::new(move || {
                let _ = tx.send(search_shard(&state, &msg.0, &tuning));
            }),
            Instant::now() + timeout,
        );
        Box::pin(async move {
            submitted?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(hits)) => Ok(hits),
                Ok(Err(_)) => Err(EngineError::Internal("search worker died".into())),
                Err(_) => Err(EngineError::Timeout(timeout.as_millis() as u64)),
            }
        })
    }
}

impl Handler<StopShard> for ShardActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopShard, _: &mut Self::Context) -> Self::Result {
        // Dropping the sender lets the writer drain what is queued and exit.
        self.writer = None;
        let thread = self.writer_thread.take();
        Box::pin(
            async move {
                if let Some(t) = thread {
                    let _ = tokio::task::spawn_blocking(move || t.join()).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
