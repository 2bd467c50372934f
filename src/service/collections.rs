//! Collection admin: create, list, get and delete, with the caller's tenant applied both ways
//! (a tenant names `docs`, the engine stores `acme.docs`, answers say `docs` again, and other
//! tenants' collections are invisible).

use ruvector_actors::{
    CollectionInfo, CollectionOptions, CreateCollection, DropCollection, EngineError,
    ListCollections,
};
use ruvector_actors::{Metric, Quantization};
use serde::Deserialize;

use super::call::{ask, lookup};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// The body of a collection create.
#[derive(Deserialize)]
pub struct CreateBody {
    pub dimension: usize,
    pub metric: Option<String>,
    pub shards: Option<usize>,
    pub hnsw: Option<HnswBody>,
}

#[derive(Deserialize, Default)]
pub struct HnswBody {
    pub m: Option<usize>,
    pub ef_construction: Option<usize>,
    pub ef_search: Option<usize>,
    pub quantization: Option<String>,
}

/// A collection's info with the name as the caller knows it.
fn shown(caller: &Principal, mut info: CollectionInfo) -> CollectionInfo {
    if let Some(name) = caller.external(&info.name) {
        info.name = name.to_owned();
    }
    info
}

/// Creates a collection (or finds the same one); `true` when it was created now.
pub async fn create(
    app: &AppState,
    caller: &Principal,
    name: &str,
    body: CreateBody,
) -> Result<(CollectionInfo, bool), ApiError> {
    let hnsw = body.hnsw.unwrap_or_default();
    let options = CollectionOptions {
        dimension: body.dimension,
        metric: body.metric.as_deref().map(Metric::parse).transpose()?,
        shards: body.shards,
        m: hnsw.m,
        ef_construction: hnsw.ef_construction,
        ef_search: hnsw.ef_search,
        quantization: hnsw
            .quantization
            .as_deref()
            .map(Quantization::parse)
            .transpose()?,
    };
    let (info, created) = ask(
        app,
        CreateCollection {
            name: caller.internal(name)?,
            options,
        },
    )
    .await??;
    Ok((shown(caller, info), created))
}

/// The caller's collections.
pub async fn list(app: &AppState, caller: &Principal) -> Result<Vec<CollectionInfo>, ApiError> {
    Ok(ask(app, ListCollections)
        .await??
        .into_iter()
        .filter(|c| caller.external(&c.name).is_some())
        .map(|c| shown(caller, c))
        .collect())
}

pub async fn get(
    app: &AppState,
    caller: &Principal,
    name: &str,
) -> Result<CollectionInfo, ApiError> {
    let c = lookup(app, caller.internal(name)?).await?;
    Ok(shown(caller, c.info()))
}

/// Deletes a collection. With replication, the delete is made durable for the other regions
/// first (`regions::drops`) and taken back if the collection could not be dropped.
pub async fn delete(app: &AppState, caller: &Principal, name: &str) -> Result<(), ApiError> {
    let stored = caller.internal(name)?;
    let record = match &app.drops {
        Some(drops) => {
            let c = lookup(app, stored.clone()).await?;
            let record = drops
                .record_local(&stored, c.spec.dimension, c.spec.metric.as_str())
                .map_err(|e| EngineError::Internal(format!("recording the delete: {e}")))?;
            Some((drops, record))
        }
        None => None,
    };
    let dropped = ask(app, DropCollection(stored)).await?;
    if let (Err(_), Some((drops, record))) = (&dropped, &record) {
        if let Err(e) = drops.withdraw(record) {
            tracing::error!(error = %e, "taking back a collection delete that did not happen failed");
        }
    }
    dropped?;
    Ok(())
}
