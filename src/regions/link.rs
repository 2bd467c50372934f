//! A region link: tails one region's change stream (a peer's, or this region's own for the
//! writes of its other instances) and applies each entry through the router like a local write
//! — validated, logged, published to subscribers and SSE resume windows — but as a replicated
//! write, which takes effect only if its version wins (see the engine's `version.rs`).
//!
//! The read is `XREAD BLOCK` on a dedicated connection whose response timeout is above the
//! block time. The offset (epoch, last id) is saved in the data directory after the entries up
//! to it are durable here. A changed epoch (the peer's Redis lost the stream) or an offset the
//! stream has trimmed past means entries were lost to this link: it resyncs in full from the
//! peer's scroll endpoint (`resync.rs`) when it knows the peer's HTTP address, and says so in a
//! log line and `ruvector_region_resyncs_total{peer,reason}`.
//!
//! Until it has read its stream to the end once (or found the stream's Redis unreachable) a link
//! holds the starting instance's readiness back (`Lifecycle::caught_up`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::Addr;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use ruvector_actors::{Metric, Router, WriteOp};

use super::apply::Target;
use super::drops::Drops;
use super::entry::{ChangeEntry, Entry};
use super::keys;
use super::offset::{LinkOffset, OffsetFile};
use super::resync;
use crate::lifecycle::Lifecycle;
use crate::tier::dedicated_connection;

pub struct LinkConfig {
    /// The region whose stream this link reads (a peer, or this region).
    pub peer: String,
    pub redis_url: String,
    /// The peer's HTTP address for a full resync (empty: none).
    pub http_url: String,
    /// This instance: entries it published itself are skipped.
    pub instance: String,
    pub data_dir: PathBuf,
    pub block: Duration,
    pub count: usize,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

pub struct Link {
    cfg: LinkConfig,
    router: Addr<Router>,
    drops: std::sync::Arc<Drops>,
    file: OffsetFile,
    offset: LinkOffset,
    /// Readiness, until this link has caught up once.
    catching_up: Option<std::sync::Arc<Lifecycle>>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Stream ids compare as (ms, seq).
fn id_parts(id: &str) -> (u64, u64) {
    let mut it = id.splitn(2, '-');
    let ms = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seq = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ms, seq)
}

impl Link {
    pub fn new(
        cfg: LinkConfig,
        router: Addr<Router>,
        drops: std::sync::Arc<Drops>,
        lifecycle: std::sync::Arc<Lifecycle>,
    ) -> std::io::Result<Link> {
        let file = OffsetFile::new(&cfg.data_dir, &cfg.peer);
        let offset = file.load()?;
        Ok(Link {
            cfg,
            router,
            drops,
            file,
            offset,
            catching_up: Some(lifecycle),
        })
    }

    /// The backlog is read (or cannot be): this link no longer holds readiness back.
    fn caught_up(&mut self) {
        if let Some(life) = self.catching_up.take() {
            tracing::info!(peer = %self.cfg.peer, offset = %self.offset.id, "region link caught up");
            life.caught_up();
        }
    }

    fn gauge(&self, name: &'static str, v: f64) {
        metrics::gauge!(name, "peer" => self.cfg.peer.clone()).set(v);
    }

