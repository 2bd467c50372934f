//! # ruvector-streaming
//!
//! The process edge of the server: settings, transports, the service layer under them, and
//! start and drain. The actors and the engine live in the `ruvector-actors` crate.
//!
//! # Layout
//! Layers depend downwards only (a test, `tests/layers.rs`, fails on any import circle):
//!
//! 1. Transports — `server` (one listener: peeks at each connection and hands it to one of):
//!    - `stream`: the lean connection layer — WebSocket sessions (`stream::session`) and a
//!      connection's first SSE request (`stream::sse`), with their framing, inbound buffer,
//!      outbound queue and upgrade handling;
//!    - `http`: actix-web — the route table with a gate per route, REST handlers, SSE for later
//!      requests on a kept-alive connection, probes and `/metrics`.
//! 2. `service`: transport-neutral operations (collections, points, search, subscriptions, agent
//!    coordination),
//!    the request and answer shapes every transport shares, the request deadline and the one
//!    gate (authentication, scope, admission).
//! 3. Shared state and policy — `state` (`AppState`), `registry` (open streams, their control
//!    messages), `supervise` (admission, rate limits, the shedder), `auth` (principals, scopes,
//!    tenants), `lifecycle` (loading, draining), `error` (`ApiError`, the contract's codes),
//!    `settings` (layered config; composes the engine's config types), `telemetry`, `tier`
//!    (this region's Redis: connections, timeouts, health; optional and never on the path of
//!    local serving), `regions` (replication: the change-log publisher and the region links, in
//!    the background; they write through the engine's router like a client).
//! 4. The engine (`ruvector_actors`): router, shards, hub, storage.
//!
//! A REST search: `server` → actix-web → `http::guard` (gate) → `http::search` →
//! `service::search` → the collection from the shared catalogue → shard after shard on this
//! thread (small unfiltered searches) or every `ShardActor` on the search pool → merged hits →
//! JSON. A WebSocket search: `server` → `stream::accept` (upgrade) →
//! `stream::session` → `service::search::search_ranked` → the same engine path → `result`
//! frames sent as the outbound queue drains.
//!
//! ## Start-up
//! `start` spawns an engine arbiter (a thread) that runs the `Router` and every `ShardActor`,
//! binds the listener, then loads the data directory in the background: `/health/startup`
//! answers 503 until it is done, and API calls answer `overloaded` meanwhile.

pub mod auth;
pub mod disk;
pub mod error;
pub mod http;
pub mod lifecycle;
pub mod metric_catalog;
pub mod regions;
pub mod registry;
pub mod server;
pub mod service;
pub mod settings;
pub mod state;
pub mod stream;
pub mod supervise;
pub mod telemetry;
pub mod tier;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_server::ServerHandle;
use actix_web::web;
use metrics_exporter_prometheus::PrometheusHandle;
use ruvector_actors::Hub;
use ruvector_actors::{LoadAll, Router, StopAll};

use auth::Auth;
use lifecycle::Lifecycle;
use registry::Streams;
use settings::Settings;
use state::AppState;
use supervise::{Supervisor, SupervisorActor};

/// A started server.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub lifecycle: Arc<Lifecycle>,
    pub streams: Arc<Streams>,
    router: Addr<Router>,
    server: ServerHandle,
    settings: Arc<Settings>,
    /// Publisher and region links (none without Redis).
    _replication: Option<Addr<regions::Replication>>,
}

