//! Settings of the shared tier: the region's Redis (cache, shared rate limits, change log) and
//! the peer regions this one replicates with. Kept apart from the server's own settings because
//! a server without Redis never reads them beyond validation.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// Empty: no Redis (the server runs alone on its data directory).
    pub url: String,
    /// Whether whole REST search answers are cached in Redis (`tier::SearchCache`).
    pub cache_searches: bool,
    /// Time to live of a cached search answer (s).
    pub cache_ttl_s: u64,
    /// Larger answers (bytes of JSON) are not cached.
    pub cache_max_answer_bytes: usize,
    /// A cache lookup slower than this counts as a miss (ms): waiting longer costs more than
    /// searching.
    pub cache_lookup_timeout_ms: u64,
    /// Most answers on their way to Redis at once; more are not cached.
    pub cache_max_pending: usize,
    /// Deadline of one ordinary Redis command (ms).
    pub command_timeout_ms: u64,
    /// Deadline of connecting to Redis (ms).
    pub connect_timeout_ms: u64,
    /// How often the connection's health is checked (PING) while nothing else runs (ms).
    pub health_interval_ms: u64,
}

impl RedisSettings {
    /// Whether a Redis is configured (cache, shared limits, change log).
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// One peer region: its Redis (whose change stream this region tails) and, optionally, its
/// HTTP address for a full resync.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSettings {
    pub name: String,
    pub redis_url: String,
    #[serde(default)]
    pub http_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionsSettings {
    /// Approximate length the region's change stream is trimmed to (`XADD MAXLEN ~`).
    pub stream_maxlen: u64,
    /// How long a delete's tombstone is kept so that late concurrent writes lose to it (s).
    pub tombstone_retention_s: u64,
    /// How long one blocking read of a peer's stream waits for news (ms).
    pub block_ms: u64,
    /// Most entries one read of a stream takes, and most records one publish appends.
    pub batch: u64,
    /// How often the publisher looks for acknowledged writes not yet in the stream (ms).
    pub publish_interval_ms: u64,
    /// Longest a starting instance stays unready while its region links read their backlogs
    /// (s; 0: no wait).
    pub catch_up_wait_s: u64,
    #[serde(default)]
    pub peers: Vec<PeerSettings>,
}

/// A region or instance name: it becomes part of Redis keys and log lines.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_redis_url(s: &str) -> bool {
    s.starts_with("redis://") || s.starts_with("rediss://") || s.starts_with("unix://")
}

/// Checks the tier's settings against the server's region and instance; the message names the
/// key at fault.
pub fn validate(
    region: &str,
    instance_id: &str,
    redis: &RedisSettings,
    regions: &RegionsSettings,
) -> Result<(), String> {
    let fail = |key: &str, why: String| Err(format!("{key}: {why}"));
    if !valid_name(region) {
        return fail(
            "server.region",
            "1-64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
        );
    }
    if !instance_id.is_empty() && !valid_name(instance_id) {
        return fail(
            "server.instance_id",
            "empty (generated) or 1-64 characters of A-Z, a-z, 0-9, '-' and '_'".into(),
        );
    }
    if !redis.url.is_empty() && !valid_redis_url(&redis.url) {
        return fail("redis.url", "a redis://, rediss:// or unix:// URL".into());
    }
    for (key, v) in [
        ("redis.cache_ttl_s", redis.cache_ttl_s),
        (
            "redis.cache_max_answer_bytes",
            redis.cache_max_answer_bytes as u64,
        ),
        (
            "redis.cache_lookup_timeout_ms",
            redis.cache_lookup_timeout_ms,
        ),
        ("redis.cache_max_pending", redis.cache_max_pending as u64),
        ("redis.command_timeout_ms", redis.command_timeout_ms),
        ("redis.connect_timeout_ms", redis.connect_timeout_ms),
        ("redis.health_interval_ms", redis.health_interval_ms),
        ("regions.stream_maxlen", regions.stream_maxlen),
        ("regions.block_ms", regions.block_ms),
        ("regions.batch", regions.batch),
        ("regions.publish_interval_ms", regions.publish_interval_ms),
    ] {
        if v == 0 {
            return fail(key, "must be at least 1".into());
        }
    }
    if regions.batch > 10_000 {
        return fail("regions.batch", "at most 10000".into());
    }
    if regions.catch_up_wait_s > 86_400 {
        return fail("regions.catch_up_wait_s", "at most 86400 (a day)".into());
    }
    if !regions.peers.is_empty() && redis.url.is_empty() {
        return fail(
            "regions.peers",
            "replication needs this region's Redis (redis.url)".into(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for p in &regions.peers {
        if !valid_name(&p.name) {
            return fail(
                "regions.peers.name",
                format!(
                    "{:?}: 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                    p.name
                ),
            );
        }
        if p.name == region {
            return fail(
                "regions.peers.name",
                format!("{:?} is this server's own region", p.name),
            );
        }
        if !seen.insert(p.name.as_str()) {
            return fail("regions.peers.name", format!("{:?} given twice", p.name));
        }
        if !valid_redis_url(&p.redis_url) {
            return fail(
                "regions.peers.redis_url",
                format!("{:?}: a redis://, rediss:// or unix:// URL", p.name),
            );
        }
        let http_ok = p.http_url.is_empty()
            || p.http_url.starts_with("http://")
            || p.http_url.starts_with("https://");
        if !http_ok {
            return fail(
                "regions.peers.http_url",
                format!("{:?}: empty or an http(s):// URL", p.name),
            );
        }
    }
    Ok(())
}

/// The instance id: the configured one, else the one kept in `<data_dir>/instance_id`, else a
/// new one written there (synced) so that it survives restarts — replication orders writes of
/// one region's instances by it, and a region-mate recognises its own writes by it.
pub fn resolve_instance_id(data_dir: &Path, configured: &str) -> std::io::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_string());
    }
    let path = data_dir.join("instance_id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            if valid_name(&id) {
                return Ok(id);
            }
            Err(std::io::Error::other(format!(
                "{} holds no valid instance id ({id:?}); fix or remove it",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let tmp = data_dir.join("instance_id.tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(id.as_bytes())?;
                f.sync_all()?;
            }
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = resolve_instance_id(dir.path(), "").unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(resolve_instance_id(dir.path(), "").unwrap(), a);
        assert_eq!(resolve_instance_id(dir.path(), "eu-2").unwrap(), "eu-2");
        std::fs::write(dir.path().join("instance_id"), "bad id!").unwrap();
        assert!(resolve_instance_id(dir.path(), "").is_err());
    }
}
