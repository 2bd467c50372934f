//! `CoordTail`: reads the region's coordination stream (`ruvector:coordlog:{region}`) and hands
//! each change another instance made to that tenant's coordinator (`ApplyShared`), in stream
//! order, waiting for each (the coordinators' mailboxes are bounded: a slow one slows the
//! reader, nothing piles up). The read is `XREAD BLOCK` on a dedicated connection whose
//! response timeout is above the block time (see `client.rs`).
//!
//! Each session starts at the stream's end and first tells every running coordinator to load
//! again: while the reader was disconnected it may have missed changes, and a load is the
//! state at a position, after which the stream is complete again.

use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use ruvector_actors::{Agent, ApplyShared, Coordinators, Reload, SharedEvent};

use super::client::dedicated_connection;
use super::coordination::{bytes, decode, position, stream_key};

pub struct CoordTail {
    pub client: redis::Client,
    pub region: String,
    /// This instance: its own changes are skipped (already applied).
    pub instance: String,
    pub coordinators: Arc<Coordinators>,
    pub block: Duration,
    pub count: usize,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
}

impl CoordTail {
    pub async fn run(self) {
        let mut logged = false;
        loop {
            let conn = dedicated_connection(
                &self.client,
                self.block + self.command_timeout,
                self.connect_timeout,
            )
            .await;
            let result = match conn {
                Ok(conn) => {
                    logged = false;
                    self.session(conn).await
                }
                Err(e) => Err(e.to_string()),
            };
            metrics::gauge!("ruvector_coordination_stream_up").set(0.0);
            if let Err(e) = result {
                if !logged {
                    tracing::warn!(error = %e, "coordination stream reader down; retrying");
                    logged = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn session(&self, mut conn: redis::aio::MultiplexedConnection) -> Result<(), String> {
        let stream = stream_key(&self.region);
        let last: Vec<StreamId> = redis::cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async::<redis::streams::StreamRangeReply>(&mut conn)
            .await
            .map_err(|e| e.to_string())?
            .ids;
        let mut at = last
            .first()
            .map_or_else(|| "0-0".to_owned(), |s| s.id.clone());
        for c in self.coordinators.running() {
            c.do_send(Reload);
        }
        metrics::gauge!("ruvector_coordination_stream_up").set(1.0);
        loop {
            let opts = StreamReadOptions::default()
                .count(self.count)
                .block(self.block.as_millis() as usize);
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg(&opts)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&at)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                at = entry.id.clone();
                self.deliver(&entry).await;
            }
        }
    }

    async fn deliver(&self, entry: &StreamId) {
        let field = |k: &str| entry.map.get(k).and_then(bytes).unwrap_or_default();
        let text = |k: &str| String::from_utf8_lossy(field(k)).into_owned();
        if text("i") == self.instance {
            return;
        }
        let Some(at) = position(&entry.id) else {
            return;
        };
        let (tenant, kind, key) = (text("t"), text("k"), text("key"));
        // The tenant names a directory: only what a tenant name can be.
        if tenant.is_empty()
            || tenant.len() > 128
            || tenant.contains(['/', '\\'])
            || tenant.starts_with('.')
        {
            metrics::counter!("ruvector_coordination_stream_rejected_total").increment(1);
            return;
        }
        let number = |k: &str| text(k).parse::<u64>().unwrap_or(0);
        let event = match kind.as_str() {
            "a" => serde_json::from_slice::<Agent>(field("o"))
                .map(SharedEvent::Joined)
                .map_err(|e| e.to_string()),
            "l" => Ok(SharedEvent::Left(key.clone())),
            _ => decode(&kind, &key, number("v"), number("s"), field("o"))
                .map(SharedEvent::Change)
                .map_err(|e| e.to_string()),
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                metrics::counter!("ruvector_coordination_stream_rejected_total").increment(1);
                tracing::warn!(id = %entry.id, error = %e, "coordination stream entry rejected");
                return;
            }
        };
        let applied = match self.coordinators.named(&tenant).await {
            Ok(c) => c
                .send(ApplyShared {
                    position: at,
                    event,
                })
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match applied {
            Ok(()) => metrics::counter!("ruvector_coordination_stream_applied_total").increment(1),
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "a coordination change could not be applied; the tenant reloads");
                if let Ok(c) = self.coordinators.named(&tenant).await {
                    c.do_send(Reload);
                }
            }
        }
    }
}
