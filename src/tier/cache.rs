//! The regional search cache: whole REST search answers kept in the region's Redis for
//! `redis.cache_ttl_s`, keyed by the collection (name and generation), its version, and a hash
//! of the request (vector, k, ef, filter, flags).
//!
//! Invalidation is by version, never by deleting keys: the version changes with every write a
//! shard applies, and it is bumped before the write is acknowledged, so a search that starts
//! after an acknowledgement reads the new version and cannot hit an answer computed before that
//! write (old entries simply expire). A search that raced a write may store its answer under the
//! version it read; only searches that read that same older version can be served it.
//!
//! The cache never delays or fails a search: with Redis down (`TierError::Down` answers at once)
//! or slow (the command timeout), a lookup counts as an error and the search runs; answers are
//! stored in the background after the reply.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::client::RedisTier;

/// Outcome labels of `ruvector_cache_requests_total{result}` (a bounded set).
const HIT: &str = "hit";
const MISS: &str = "miss";
const ERROR: &str = "error";

pub struct SearchCache {
    tier: Arc<RedisTier>,
    prefix: String,
    ttl_s: u64,
    max_answer_bytes: usize,
    lookup_timeout: std::time::Duration,
    /// Stores on their way to Redis, at most `max_pending` (each holds its answer).
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

impl SearchCache {
    pub fn new(
        tier: Arc<RedisTier>,
        region: &str,
        ttl_s: u64,
        max_answer_bytes: usize,
        lookup_timeout: std::time::Duration,
        max_pending: usize,
    ) -> SearchCache {
        for result in [HIT, MISS, ERROR] {
            metrics::counter!("ruvector_cache_requests_total", "result" => result).absolute(0);
        }
        SearchCache {
            tier,
            prefix: format!("ruvector:cache:{region}:"),
            ttl_s,
            max_answer_bytes,
            lookup_timeout,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending,
        }
    }

    /// The key of one request: the collection's internal name, generation and version, and the
    /// request's canonical JSON (a body that differs only in key order is another entry).
    pub fn key(&self, collection: &str, generation: u64, version: u64, request: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update((collection.len() as u64).to_le_bytes());
        h.update(collection.as_bytes());
        h.update(generation.to_le_bytes());
        h.update(version.to_le_bytes());
        h.update(request);
        let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{digest}", self.prefix)
    }

    /// The cached `results` JSON of `key`, if any.
    pub async fn get(&self, key: &str) -> Option<String> {
        let t = std::time::Instant::now();
        let got = self
            .tier
            .cmd_within::<Option<String>>(redis::cmd("GET").arg(key), self.lookup_timeout)
            .await;
        // What Redis hands back goes into an answer as it is: it must be a JSON array.
        let got = got.map(|v| {
            v.filter(|text| {
                text.starts_with('[')
                    && serde_json::from_str::<&serde_json::value::RawValue>(text).is_ok()
            })
        });
        let result = match &got {
            Ok(Some(_)) => HIT,
            Ok(None) => MISS,
            Err(_) => ERROR,
        };
        metrics::counter!("ruvector_cache_requests_total", "result" => result).increment(1);
        metrics::histogram!("ruvector_cache_lookup_seconds").record(t.elapsed().as_secs_f64());
        got.ok().flatten()
    }

    /// Stores a `results` JSON under `key` in the background. Not kept: answers above
    /// `redis.cache_max_answer_bytes`, and any while `redis.cache_max_pending` stores are still
    /// on their way (a slow Redis must not pile up answers in memory).
    pub fn put(&self, key: String, results: String) {
        if results.len() > self.max_answer_bytes {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("ruvector_cache_stores_dropped_total").increment(1);
            return;
        }
        let (tier, pending, ttl) = (self.tier.clone(), self.pending.clone(), self.ttl_s);
        tokio::spawn(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(results).arg("EX").arg(ttl);
            if tier.cmd::<()>(&cmd).await.is_ok() {
                metrics::counter!("ruvector_cache_stores_total").increment(1);
            }
            pending.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
