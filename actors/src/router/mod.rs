//! `Router`: the actor that owns the catalogue of collections. It creates, loads and drops
//! collections (each a set of `ShardActor`s) and routes writes and searches to them.
//!
//! Collection definitions live in `<data_dir>/collections/<name>/collection.json`, written to a
//! temporary name and renamed, so a crash never leaves half a definition.

mod catalogue;
pub mod collection;
mod disk;
pub mod repair;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix::prelude::*;
use futures_util::future::join_all;

use crate::pool::SearchPool;
pub use catalogue::Catalogue;
use collection::ShardHandle;
pub use collection::{Collection, CollectionInfo, Ranked, SearchRequest};
use disk::{collections_dir, move_to_trash, open_collection, rand_u64, SPEC_FILE};

use crate::config::{EngineConfig, IndexConfig};
use crate::error::{EngineError, Overload, Result};
use crate::hub::Hub;
use crate::shard::{OpenedShard, StopShard, WriteOp};
use crate::types::{
    validate_stored_collection_name, CollectionSpec, HnswParams, Metric, Quantization,
};

/// Options of a new collection; `None` takes the configured default.
#[derive(Debug, Clone, Default)]
pub struct CollectionOptions {
    pub dimension: usize,
    pub metric: Option<Metric>,
    pub shards: Option<usize>,
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef_search: Option<usize>,
    pub quantization: Option<Quantization>,
}

/// Create a collection. Answers its info and whether it was created (false: an identical one
/// existed).
#[derive(Message)]
#[rtype(result = "Result<(CollectionInfo, bool)>")]
pub struct CreateCollection {
    pub name: String,
    pub options: CollectionOptions,
}

#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct DropCollection(pub String);

#[derive(Message)]
#[rtype(result = "Result<Vec<CollectionInfo>>")]
pub struct ListCollections;

/// The routing table of one collection (for reads that need no shard round trip).
#[derive(Message)]
#[rtype(result = "Result<Arc<Collection>>")]
pub struct Lookup(pub String);

/// Writes to a collection. With `create_dimension`, a missing collection is created with the
/// configured defaults and that dimension (the design's short insert path).
#[derive(Message)]
#[rtype(result = "Result<Vec<bool>>")]
pub struct RouteWrite {
    pub collection: String,
    pub ops: Vec<WriteOp>,
    pub create_dimension: Option<usize>,
}

/// Load every collection on disk (once, at start).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct LoadAll;

/// Stop every shard (each writes a final snapshot if it changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

pub struct Router {
    cfg: Arc<EngineConfig>,
    limits: Arc<IndexConfig>,
    pool: Arc<SearchPool>,
    engine: ArbiterHandle,
    hub: Arc<Hub>,
    collections: HashMap<String, Arc<Collection>>,
    /// The installed collections, readable without a message (see `catalogue.rs`).
    catalogue: Catalogue,
    /// Collections held back at start because of damage (name -> what was found): requests to
    /// them answer `unavailable` until `ruvector-streaming repair` or a delete.
    held: HashMap<String, String>,
    deleting: HashSet<String>,
    /// Names being created (reserved until installed), with the requests waiting for them:
    /// a client's pipelined frames (insert creating a collection, then a search) keep their
    /// order although creation runs off this actor's thread.
    creating: HashMap<String, Vec<Waiter>>,
    loaded: bool,
}

impl Router {
    /// The search pool (its fullness is a load signal).
    pub fn pool(&self) -> Arc<SearchPool> {
        self.pool.clone()
    }

    /// The shared read-only view of the installed collections.
    pub fn catalogue(&self) -> Catalogue {
        self.catalogue.clone()
    }

    pub fn new(cfg: EngineConfig, engine: ArbiterHandle, hub: Arc<Hub>) -> std::io::Result<Router> {
        let pool = Arc::new(SearchPool::new(
            cfg.index.search_threads(),
            cfg.index.search_queue,
        )?);
        std::fs::create_dir_all(collections_dir(&cfg))?;
        Ok(Router {
            limits: Arc::new(cfg.index.clone()),
            cfg: Arc::new(cfg),
            pool,
            engine,
            hub,
            collections: HashMap::new(),
            catalogue: Catalogue::default(),
            held: HashMap::new(),
            deleting: HashSet::new(),
            creating: HashMap::new(),
            loaded: false,
        })
    }

