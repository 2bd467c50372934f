//! Memory embeddings in the vector index: a tenant's embeddings live in one collection of its own
//! (`coordination.memory_collection`, e.g. `acme.coordination-memory`), cosine, one shard, created
//! by the first embedding stored (its dimension is the collection's). The tenant can search it
//! like any other collection; `memory_search` searches it with the namespace as a filter.
//!
//! A point is `namespace/key` with metadata `{namespace, key, rev}`. The coordinator's log stays
//! the truth: a hit counts only while the entry it names is live with the same `rev`, so a point
//! written for a store that then failed to commit, or left behind by a delete, is never an answer.

use std::sync::Arc;

use actix::Addr;
use serde_json::{json, Value};

use crate::error::{EngineError, Result};
use crate::index::filter::Filter;
use crate::router::{
    Collection, CollectionOptions, CreateCollection, Lookup, Router, SearchRequest,
};
use crate::shard::WriteOp;
use crate::types::{Metadata, Metric, MAX_ID_BYTES};

/// Where one tenant's memory embeddings are kept.
#[derive(Clone)]
pub struct MemoryVectors {
    router: Addr<Router>,
    /// The collection's stored name (with the tenant).
    collection: String,
}

/// One search hit: which entry, which revision of it, how close.
pub struct MemoryHit {
    pub namespace: String,
    pub key: String,
    pub rev: u64,
    pub score: f32,
}

/// The point id of an entry.
pub fn point_id(namespace: &str, key: &str) -> String {
    format!("{namespace}/{key}")
}

/// Whether an entry's id fits a point id (an entry with an embedding needs one).
pub fn check_point_id(namespace: &str, key: &str) -> Result<()> {
    if namespace.len() + 1 + key.len() > MAX_ID_BYTES {
        return Err(EngineError::invalid(format!(
            "namespace and key of an entry with an embedding may hold {} bytes together",
            MAX_ID_BYTES - 1
        )));
    }
    Ok(())
}

impl MemoryVectors {
    pub fn new(router: Addr<Router>, collection: String) -> Self {
        MemoryVectors { router, collection }
    }

    /// The collection, if it exists.
    async fn lookup(&self) -> Result<Option<Arc<Collection>>> {
        match self.router.send(Lookup(self.collection.clone())).await? {
            Ok(c) => Ok(Some(c)),
            Err(EngineError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The collection for embeddings of `dimension`, created when missing.
    async fn for_dimension(&self, dimension: usize) -> Result<Arc<Collection>> {
        let c = match self.lookup().await? {
            Some(c) => c,
            None => {
                let options = CollectionOptions {
                    dimension,
                    metric: Some(Metric::Cosine),
                    shards: Some(1),
                    ..Default::default()
                };
                let create = CreateCollection {
                    name: self.collection.clone(),
                    options,
                };
                match self.router.send(create).await? {
                    Ok(_) | Err(EngineError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
                self.lookup()
                    .await?
                    .ok_or_else(|| EngineError::Internal("the memory collection vanished".into()))?
            }
        };
        if c.spec.dimension != dimension || c.spec.metric != Metric::Cosine {
            return Err(EngineError::invalid(format!(
                "this tenant's memory embeddings have {} dimensions ({}): got {dimension}",
                c.spec.dimension,
                c.spec.metric.as_str()
            )));
        }
        Ok(c)
    }

    /// Writes an entry's embedding (durable when this returns).
    pub async fn put(&self, namespace: &str, key: &str, rev: u64, vector: Vec<f32>) -> Result<()> {
        let c = self.for_dimension(vector.len()).await?;
        let mut metadata = Metadata::new();
        metadata.insert("namespace".into(), Value::from(namespace));
        metadata.insert("key".into(), Value::from(key));
        metadata.insert("rev".into(), Value::from(rev));
        c.write(vec![WriteOp::Upsert {
            id: point_id(namespace, key),
            vector,
            metadata: Some(metadata),
        }])
        .await?;
        Ok(())
    }

    /// Removes entries' embeddings (best effort: a point left behind is never an answer).
    pub async fn remove(&self, ids: Vec<String>) -> Result<()> {
        let Some(c) = self.lookup().await? else {
            return Ok(());
        };
        for chunk in ids.chunks(c.limits().max_points_per_request.max(1)) {
            let ops = chunk
                .iter()
                .map(|id| WriteOp::Delete { id: id.clone() })
                .collect();
            c.clone().write(ops).await?;
        }
        Ok(())
    }

    /// The `k` points of `namespace` nearest `vector`, best first (none before the first
    /// embedding is stored).
    pub async fn search(
        &self,
        namespace: &str,
        vector: Vec<f32>,
        k: usize,
    ) -> Result<Vec<MemoryHit>> {
        let Some(c) = self.lookup().await? else {
            return Ok(Vec::new());
        };
        if c.spec.dimension != vector.len() {
            return Err(EngineError::invalid(format!(
                "this tenant's memory embeddings have {} dimensions: got {}",
                c.spec.dimension,
                vector.len()
            )));
        }
        let request = SearchRequest {
            vector,
            k: k.min(c.limits().max_k),
            ef_search: None,
            filter: Some(Filter::parse(&json!({ "namespace": namespace }))?),
            score_threshold: None,
            with_vector: false,
            with_metadata: true,
        };
        let hits = c.search(request).await?;
        Ok(hits
            .into_iter()
            .filter_map(|h| {
                let m = h.metadata?;
                Some(MemoryHit {
                    namespace: m.get("namespace")?.as_str()?.to_owned(),
                    key: m.get("key")?.as_str()?.to_owned(),
                    rev: m.get("rev")?.as_u64()?,
                    score: h.score,
                })
            })
            .collect())
    }
}
