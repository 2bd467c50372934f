//! The coordinators of all tenants: one `Coordinator` per tenant (its state in
//! `<data_dir>/coordination/<tenant>/`, `_` without a tenant), started on first use on one
//! dedicated arbiter thread, so their disk writes never stall the engine's or the HTTP threads.
//! A tenant's state is loaded exactly once, off the async threads. A tenant's memory embeddings
//! go to its collection `coordination.memory_collection` (`<tenant>.<name>`, or `<name>`).

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;
use dashmap::DashMap;
use tokio::sync::OnceCell;

use super::actor::Coordinator;
use super::shared::SharedCoord;
use super::vectors::MemoryVectors;
use crate::config::CoordConfig;
use crate::error::{EngineError, Result};
use crate::router::Router;
use crate::storage::FsyncMode;

pub struct Coordinators {
    root: PathBuf,
    cfg: CoordConfig,
    fsync: FsyncMode,
    region: String,
    router: Addr<Router>,
    /// The region's shared coordination state (several instances of one region).
    shared: Option<Arc<dyn SharedCoord>>,
    arbiter: ArbiterHandle,
    actors: DashMap<String, Arc<OnceCell<Addr<Coordinator>>>>,
}

impl Coordinators {
    /// Must run inside an actix system (it starts the coordination arbiter).
    pub fn new(
        data_dir: PathBuf,
        cfg: CoordConfig,
        fsync: FsyncMode,
        region: String,
        router: Addr<Router>,
        shared: Option<Arc<dyn SharedCoord>>,
    ) -> Self {
        Coordinators {
            root: data_dir.join("coordination"),
            cfg,
            fsync,
            region,
            router,
            shared,
            arbiter: Arbiter::new().handle(),
            actors: DashMap::new(),
        }
    }

    /// The coordinator of `tenant` (`None`: callers without a tenant).
    pub async fn get(&self, tenant: Option<&str>) -> Result<Addr<Coordinator>> {
        self.named(tenant.unwrap_or("_")).await
    }

    /// The coordinators running now (to tell them the shared state may have gaps).
    pub fn running(&self) -> Vec<Addr<Coordinator>> {
        self.actors
            .iter()
            .filter_map(|e| e.value().get().filter(|a| a.connected()).cloned())
            .collect()
    }

    /// The coordinator of a tenant by its stored name (`_`: without a tenant).
    pub async fn named(&self, name: &str) -> Result<Addr<Coordinator>> {
        let tenant = (name != "_").then_some(name);
        let name = name.to_owned();
        let cell = {
            let mut slot = self.actors.entry(name.clone()).or_default();
            // A coordinator that stopped (its log failed a sync) is loaded again from its log.
            if slot.get().is_some_and(|a| !a.connected()) {
                *slot = Arc::default();
            }
            slot.clone()
        };
        let addr = cell
            .get_or_try_init(|| async {
                let dir = self.root.join(&name);
                let (cfg, fsync, region) = (self.cfg.clone(), self.fsync, self.region.clone());
                let (shared, tenant_name) = (self.shared.clone(), name.clone());
                let collection = match tenant {
                    Some(t) => format!("{t}.{}", cfg.memory_collection),
                    None => cfg.memory_collection.clone(),
                };
                let vectors = MemoryVectors::new(self.router.clone(), collection);
                let opened = tokio::task::spawn_blocking(move || {
                    Coordinator::open(dir, cfg, fsync, region, tenant_name, vectors, shared)
                })
                .await
                .map_err(|e| EngineError::Internal(format!("loading coordination state: {e}")))??;
                metrics::counter!("ruvector_coordinators_started_total").increment(1);
                Ok::<_, EngineError>(Coordinator::start_in_arbiter(&self.arbiter, move |_| {
                    opened
                }))
            })
            .await?;
        Ok(addr.clone())
    }
}