    fn ready(&self) -> Result<()> {
        if self.loaded {
            Ok(())
        } else {
            Err(EngineError::Overloaded(Overload::Loading))
        }
    }

    fn lookup(&self, name: &str) -> Result<Arc<Collection>> {
        self.ready()?;
        if let Some(reason) = self.held.get(name) {
            return Err(held_error(name, reason));
        }
        self.collections
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("collection {name:?}")))
    }

    fn install(
        &mut self,
        spec: CollectionSpec,
        dir: PathBuf,
        opened: Vec<OpenedShard>,
    ) -> Arc<Collection> {
        let shards = opened
            .into_iter()
            .map(|o| ShardHandle {
                state: o.state.clone(),
                addr: o.start(&self.engine),
            })
            .collect();
        let c = Arc::new(Collection {
            spec,
            dir,
            generation: rand_u64(),
            shards,
            limits: self.limits.clone(),
        });
        self.collections.insert(c.spec.name.clone(), c.clone());
        self.catalogue.insert(c.clone());
        metrics::gauge!("ruvector_collections").set(self.collections.len() as f64);
        c
    }

    fn resolve_spec(&self, name: &str, o: &CollectionOptions) -> Result<CollectionSpec> {
        validate_stored_collection_name(name)?;
        let d = &self.cfg.index;
        if o.dimension == 0 || o.dimension > d.max_dimension {
            return Err(EngineError::invalid(format!(
                "dimension must be between 1 and {}",
                d.max_dimension
            )));
        }
        let shards = d.shards_or_default(o.shards);
        if shards == 0 || shards > d.max_shards {
            return Err(EngineError::invalid(format!(
                "shards must be between 1 and {}",
                d.max_shards
            )));
        }
        let hnsw = HnswParams {
            m: o.m.unwrap_or(d.hnsw.m),
            ef_construction: o.ef_construction.unwrap_or(d.hnsw.ef_construction),
            ef_search: o.ef_search.unwrap_or(d.hnsw.ef_search),
            quantization: o.quantization.unwrap_or(d.hnsw.quantization),
        };
        hnsw.validate()?;
        Ok(CollectionSpec {
            name: name.to_owned(),
            dimension: o.dimension,
            metric: o.metric.unwrap_or(d.default_metric),
            shards,
            hnsw,
        })
    }

    /// Creates a collection (or finds the identical one). The checks run here; the disk work
    /// and the opening of its shards run on a blocking thread, so the router keeps answering
    /// lookups meanwhile; the name is reserved until it is installed.
    fn create(
        &mut self,
        name: &str,
        options: &CollectionOptions,
    ) -> ResponseActFuture<Self, Result<(Arc<Collection>, bool)>> {
        let spec = match self.plan_create(name, options) {
            Ok(Planned::Exists(c)) => return Box::pin(fut::ready(Ok((c, false)))),
            Ok(Planned::New(spec)) => spec,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        self.creating.insert(name.to_owned(), Vec::new());
        let (cfg, pool, hub) = (self.cfg.clone(), self.pool.clone(), self.hub.clone());
        let root = collections_dir(&self.cfg);
        let job_spec = spec.clone();
        let work =
            tokio::task::spawn_blocking(move || disk::build(&cfg, &root, &job_spec, &pool, &hub));
        let name = name.to_owned();
        Box::pin(
            async move {
                work.await
                    .map_err(|e| EngineError::Internal(e.to_string()))?
            }
            .into_actor(self)
            .map(move |res, act, _| {
                let waiters = act.creating.remove(&name).unwrap_or_default();
                let (dir, opened) = match res {
                    Ok(r) => r,
                    Err(e) => {
                        for w in waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                        return Err(e);
                    }
                };
                tracing::info!(
                    collection = %name,
                    dimension = spec.dimension,
                    metric = spec.metric.as_str(),
                    shards = spec.shards,
                    "collection created"
                );
                let c = act.install(spec, dir, opened);
                for w in waiters {
                    let _ = w.send(Ok(c.clone()));
                }
                Ok((c, true))
            }),
        )
    }

    fn plan_create(&self, name: &str, options: &CollectionOptions) -> Result<Planned> {
        self.ready()?;
        if let Some(reason) = self.held.get(name) {
            return Err(held_error(name, reason));
        }
        let spec = self.resolve_spec(name, options)?;
        if let Some(existing) = self.collections.get(name) {
            return if existing.spec == spec {
                Ok(Planned::Exists(existing.clone()))
            } else {
                Err(EngineError::AlreadyExists(format!(
                    "collection {name:?} exists with a different definition"
                )))
            };
        }
        if self.deleting.contains(name) {
            return Err(EngineError::Overloaded(Overload::Deleting(name.to_owned())));
        }
        if self.creating.contains_key(name) {
            return Err(EngineError::Overloaded(Overload::Creating(name.to_owned())));
        }
        let d = &self.cfg.index;
        let count = self.collections.len() + self.held.len() + self.creating.len();
        if count >= d.max_collections {
            return Err(EngineError::invalid(format!(
                "at most {} collections (index.max_collections)",
                d.max_collections
            )));
        }
        let shards: usize = self.collections.values().map(|c| c.spec.shards).sum();
        if shards + spec.shards > d.max_total_shards {
            return Err(EngineError::invalid(format!(
                "{} shards are open and this collection needs {}: at most {} in all \
                 (index.max_total_shards: each shard holds a log file and a writer thread)",
                shards, spec.shards, d.max_total_shards
            )));
        }
        Ok(Planned::New(spec))
    }
}