    pub async fn run(mut self) {
        let client = match redis::Client::open(self.cfg.redis_url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(peer = %self.cfg.peer, error = %e, "region link cannot start: bad Redis URL");
                return;
            }
        };
        let mut logged = false;
        loop {
            let conn = dedicated_connection(
                &client,
                self.cfg.block + self.cfg.command_timeout,
                self.cfg.connect_timeout,
            )
            .await;
            let result = match conn {
                Ok(conn) => {
                    tracing::info!(peer = %self.cfg.peer, offset = %self.offset.id, "region link connected");
                    logged = false;
                    self.session(conn).await
                }
                Err(e) => {
                    // Unreachable: waiting for it would keep this instance out of service with
                    // no gain. (A failure after connecting — a batch that could not be applied
                    // yet — is retried and still holds readiness back, up to the deadline.)
                    self.caught_up();
                    Err(e.to_string())
                }
            };
            self.gauge("ruvector_region_link_up", 0.0);
            if let Err(e) = result {
                if !logged {
                    tracing::warn!(peer = %self.cfg.peer, error = %e, "region link down; retrying");
                    logged = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn session(&mut self, mut conn: MultiplexedConnection) -> Result<(), String> {
        self.gauge("ruvector_region_link_up", 1.0);
        let stream = keys::changes(&self.cfg.peer);
        let mut checked_at = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if checked_at.elapsed() >= Duration::from_secs(1) {
                checked_at = std::time::Instant::now();
                if !self.check_epoch(&mut conn).await? {
                    // Nothing was published to this Redis since it (re)started: nothing is read
                    // until its stream has an epoch to compare with the saved one.
                    self.caught_up();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    checked_at = std::time::Instant::now() - Duration::from_secs(60);
                    continue;
                }
            }
            let opts = StreamReadOptions::default()
                .count(self.cfg.count)
                .block(self.cfg.block.as_millis() as usize);
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg(&opts)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&self.offset.id)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let ids: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if ids.is_empty() {
                self.gauge("ruvector_region_lag_seconds", 0.0);
                self.gauge("ruvector_region_lag_entries", 0.0);
                self.caught_up();
                continue;
            }
            let full = ids.len() >= self.cfg.count;
            self.apply(&ids).await?;
            if full {
                let behind: Vec<redis::Value> = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({}", self.offset.id))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                self.gauge("ruvector_region_lag_entries", behind.len() as f64);
            } else {
                self.gauge("ruvector_region_lag_entries", 0.0);
                self.caught_up();
            }
        }
    }

    /// Compares the stream's epoch with the saved one and resyncs when it changed or when the
    /// stream was trimmed past the offset. `false`: the stream has no epoch (nothing published
    /// since its Redis started).
    async fn check_epoch(&mut self, conn: &mut MultiplexedConnection) -> Result<bool, String> {
        let epoch: Option<String> = redis::cmd("GET")
            .arg(keys::epoch(&self.cfg.peer))
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        let Some(epoch) = epoch else {
            return Ok(false);
        };
        let reason = match &self.offset.epoch {
            None if self.offset.id == "0-0" => {
                // First contact: read the stream from its start, unless it was trimmed.
                if self.trimmed_past(conn).await? {
                    Some("trimmed")
                } else {
                    self.offset.epoch = Some(epoch.clone());
                    None
                }
            }
            Some(saved) if *saved != epoch => Some("epoch"),
            // A place without an epoch (cannot be written by this code): compare from now on.
            None => {
                self.offset.epoch = Some(epoch.clone());
                None
            }
            _ if self.trimmed_past(conn).await? => Some("trimmed"),
            _ => None,
        };
        if let Some(reason) = reason {
            self.resync(conn, epoch, reason).await?;
        }
        Ok(true)
    }

    /// Whether entries after the offset were trimmed away (`max-deleted-entry-id`, Redis 7).
    async fn trimmed_past(&self, conn: &mut MultiplexedConnection) -> Result<bool, String> {
        let raw: redis::RedisResult<std::collections::HashMap<String, redis::Value>> =
            redis::cmd("XINFO")
                .arg("STREAM")
                .arg(keys::changes(&self.cfg.peer))
                .query_async(conn)
                .await;
        let Ok(raw) = raw else { return Ok(false) };
        let deleted = match raw.get("max-deleted-entry-id") {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => return Ok(false),
        };
        Ok(id_parts(&deleted) > id_parts(&self.offset.id))
    }

    async fn resync(
        &mut self,
        conn: &mut MultiplexedConnection,
        epoch: String,
        reason: &'static str,
    ) -> Result<(), String> {
        metrics::counter!("ruvector_region_resyncs_total", "peer" => self.cfg.peer.clone(), "reason" => reason)
            .increment(1);
        // Entries appended from here on are read after the copy (applying them twice is
        // harmless: a version never wins over itself).
        let last: Option<String> = {
            let top: Vec<(String, std::collections::HashMap<String, redis::Value>)> =
                redis::cmd("XREVRANGE")
                    .arg(keys::changes(&self.cfg.peer))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(conn)
                    .await
                    .map_err(|e| e.to_string())?;
            top.into_iter().next().map(|(id, _)| id)
        };
        if self.cfg.http_url.is_empty() {
            tracing::warn!(peer = %self.cfg.peer, reason, "region link lost its place in the peer's stream and the peer has no http_url for a full resync: reading the stream from its start (writes missing from it are not recovered)");
            self.offset = LinkOffset {
                epoch: Some(epoch),
                id: "0-0".into(),
            };
        } else {
            tracing::warn!(peer = %self.cfg.peer, reason, http = %self.cfg.http_url, "region link resyncing in full from the peer");
            let t = std::time::Instant::now();
            let points = resync::copy_all(
                &self.cfg.http_url,
                &self.cfg.peer,
                &self.router,
                &self.drops,
            )
            .await
            .map_err(|e| format!("resync from {}: {e}", self.cfg.http_url))?;
            tracing::info!(peer = %self.cfg.peer, points, ms = t.elapsed().as_millis() as u64, "region link resynced");
            self.offset = LinkOffset {
                epoch: Some(epoch),
                id: last.unwrap_or_else(|| "0-0".into()),
            };
        }
        self.file.save(&self.offset).map_err(|e| e.to_string())
    }

    /// Applies a batch of entries in order, then saves the offset.
    async fn apply(&mut self, ids: &[StreamId]) -> Result<(), String> {
        let mut group: Vec<ChangeEntry> = Vec::new();
        let mut newest_ts = 0u64;
        let mut applied = 0u64;
        for sid in ids {
            let entry = match Entry::from_fields(&sid.map) {
                Ok(Entry::Point(e)) => e,
                Ok(Entry::Drop(d)) => {
                    if d.version.instance.as_ref() == self.cfg.instance {
                        continue;
                    }
                    // Everything before it in the stream first: the delete supersedes it.
                    if !group.is_empty() {
                        applied += self.write(std::mem::take(&mut group)).await?;
                    }
                    newest_ts = newest_ts.max(d.version.ts);
                    self.target(&d.collection, 0, Metric::Cosine)
                        .apply_drop(d.version)
                        .await?;
                    continue;
                }
                Err(e) => {
                    metrics::counter!("ruvector_region_rejected_total", "peer" => self.cfg.peer.clone())
                        .increment(1);
                    tracing::warn!(peer = %self.cfg.peer, id = %sid.id, error = %e, "change entry rejected");
                    continue;
                }
            };
            if entry.version.instance.as_ref() == self.cfg.instance {
                continue;
            }
            newest_ts = newest_ts.max(entry.version.ts);
            if group
                .first()
                .is_some_and(|g| g.collection != entry.collection)
            {
                applied += self.write(std::mem::take(&mut group)).await?;
            }
            group.push(entry);
        }
        if !group.is_empty() {
            applied += self.write(group).await?;
        }
        if let Some(last) = ids.last() {
            self.offset.id = last.id.clone();
            self.file.save(&self.offset).map_err(|e| e.to_string())?;
        }
        let peer = self.cfg.peer.clone();
        metrics::counter!("ruvector_region_applied_total", "peer" => peer.clone())
            .increment(applied);
        if newest_ts > 0 {
            let lag = now_ns().saturating_sub(newest_ts) as f64 / 1e9;
            self.gauge("ruvector_region_lag_seconds", lag);
            metrics::histogram!("ruvector_region_replication_delay_seconds", "peer" => peer)
                .record(lag);
        }
        Ok(())
    }

    fn target<'a>(&'a self, collection: &'a str, dimension: usize, metric: Metric) -> Target<'a> {
        Target {
            router: &self.router,
            peer: &self.cfg.peer,
            collection,
            dimension,
            metric,
            drops: &self.drops,
        }
    }

    /// Writes one collection's entries through the router (see `apply.rs`); answers how many
    /// took effect.
    async fn write(&self, entries: Vec<ChangeEntry>) -> Result<u64, String> {
        let (name, dimension, metric) = (
            entries[0].collection.clone(),
            entries[0].dimension,
            entries[0].metric,
        );
        let ops = entries
            .into_iter()
            .map(|e| WriteOp::Replicated {
                id: e.id,
                change: e.change,
                version: std::sync::Arc::new(e.version),
            })
            .collect();
        self.target(&name, dimension, metric).apply(ops).await
    }
}