/// Starts the engine and the HTTP server. Must run inside an actix `System`.
pub async fn start(
    settings: Settings,
    prometheus: Option<PrometheusHandle>,
) -> std::io::Result<Running> {
    let mut settings = settings;
    std::fs::create_dir_all(&settings.storage.data_dir)?;
    settings.server.instance_id =
        settings::resolve_instance_id(&settings.storage.data_dir, &settings.server.instance_id)?;
    service::event_id::set_instance(&settings.server.instance_id);
    let settings = Arc::new(settings);
    let engine = Arbiter::new().handle();
    let router_engine = engine.clone();
    let hub = Arc::new(Hub::new(
        settings.stream.replay_window,
        settings.stream.replay_window_bytes,
    ));
    let router = Router::new(settings.engine(), router_engine.clone(), hub.clone())?;
    let pool = router.pool();
    let catalogue = router.catalogue();
    let router = Router::start_in_arbiter(&engine, move |_| router);
    let lifecycle = Arc::new(Lifecycle::default());
    let streams = Streams::new(settings.stream.clone(), lifecycle.clone());
    streams.spawn_sweeper();
    disk::spawn_sampler(settings.storage.data_dir.clone());
    let auth = Arc::new(Auth::new(&settings.auth).map_err(std::io::Error::other)?);
    if !auth.enabled() {
        tracing::warn!("authentication is off: no auth.keys and no auth.jwt_secret configured");
    }
    let supervisor = Supervisor::new(settings.rate_limit.clone(), settings.shed.clone());
    SupervisorActor::new(
        supervisor.clone(),
        streams.clone(),
        pool,
        settings.stream.max_streams,
    )
    .start();

    let tier = tier::RedisTier::start(&settings.redis).map_err(std::io::Error::other)?;
    let cache = tier
        .as_ref()
        .filter(|_| settings.redis.cache_searches)
        .map(|t| {
            tier::SearchCache::new(
                t.clone(),
                &settings.server.region,
                settings.redis.cache_ttl_s,
                settings.redis.cache_max_answer_bytes,
                std::time::Duration::from_millis(settings.redis.cache_lookup_timeout_ms),
                settings.redis.cache_max_pending,
            )
        });
    if let (Some(t), true) = (&tier, settings.rate_limit.regional) {
        supervisor.set_regional(tier::RegionalLimits::new(
            t.clone(),
            &settings.server.region,
            settings.rate_limit.regional_lease,
            std::time::Duration::from_millis(settings.rate_limit.regional_lease_ms),
            settings.rate_limit.max_keys,
        ));
    }
    let drops = regions::drops(&settings)?;
    let replication = regions::start(
        &settings,
        catalogue.clone(),
        router.clone(),
        drops.clone(),
        &lifecycle,
    )?;
    let coordinators = start_coordination(&settings, tier.as_ref(), router.clone())?;
    let state = web::Data::new(AppState {
        router: router.clone(),
        catalogue,
        settings: settings.clone(),
        lifecycle: lifecycle.clone(),
        prometheus,
        hub,
        streams: streams.clone(),
        auth,
        supervisor,
        coordinators: coordinators.clone(),
        drops,
        tier,
        cache,
    });
    let s = &settings.server;
    let workers = if s.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        s.workers
    };
    let (handle, addrs) = server::serve(state, workers)?;

    let loader = router.clone();
    let loaded = lifecycle.clone();
    actix_web::rt::spawn(async move {
        match loader.send(LoadAll).await {
            Ok(Ok(())) => {
                loaded.set_loaded();
                tracing::info!("data loaded: ready");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "loading the data directory failed");
                std::process::exit(1);
            }
            Err(e) => {
                tracing::error!(error = %e, "router unavailable while loading");
                std::process::exit(1);
            }
        }
    });
    Ok(Running {
        _replication: replication,
        addrs,
        lifecycle,
        streams,
        router,
        server: handle,
        settings,
    })
}

impl Running {
    /// Graceful drain: readiness turns 503, new streams are refused, open streams finish their
    /// in-flight replies and close (WebSocket 1001), the HTTP server finishes in-flight requests
    /// and stops, then every shard writes a final snapshot; all within
    /// `server.drain_timeout_ms`.
    pub async fn drain(self) {
        self.lifecycle.start_draining();
        let budget = Duration::from_millis(self.settings.server.drain_timeout_ms);
        let started = std::time::Instant::now();
        // Streams get half the budget; requests and snapshots the rest.
        self.streams.drain(started + budget / 2).await;
        if tokio::time::timeout(budget, self.server.stop(true))
            .await
            .is_err()
        {
            tracing::warn!("HTTP drain timed out");
        }
        let left = budget.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, self.router.send(StopAll))
            .await
            .is_err()
        {
            tracing::warn!(
                "shard shutdown timed out; the write log covers what was not snapshotted"
            );
        }
        tracing::info!(ms = started.elapsed().as_millis() as u64, "drained");
    }
}

/// The tenants' coordinators; with the region's Redis, sharing their state with the region's
/// other instances (and reading the region's coordination stream).
fn start_coordination(
    settings: &Settings,
    tier: Option<&Arc<tier::RedisTier>>,
    router: actix::Addr<ruvector_actors::Router>,
) -> std::io::Result<Arc<ruvector_actors::Coordinators>> {
    let (region, instance) = (&settings.server.region, &settings.server.instance_id);
    let shared = tier.map(|t| {
        let shared: Arc<dyn ruvector_actors::SharedCoord> = Arc::new(tier::RedisCoord::new(
            t.clone(),
            region,
            instance,
            settings.regions.stream_maxlen,
            settings.coordination.topic_history,
        ));
        shared
    });
    let coordinators = Arc::new(ruvector_actors::Coordinators::new(
        settings.storage.data_dir.clone(),
        settings.coordination.clone(),
        settings.storage.fsync,
        region.clone(),
        router,
        shared,
    ));
    if tier.is_some() {
        let redis = &settings.redis;
        let tail = tier::CoordTail {
            client: redis::Client::open(redis.url.as_str()).map_err(std::io::Error::other)?,
            region: region.clone(),
            instance: instance.clone(),
            coordinators: coordinators.clone(),
            block: std::time::Duration::from_millis(settings.regions.block_ms),
            count: settings.regions.batch as usize,
            command_timeout: std::time::Duration::from_millis(redis.command_timeout_ms),
            connect_timeout: std::time::Duration::from_millis(redis.connect_timeout_ms),
        };
        actix_web::rt::spawn(tail.run());
    }
    Ok(coordinators)
}