/// A request waiting for a collection being created.
type Waiter = tokio::sync::oneshot::Sender<Result<Arc<Collection>>>;

impl Router {
    /// For a name being created: a future of the collection once it is installed.
    fn wait_created(
        &mut self,
        name: &str,
    ) -> Option<impl std::future::Future<Output = Result<Arc<Collection>>> + 'static> {
        let waiters = self.creating.get_mut(name)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        waiters.push(tx);
        Some(async move {
            rx.await
                .map_err(|_| EngineError::Internal("collection creation was abandoned".into()))?
        })
    }
}

/// What a create request comes to.
enum Planned {
    Exists(Arc<Collection>),
    New(CollectionSpec),
}

fn held_error(name: &str, reason: &str) -> EngineError {
    EngineError::Unavailable(format!(
        "collection {name:?} is held back after damage found at start: {reason}"
    ))
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.cfg.index.shard_mailbox.max(1024));
    }
}

/// A collection opened at start, or the name and damage of one held back.
type LoadedCollection =
    std::result::Result<(CollectionSpec, PathBuf, Vec<OpenedShard>), (String, String)>;

impl Handler<LoadAll> for Router {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, _: LoadAll, _: &mut Self::Context) -> Self::Result {
        let cfg = self.cfg.clone();
        let pool = self.pool.clone();
        let hub = self.hub.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<Vec<LoadedCollection>> {
            let root = collections_dir(&cfg);
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&root)? {
                let dir = entry?.path();
                let name = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_owned();
                if name.starts_with('.') {
                    // Leftovers of an interrupted create or delete.
                    std::fs::remove_dir_all(&dir)?;
                    continue;
                }
                let spec: CollectionSpec = match std::fs::read(dir.join(SPEC_FILE))
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "unreadable collection definition: skipped");
                        continue;
                    }
                };
                tracing::info!(collection = %spec.name, shards = spec.shards, "loading collection");
                match open_collection(&cfg, &dir, &spec, &pool, &hub) {
                    Ok(opened) => out.push(Ok((spec, dir, opened))),
                    Err(e) => {
                        tracing::error!(collection = %spec.name, error = %e, "collection held back: it answers `unavailable` until repaired or deleted");
                        out.push(Err((spec.name, e.to_string())));
                    }
                }
            }
            Ok(out)
        });
        Box::pin(
            async move {
                work.await
                    .map_err(|e| EngineError::Internal(e.to_string()))?
            }
            .into_actor(self)
            .map(|res, act, _| {
                for loaded in res? {
                    match loaded {
                        Ok((spec, dir, opened)) => {
                            act.install(spec, dir, opened);
                        }
                        Err((name, reason)) => {
                            act.held.insert(name, reason);
                        }
                    }
                }
                metrics::gauge!("ruvector_collections_held_back").set(act.held.len() as f64);
                act.loaded = true;
                Ok(())
            }),
        )
    }
}

