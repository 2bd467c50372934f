//! Layered settings: the embedded `config/default.toml`, then the file named by `--config`,
//! then `RUVECTOR__SECTION__KEY` environment variables, then the design's plain names
//! (`PORT`, `REGION`, `REDIS_URL`, `REDIS_HOST`/`REDIS_PORT`, `HNSW_M`, `HNSW_EF_CONSTRUCTION`,
//! `HNSW_EF_SEARCH`). Unknown keys and bad values fail the start with the key named.

use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use ruvector_actors::config::WriteOrigin;
use ruvector_actors::{CoordConfig, EngineConfig, IndexConfig, StorageConfig};
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, AuthSettings};

mod tier;
pub use tier::{resolve_instance_id, PeerSettings, RedisSettings, RegionsSettings};

/// The defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub region: String,
    /// Empty: generated once and kept in the data directory (`resolve_instance_id`).
    pub instance_id: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub keep_alive_ms: u64,
    pub client_request_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub client_disconnect_timeout_ms: u64,
    pub max_connections: usize,
    pub drain_timeout_ms: u64,
    pub search_cache_max_age_s: u64,
    pub mcp_allowed_hosts: Vec<String>,
}

/// WebSocket and SSE sessions (see `config/default.toml` for each key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub max_streams: usize,
    pub heartbeat_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_outbound_messages: usize,
    pub max_outbound_bytes: usize,
    pub write_timeout_ms: u64,
    pub max_inflight: usize,
    pub max_frame_bytes: usize,
    pub max_subscriptions: usize,
    pub replay_window: usize,
    pub replay_window_bytes: usize,
    pub max_control_frames_per_s: u32,
    pub close_grace_ms: u64,
}

/// Per-caller rate limits (`supervise`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub read_per_s: u32,
    pub read_burst: u32,
    pub write_per_s: u32,
    pub write_burst: u32,
    pub stream_per_s: u32,
    pub stream_burst: u32,
    pub premium_factor: u32,
    pub throttle_per_s: u32,
    pub abuse_refusals: u32,
    pub max_keys: usize,
    /// One budget per caller across the region's instances, in Redis (`tier::RegionalLimits`).
    pub regional: bool,
    pub regional_lease: u32,
    pub regional_lease_ms: u64,
}

/// Admission and load shedding (`supervise`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedSettings {
    pub enabled: bool,
    pub interval_ms: u64,
    pub memory_limit_mb: u64,
    pub p99_target_ms: f64,
    pub throttle_at: f64,
    pub close_idle_at: f64,
    pub reject_at: f64,
    pub hysteresis: f64,
    pub cool_down_ms: u64,
    pub idle_close_after_ms: u64,
    pub idle_close_batch: usize,
    pub shed_fraction: f64,
    pub max_inflight: usize,
    /// Mean queueing delay (search slot or shard writer) that counts as 100% load.
    pub queue_delay_target_ms: f64,
    /// Searches an interval must hold before their p99 is a signal.
    pub p99_min_samples: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageConfig,
    pub index: IndexConfig,
    pub stream: StreamSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub shed: ShedSettings,
    pub coordination: CoordConfig,
    pub redis: RedisSettings,
    pub regions: RegionsSettings,
    pub metrics: MetricsSettings,
}

/// A setting that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(String);

/// The design's plain environment names and the keys they set.
const PLAIN_ENV: [(&str, &str); 6] = [
    ("PORT", "server.port"),
    ("REGION", "server.region"),
    ("REDIS_URL", "redis.url"),
    ("HNSW_M", "index.hnsw.m"),
    ("HNSW_EF_CONSTRUCTION", "index.hnsw.ef_construction"),
    ("HNSW_EF_SEARCH", "index.hnsw.ef_search"),
];

