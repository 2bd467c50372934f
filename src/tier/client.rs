//! `RedisTier`: the region's Redis connection for ordinary commands and its health.
//!
//! Ordinary commands share one multiplexed `ConnectionManager` (it reconnects by itself), each
//! under `redis.command_timeout_ms`. A blocking stream read (`XREAD BLOCK`) must not share it:
//! it would hold the pipeline for the block time, and since redis-rs 1.0 every async connection
//! answers a timeout after 500 ms by default, which silently breaks any `BLOCK` longer than that
//! (redis-rs issues #1924, #2269). `blocking_connection` therefore opens a dedicated connection
//! whose response timeout is the block time plus the command timeout.
//!
//! Each thread that calls gets a connection of its own (a thread-local `ConnectionManager`,
//! created on first use on that thread's runtime): a manager's driver task runs where it was
//! created, and one shared manager made every command from an HTTP worker two cross-thread
//! wake-ups (measured: a cache miss cost ≈ 100 µs of server CPU). Connections: one per HTTP
//! worker and one for the main arbiter.
//!
//! Health: a task PINGs every `redis.health_interval_ms`; `ruvector_redis_up` follows and a
//! change is logged once. While down, `cmd` answers `Down` without touching the network, so a
//! dead Redis costs a request nothing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, FromRedisValue};

use crate::settings::RedisSettings;

/// Why a Redis call did not answer; callers degrade (serve locally, keep an outbox) on any.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The health check last failed: not tried.
    #[error("redis is down")]
    Down,
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

thread_local! {
    /// This thread's connection to each tier (by `RedisTier::id`).
    static MANAGERS: RefCell<HashMap<u64, ConnectionManager>> = RefCell::new(HashMap::new());
}

static NEXT_TIER_ID: AtomicU64 = AtomicU64::new(1);

pub struct RedisTier {
    id: u64,
    client: Client,
    config: ConnectionManagerConfig,
    /// For threads without a Tokio runtime of their own to drive one (never in practice).
    manager: ConnectionManager,
    up: AtomicBool,
    command_timeout: Duration,
    connect_timeout: Duration,
}

impl RedisTier {
    /// The tier for `settings.url`, or `None` when no Redis is configured. Does not connect:
    /// the first command or health check does, so a Redis that is down at start delays
    /// nothing. Must run inside a Tokio runtime (the health task is spawned on it).
    pub fn start(settings: &RedisSettings) -> Result<Option<Arc<RedisTier>>, TierError> {
        if settings.url.is_empty() {
            return Ok(None);
        }
        let client = Client::open(settings.url.as_str())?;
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(command_timeout))
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(settings.health_interval_ms));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let tier = Arc::new(RedisTier {
            id: NEXT_TIER_ID.fetch_add(1, Ordering::Relaxed),
            client,
            config,
            manager,
            up: AtomicBool::new(false),
            command_timeout,
            connect_timeout,
        });
        metrics::gauge!("ruvector_redis_up").set(0.0);
        let interval = Duration::from_millis(settings.health_interval_ms);
        let weak = Arc::downgrade(&tier);
        tokio::spawn(async move {
            let mut first = true;
            while let Some(tier) = weak.upgrade() {
                let ok = tier.ping().await;
                tier.mark(ok, first);
                first = false;
                drop(tier);
                tokio::time::sleep(interval).await;
            }
        });
        Ok(Some(tier))
    }

    /// This thread's connection (see the module doc).
    fn manager(&self) -> ConnectionManager {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.manager.clone();
        }
        MANAGERS.with(|m| {
            let mut m = m.borrow_mut();
            if let Some(c) = m.get(&self.id) {
                return c.clone();
            }
            match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
            {
                Ok(c) => {
                    m.insert(self.id, c.clone());
                    c
                }
                Err(_) => self.manager.clone(),
            }
        })
    }

    /// Whether the last health check (or command) reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn mark(&self, ok: bool, first: bool) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was != ok || first {
            metrics::gauge!("ruvector_redis_up").set(if ok { 1.0 } else { 0.0 });
            if ok {
                tracing::info!("redis is up");
            } else {
                tracing::warn!("redis is down: features that need it degrade until it returns");
            }
        }
    }

    async fn ping(&self) -> bool {
        let mut conn = self.manager();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(
            tokio::time::timeout(self.command_timeout, ping).await,
            Ok(Ok(_))
        )
    }

    /// Runs one command under the command timeout; `Down` at once while Redis is down. A
    /// connection error marks the tier down (the health task brings it back).
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, TierError> {
        self.cmd_within(cmd, self.command_timeout).await
    }

    /// `cmd` with a shorter deadline of its own (a cache lookup is worth only so much waiting).
    pub async fn cmd_within<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, TierError> {
        self.run_within(deadline, |mut conn| async move {
            cmd.query_async::<T>(&mut conn).await
        })
        .await
    }

    /// Runs `f` on the shared connection (e.g. a script invocation) under the command timeout,
    /// with the same down/timeout handling as `cmd`.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, TierError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.run_within(self.command_timeout, f).await
    }

    /// `Down` at once while Redis is down. Passing the command timeout, or a connection error,
    /// marks the tier down: a Redis that hangs costs each request at most one deadline until the
    /// health check sees it back.
    async fn run_within<T, F, Fut>(&self, deadline: Duration, f: F) -> Result<T, TierError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(TierError::Down);
        }
        let deadline = deadline.min(self.command_timeout);
        match tokio::time::timeout(deadline, f(self.manager())).await {
            Err(_) => {
                if deadline >= self.command_timeout {
                    self.mark(false, false);
                }
                Err(TierError::Timeout(deadline.as_millis() as u64))
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.mark(false, false);
                }
                Err(e.into())
            }
        }
    }

    /// A dedicated connection for blocking reads of up to `block`: its response timeout is the
    /// block time plus the command timeout (see the module doc).
    pub async fn blocking_connection(
        &self,
        block: Duration,
    ) -> Result<MultiplexedConnection, TierError> {
        dedicated_connection(
            &self.client,
            block + self.command_timeout,
            self.connect_timeout,
        )
        .await
    }
}

/// A dedicated connection to any Redis (this region's or a peer's) with the given response
/// timeout, connecting within `connect_timeout`.
pub async fn dedicated_connection(
    client: &Client,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<MultiplexedConnection, TierError> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout));
    let ms = connect_timeout.as_millis() as u64;
    match tokio::time::timeout(
        connect_timeout + Duration::from_millis(100),
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    {
        Err(_) => Err(TierError::Timeout(ms)),
        Ok(r) => Ok(r?),
    }
}
