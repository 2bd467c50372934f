//! The change-log publisher: appends every write acknowledged here to the region's stream.
//!
//! The shards' logs are the outbox. The publisher tails each shard's log after the last record
//! Redis holds for it, turns the records this instance originated into stream entries (writes
//! applied from other regions or instances are theirs to publish) and appends them with one Lua
//! script per batch that (1) sets the stream's epoch if it has none — a Redis restarted without
//! persistence gets a new one, which tells readers their offsets mean nothing now — and (2)
//! skips records whose sequence number the per-shard published mark already covers, then moves
//! the mark. A crash between the append and the mark's update cannot publish anything twice,
//! because both happen inside the one script; a Redis that is down only delays publishing: the
//! shard keeps its log segments after the mark (`ShardState::set_published`) until Redis has
//! them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use ruvector_actors::storage::tail::{LogTail, TailRecord};
use ruvector_actors::version::PointVersion;
use ruvector_actors::{Catalogue, Collection, ReplicatedChange};

use super::drops::Drops;
use super::entry::{ChangeEntry, DropEntry};
use super::keys;
use crate::tier::dedicated_connection;

/// Appends a batch to the stream unless already there (see the module doc).
/// KEYS: stream, published marks, epoch. ARGV: mark field, maxlen, epoch candidate, last seq of
/// the batch, entry count, then per entry: its seq, its field count, its fields and values.
const PUBLISH: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
end
local done = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local n = tonumber(ARGV[5])
local at = 6
for _ = 1, n do
  local seq = tonumber(ARGV[at])
  local nf = tonumber(ARGV[at + 1])
  at = at + 2
  if seq > done then
    local args = {KEYS[1], 'MAXLEN', '~', ARGV[2], '*'}
    for f = 0, nf - 1 do args[#args + 1] = ARGV[at + f] end
    redis.call('XADD', unpack(args))
  end
  at = at + nf
end
if tonumber(ARGV[4]) > done then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
return epoch
";

/// KEYS: stream, epoch. ARGV: maxlen, epoch candidate, n, then n × (field count, fields…).
/// Collection deletes (`drops.rs`): appended as they are (applying one twice changes nothing).
const PUBLISH_DROPS: &str = r"
if not redis.call('GET', KEYS[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
local at = 4
for _ = 1, tonumber(ARGV[3]) do
  local nf = tonumber(ARGV[at])
  local args = {KEYS[1], 'MAXLEN', '~', ARGV[1], '*'}
  for f = 1, nf do args[#args + 1] = ARGV[at + f] end
  redis.call('XADD', unpack(args))
  at = at + nf + 1
end
return 1
";

pub struct PublisherConfig {
    pub client: redis::Client,
    pub region: String,
    pub instance: String,
    pub maxlen: u64,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub interval: Duration,
    pub batch: usize,
    /// How long collection deletes are remembered (`regions.tombstone_retention_s`), in ns.
    pub retention_ns: u64,
}

/// One shard being published.
struct ShardFeed {
    tail: Option<LogTail>,
    /// Entries read but not yet in Redis (retried first), with the last seq they cover.
    pending: Option<(Vec<(u64, ChangeEntry)>, u64)>,
}

pub struct Publisher {
    cfg: PublisherConfig,
    catalogue: Catalogue,
    script: redis::Script,
    drops_script: redis::Script,
    drops: Arc<Drops>,
    feeds: HashMap<Arc<str>, ShardFeed>,
    conn: Option<MultiplexedConnection>,
}

impl Publisher {
    pub fn new(cfg: PublisherConfig, catalogue: Catalogue, drops: Arc<Drops>) -> Publisher {
        Publisher {
            cfg,
            catalogue,
            script: redis::Script::new(PUBLISH),
            drops_script: redis::Script::new(PUBLISH_DROPS),
            drops,
            feeds: HashMap::new(),
            conn: None,
        }
    }

    pub async fn run(mut self) {
        loop {
            let busy = match self.round().await {
                Ok(busy) => busy,
                Err(e) => {
                    if self.conn.take().is_some() {
                        tracing::warn!(error = %e, "change-log publishing paused: Redis unreachable; the shard logs keep every write until it returns");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    false
                }
            };
            if !busy {
                tokio::time::sleep(self.cfg.interval).await;
            }
        }
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let c = dedicated_connection(
            &self.cfg.client,
            self.cfg.command_timeout,
            self.cfg.connect_timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(region = %self.cfg.region, "change-log publisher connected");
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// One pass over every shard; whether anything was published.
    /// Appends the local collection deletes not yet published.
    async fn publish_drops(&mut self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let pending = self.drops.pending();
        if pending.is_empty() {
            return Ok(());
        }
        let mut call = self.drops_script.prepare_invoke();
        call.key(keys::changes(&self.cfg.region))
            .key(keys::epoch(&self.cfg.region))
            .arg(self.cfg.maxlen)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(pending.len());
        for record in &pending {
            let fields = DropEntry::fields(record);
            call.arg(fields.len() * 2);
            for (k, v) in fields {
                call.arg(k).arg(v);
            }
        }
        let _: i64 = tokio::time::timeout(self.cfg.command_timeout, call.invoke_async(conn))
            .await
            .map_err(|_| "publishing collection deletes timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.drops
            .published(pending.len(), self.cfg.retention_ns)
            .map_err(|e| format!("recording published collection deletes: {e}"))
    }

    async fn round(&mut self) -> Result<bool, String> {
        let mut conn = self.connection().await?;
        self.publish_drops(&mut conn).await?;
        let mut seen = HashSet::new();
        let mut busy = false;
        for collection in self.catalogue.all() {
            for state in collection.shard_states() {
                seen.insert(state.log_id.clone());
                if !self.feeds.contains_key(&state.log_id) {
                    let mark: Option<u64> = redis::cmd("HGET")
                        .arg(keys::published(&self.cfg.region))
                        .arg(state.log_id.as_ref())
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mark = mark.unwrap_or(0).min(state.seq());
                    state.set_published(mark);
                    self.feeds.insert(
                        state.log_id.clone(),
                        ShardFeed {
                            tail: Some(LogTail::new(&state.dir, mark)),
                            pending: None,
                        },
                    );
                }
                let Some(feed) = self.feeds.get_mut(&state.log_id) else {
                    continue;
                };
                if feed.pending.is_none() {
                    let upto = state.seq();
                    let Some(mut tail) = feed.tail.take() else {
                        continue;
                    };
                    if upto <= tail.after() {
                        feed.tail = Some(tail);
                        continue;
                    }
                    let batch = self.cfg.batch;
                    let read = tokio::task::spawn_blocking(move || {
                        let r = tail.read(upto, batch);
                        (tail, r)
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    feed.tail = Some(read.0);
                    let records = match read.1 {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(collection = %state.collection, shard = state.shard, error = %e, "reading the shard log for the change log failed");
                            continue;
                        }
                    };
                    let Some(last) = records.last().map(|r| r.0) else {
                        continue;
                    };
                    let entries = entries_of(&collection, state, &self.cfg, records);
                    feed.pending = Some((entries, last));
                }
                if let Some((entries, last)) = &feed.pending {
                    let mut call = self.script.prepare_invoke();
                    call.key(keys::changes(&self.cfg.region))
                        .key(keys::published(&self.cfg.region))
                        .key(keys::epoch(&self.cfg.region))
                        .arg(state.log_id.as_ref())
                        .arg(self.cfg.maxlen)
                        // Fresh each time: a Redis that lost the stream must get an epoch
                        // no reader has seen.
                        .arg(uuid::Uuid::new_v4().simple().to_string())
                        .arg(*last)
                        .arg(entries.len());
                    for (seq, e) in entries {
                        let fields = e.fields();
                        call.arg(*seq).arg(fields.len() * 2);
                        for (k, v) in fields {
                            call.arg(k).arg(v);
                        }
                    }
                    let _epoch: String = tokio::time::timeout(
                        self.cfg.command_timeout,
                        call.invoke_async(&mut conn),
                    )
                    .await
                    .map_err(|_| "publishing timed out".to_string())?
                    .map_err(|e| e.to_string())?;
                    metrics::counter!("ruvector_region_published_total")
                        .increment(entries.len() as u64);
                    state.set_published(*last);
                    feed.pending = None;
                    busy = true;
                }
            }
        }
        self.feeds.retain(|id, _| seen.contains(id));
        Ok(busy)
    }
}

/// The entries of the records this instance originated (see the module doc).
fn entries_of(
    collection: &Collection,
    state: &ruvector_actors::shard::ShardState,
    cfg: &PublisherConfig,
    records: Vec<TailRecord>,
) -> Vec<(u64, ChangeEntry)> {
    use ruvector_actors::index::hnsw::Op;
    let mine = |v: &PointVersion| {
        v.region.as_ref() == cfg.region.as_str() && v.instance.as_ref() == cfg.instance.as_str()
    };
    let mut out = Vec::new();
    for (seq, version, op) in records {
        let Some(version) = version.filter(mine) else {
            continue;
        };
        let id = op.id().to_owned();
        let change = match op {
            Op::Upsert {
                vector, metadata, ..
            } => ReplicatedChange::Upsert {
                vector,
                metadata: metadata.map(|m| m.as_ref().clone()),
            },
            Op::Delete { .. } => ReplicatedChange::Delete,
            Op::SetMetadata { metadata, .. } => {
                // A patch travels as the point's whole state while the point still has this
                // version (a region that missed the point gets it whole); a later write
                // supersedes it anyway.
                let metadata = metadata.map(|m| m.as_ref().clone());
                let current = state.versions().live(&id).cloned();
                match (current, state.partition().get_vector(&id)) {
                    (Some(v), Some(vector)) if *v == version => {
                        ReplicatedChange::Upsert { vector, metadata }
                    }
                    _ => ReplicatedChange::Metadata { metadata },
                }
            }
        };
        out.push((
            seq,
            ChangeEntry {
                collection: collection.spec.name.clone(),
                dimension: collection.spec.dimension,
                metric: collection.spec.metric,
                id,
                change,
                version,
            },
        ));
    }
    out
}
