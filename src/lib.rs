//! # ruvector-streaming
//!
//! The process edge of the server: settings, HTTP, start and drain. The actors and the engine
//! live in the `ruvector-actors` crate.
//!
//! ## Layout
//! - `settings`: layered config (embedded defaults, `--config` file, environment).
//! - `telemetry`: logs and the Prometheus recorder.
//! - `http`: routes, JSON error mapping (`error`), bounded body reading (`body`), REST handlers
//!   (`rest`), probes and `/metrics` (`health`).
//!
//! ## Start-up
//! `start` spawns an engine arbiter (a thread) that runs the `Router` and every `ShardActor`,
//! binds the HTTP server, then loads the data directory in the background: `/health/startup`
//! answers 503 until it is done, and API calls answer `overloaded` meanwhile.

pub mod http;
pub mod settings;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;
use ruvector_actors::router::{LoadAll, Router, StopAll};

use http::health::Health;
use http::AppState;
use settings::Settings;

/// A started server.
pub struct Running {
    pub addrs: Vec<SocketAddr>,
    pub health: Arc<Health>,
    router: Addr<Router>,
    server: ServerHandle,
    settings: Arc<Settings>,
}

/// Starts the engine and the HTTP server. Must run inside an actix `System`.
pub async fn start(
    settings: Settings,
    prometheus: Option<PrometheusHandle>,
) -> std::io::Result<Running> {
    let settings = Arc::new(settings);
    std::fs::create_dir_all(&settings.storage.data_dir)?;
    let engine = Arbiter::new().handle();
    let router_engine = engine.clone();
    let router = Router::new(settings.engine(), router_engine.clone())?;
    let router = Router::start_in_arbiter(&engine, move |_| router);
    let health = Arc::new(Health::default());

    let state = web::Data::new(AppState {
        router: router.clone(),
        settings: settings.clone(),
        health: health.clone(),
        prometheus,
    });
    let s = &settings.server;
    let workers = if s.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        s.workers
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(http::record)
            .configure(http::routes)
    })
    .workers(workers)
    .max_connections(s.max_connections)
    .keep_alive(Duration::from_millis(s.keep_alive_ms))
    .client_request_timeout(Duration::from_millis(s.client_request_timeout_ms))
    .shutdown_timeout(s.drain_timeout_ms.div_ceil(1000))
    .disable_signals()
    .bind((s.host.as_str(), s.port))?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let loader = router.clone();
    let loaded = health.clone();
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
        addrs,
        health,
        router,
        server: handle,
        settings,
    })
}

impl Running {
    /// Graceful drain: readiness turns 503, the HTTP server finishes in-flight requests and
    /// stops, then every shard writes a final snapshot; all within `server.drain_timeout_ms`.
    pub async fn drain(self) {
        self.health.set_draining();
        let budget = Duration::from_millis(self.settings.server.drain_timeout_ms);
        let started = std::time::Instant::now();
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