impl Handler<CreateCollection> for Router {
    type Result = ResponseActFuture<Self, Result<(CollectionInfo, bool)>>;

    fn handle(&mut self, msg: CreateCollection, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.create(&msg.name, &msg.options)
                .map(|res, _, _| res.map(|(c, created)| (c.info(), created))),
        )
    }
}

impl Handler<DropCollection> for Router {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, msg: DropCollection, _: &mut Self::Context) -> Self::Result {
        let name = msg.0;
        let hub = self.hub.clone();
        if self.held.contains_key(&name) {
            // A held-back collection can be deleted (its damaged files go with it).
            let root = collections_dir(&self.cfg);
            let dir = root.join(&name);
            let result = move_to_trash(&root, &dir).map_err(EngineError::from);
            if result.is_ok() {
                self.held.remove(&name);
                metrics::gauge!("ruvector_collections_held_back").set(self.held.len() as f64);
                tracing::info!(collection = %name, "held-back collection deleted");
            }
            return Box::pin(actix::fut::ready(result));
        }
        let removed = self.lookup(&name).inspect(|_| {
            self.collections.remove(&name);
            self.catalogue.remove(&name);
            hub.forget(&name);
            self.deleting.insert(name.clone());
            metrics::gauge!("ruvector_collections").set(self.collections.len() as f64);
        });
        Box::pin(
            async move {
                let c = removed?;
                join_all(c.shards.iter().map(|s| {
                    s.state.discard();
                    s.addr.send(StopShard)
                }))
                .await;
                let dir = c.dir.clone();
                tokio::task::spawn_blocking(move || {
                    let root = dir.parent().map(Path::to_path_buf).unwrap_or_default();
                    move_to_trash(&root, &dir)
                })
                .await
                .map_err(|e| EngineError::Internal(e.to_string()))??;
                Ok(())
            }
            .into_actor(self)
            .map(move |res: Result<()>, act, _| {
                act.deleting.remove(&name);
                if res.is_ok() {
                    tracing::info!(collection = %name, "collection deleted");
                }
                res
            }),
        )
    }
}

impl Handler<ListCollections> for Router {
    type Result = Result<Vec<CollectionInfo>>;

    fn handle(&mut self, _: ListCollections, _: &mut Self::Context) -> Self::Result {
        self.ready()?;
        let mut list: Vec<CollectionInfo> = self.collections.values().map(|c| c.info()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }
}

impl Handler<Lookup> for Router {
    type Result = ResponseFuture<Result<Arc<Collection>>>;

    fn handle(&mut self, msg: Lookup, _: &mut Self::Context) -> Self::Result {
        match self.wait_created(&msg.0) {
            Some(created) => Box::pin(created),
            None => Box::pin(std::future::ready(self.lookup(&msg.0))),
        }
    }
}

impl Handler<RouteWrite> for Router {
    type Result = ResponseActFuture<Self, Result<Vec<bool>>>;

    fn handle(&mut self, msg: RouteWrite, _: &mut Self::Context) -> Self::Result {
        if let Some(created) = self.wait_created(&msg.collection) {
            return Box::pin(async move { created.await?.write(msg.ops).await }.into_actor(self));
        }
        let target = match (self.lookup(&msg.collection), msg.create_dimension) {
            (Err(EngineError::NotFound(_)), Some(dimension)) => self.create(
                &msg.collection,
                &CollectionOptions {
                    dimension,
                    ..Default::default()
                },
            ),
            (other, _) => Box::pin(fut::ready(other.map(|c| (c, false)))),
        };
        Box::pin(
            target.then(move |res, act, _| {
                async move { res?.0.write(msg.ops).await }.into_actor(act)
            }),
        )
    }
}

impl Handler<StopAll> for Router {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopAll, _: &mut Self::Context) -> Self::Result {
        self.loaded = false;
        self.catalogue.clear();
        let all: Vec<Arc<Collection>> = self.collections.drain().map(|(_, c)| c).collect();
        Box::pin(
            async move {
                join_all(
                    all.iter()
                        .flat_map(|c| c.shards.iter().map(|s| s.addr.send(StopShard))),
                )
                .await;
            }
            .into_actor(self),
        )
    }
}