impl Settings {
    /// Loads from the layers described above, reading the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, SettingsError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(config_file, &vars)
    }

    /// Loads with an explicit environment (tests).
    pub fn load_from(
        config_file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Settings, SettingsError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = config_file {
            if !path.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        let value = |v: &str| -> figment::value::Value {
            match v.parse() {
                Ok(parsed) => parsed,
                Err(never) => match never {},
            }
        };
        for (k, v) in env {
            if let Some(rest) = k.strip_prefix("RUVECTOR__") {
                let key = rest.to_ascii_lowercase().replace("__", ".");
                fig = fig.merge(Serialized::default(&key, value(v)));
            }
        }
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for (name, key) in PLAIN_ENV {
            if let Some(v) = get(name) {
                fig = fig.merge(Serialized::default(key, value(&v)));
            }
        }
        if get("REDIS_URL").is_none() {
            if let Some(host) = get("REDIS_HOST") {
                let port = get("REDIS_PORT").unwrap_or_else(|| "6379".into());
                fig = fig.merge(Serialized::default(
                    "redis.url",
                    format!("redis://{host}:{port}"),
                ));
            }
        }
        let settings: Settings = fig.extract().map_err(|e| SettingsError(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.engine()
            .validate()
            .map_err(|e| SettingsError(e.to_string()))?;
        let s = &self.server;
        let fail = |key: &str, why: &str| Err(SettingsError(format!("{key}: {why}")));
        if s.max_body_bytes < 1024 {
            return fail("server.max_body_bytes", "must be at least 1024");
        }
        if s.request_timeout_ms == 0 {
            return fail("server.request_timeout_ms", "must be at least 1");
        }
        if s.max_connections == 0 {
            return fail("server.max_connections", "must be at least 1");
        }
        tier::validate(&s.region, &s.instance_id, &self.redis, &self.regions)
            .map_err(SettingsError)?;
        let st = &self.stream;
        for (key, v) in [
            ("stream.max_streams", st.max_streams as u64),
            ("stream.heartbeat_interval_ms", st.heartbeat_interval_ms),
            ("stream.idle_timeout_ms", st.idle_timeout_ms),
            (
                "stream.max_outbound_messages",
                st.max_outbound_messages as u64,
            ),
            ("stream.write_timeout_ms", st.write_timeout_ms),
            ("stream.max_inflight", st.max_inflight as u64),
        ] {
            if v == 0 {
                return fail(key, "must be at least 1");
            }
        }
        if st.max_outbound_bytes < 65536 {
            return fail("stream.max_outbound_bytes", "must be at least 65536");
        }
        Auth::new(&self.auth).map_err(SettingsError)?;
        self.coordination
            .validate()
            .map_err(|e| SettingsError(e.to_string()))?;
        let sh = &self.shed;
        if !(0.0 < sh.throttle_at
            && sh.throttle_at <= sh.close_idle_at
            && sh.close_idle_at <= sh.reject_at)
        {
            return fail("shed", "need 0 < throttle_at <= close_idle_at <= reject_at");
        }
        if !(0.0..=1.0).contains(&sh.shed_fraction) || !(0.0..1.0).contains(&sh.hysteresis) {
            return fail(
                "shed",
                "shed_fraction must be in 0..=1 and hysteresis in 0..1",
            );
        }
        if sh.interval_ms == 0 {
            return fail("shed.interval_ms", "must be at least 1");
        }
        if self.rate_limit.regional_lease == 0 || self.rate_limit.regional_lease_ms == 0 {
            return fail(
                "rate_limit.regional_lease",
                "regional_lease and regional_lease_ms must be at least 1",
            );
        }
        if st.max_frame_bytes < 1024 {
            return fail("stream.max_frame_bytes", "must be at least 1024");
        }
        Ok(())
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            storage: self.storage.clone(),
            index: self.index.clone(),
            origin: WriteOrigin {
                region: self.server.region.clone(),
                instance: self.server.instance_id.clone(),
                publish: self.redis.enabled(),
                tombstone_retention_s: self.regions.tombstone_retention_s,
            },
        }
    }
}

/// Figment's errors, one line per problem, each with the key path.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("{}: ", e.path.join("."))
            };
            format!("{key}{}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_then_env_layers() {
        let s = Settings::load_from(None, &env(&[])).unwrap();
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.storage.data_dir.to_str(), Some("./data"));
        assert!(s.redis.url.is_empty());
        let s = Settings::load_from(
            None,
            &env(&[
                ("PORT", "9001"),
                ("HNSW_M", "24"),
                ("RUVECTOR__INDEX__MAX_K", "50"),
                ("RUVECTOR__STORAGE__FSYNC", "never"),
                ("REDIS_HOST", "cache"),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.port, 9001);
        assert_eq!(s.index.hnsw.m, 24);
        assert_eq!(s.index.max_k, 50);
        assert_eq!(s.redis.url, "redis://cache:6379");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = Settings::load_from(None, &env(&[("RUVECTOR__SERVER__PORT", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = Settings::load_from(None, &env(&[("RUVECTOR__INDEX__NOPE", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
        let err = Settings::load_from(None, &env(&[("HNSW_M", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("index.hnsw"), "{err}");
        let err = Settings::load_from(
            None,
            &env(&[
                ("REDIS_URL", "redis://127.0.0.1:6390"),
                ("RUVECTOR__REGIONS__CATCH_UP_WAIT_S", "18446744073709551615"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("regions.catch_up_wait_s"), "{err}");
    }
}
