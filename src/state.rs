//! `AppState`: what every transport and the service layer reach — the engine's router and hub,
//! settings, the server's lifecycle, the stream registry, authentication, the supervisor and the
//! tenants' coordinators.
//! It sits below the transports so that none of them owns what the others need.

use std::sync::Arc;

use actix::Addr;
use metrics_exporter_prometheus::PrometheusHandle;
use ruvector_actors::Hub;
use ruvector_actors::{Catalogue, Coordinators, Router};

use crate::auth::Auth;
use crate::lifecycle::Lifecycle;
use crate::registry::Streams;
use crate::settings::Settings;
use crate::supervise::Supervisor;

pub struct AppState {
    pub router: Addr<Router>,
    /// The router's installed collections, looked up without a message.
    pub catalogue: Catalogue,
    pub settings: Arc<Settings>,
    pub lifecycle: Arc<Lifecycle>,
    pub prometheus: Option<PrometheusHandle>,
    pub hub: Arc<Hub>,
    pub streams: Arc<Streams>,
    pub auth: Arc<Auth>,
    pub supervisor: Arc<Supervisor>,
    pub coordinators: Arc<Coordinators>,
    /// Collection deletes to replicate (Redis configured; `regions::drops`).
    pub drops: Option<Arc<crate::regions::Drops>>,
    /// This region's Redis, when configured (`tier`).
    pub tier: Option<Arc<crate::tier::RedisTier>>,
    /// The regional search cache (with `tier` and `redis.cache_searches`).
    pub cache: Option<crate::tier::SearchCache>,
}
