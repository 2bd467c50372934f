//! Full resync from a peer over HTTP: every collection, every point with its version, paged
//! through the peer's scroll endpoint (`GET /api/v1/collections/{c}/points`) and applied as
//! replicated writes, so last-write-wins keeps whatever is newer here.
//!
//! Used when a link cannot trust its offset (the peer's stream lost or trimmed past it).
//! Deletes the peer made while this link was blind are not in a dump; they are carried only by
//! the stream (documented in docs/API.md).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use ruvector_actors::version::PointVersion;
use ruvector_actors::{
    CollectionOptions, CreateCollection, EngineError, Metadata, Metric, ReplicatedChange,
    RouteWrite, Router, WriteOp,
};
use serde::Deserialize;

const PAGE: usize = 256;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct CollectionRow {
    name: String,
    dimension: usize,
    metric: Metric,
}

#[derive(Deserialize)]
struct Listing {
    collections: Vec<CollectionRow>,
}

#[derive(Deserialize)]
struct PagePoint {
    id: String,
    vector: Vec<f32>,
    #[serde(default)]
    metadata: Option<Metadata>,
    version: serde_json::Value,
}

#[derive(Deserialize)]
struct Page {
    points: Vec<PagePoint>,
    next_cursor: Option<String>,
}

/// Copies every point of every collection of the peer at `base`; answers how many points.
pub async fn copy_all(base: &str, router: &Addr<Router>) -> Result<u64, String> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let base = base.trim_end_matches('/');
    let listing: Listing = http
        .get(format!("{base}/api/v1/collections"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let mut copied = 0u64;
    for c in listing.collections {
        ensure_collection(router, &c).await?;
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(cur) = &cursor {
                query.push(("cursor", cur.clone()));
            }
            let query = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
            let page: Page = http
                .get(format!(
                    "{base}/api/v1/collections/{}/points?{query}",
                    c.name
                ))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let ops: Vec<WriteOp> = page
                .points
                .into_iter()
                .filter_map(|p| {
                    // A point without a replication version (a peer that stamps nothing) cannot
                    // be ordered against ours: skipped.
                    let version = PointVersion::from_json(&p.version).ok()?;
                    Some(WriteOp::Replicated {
                        id: p.id,
                        change: ReplicatedChange::Upsert {
                            vector: p.vector,
                            metadata: p.metadata,
                        },
                        version: Arc::new(version),
                    })
                })
                .collect();
            copied += ops.len() as u64;
            write(router, &c.name, ops).await?;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(copied)
}

async fn ensure_collection(router: &Addr<Router>, c: &CollectionRow) -> Result<(), String> {
    let created = router
        .send(CreateCollection {
            name: c.name.clone(),
            options: CollectionOptions {
                dimension: c.dimension,
                metric: Some(c.metric),
                ..Default::default()
            },
        })
        .await
        .map_err(|e| e.to_string())?;
    match created {
        Ok(_) | Err(EngineError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(format!("collection {:?}: {e}", c.name)),
    }
}

async fn write(router: &Addr<Router>, collection: &str, ops: Vec<WriteOp>) -> Result<(), String> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut delay = Duration::from_millis(20);
    for _ in 0..40 {
        let sent = router
            .send(RouteWrite {
                collection: collection.to_owned(),
                ops: ops.clone(),
                create_dimension: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        match sent {
            Ok(_) => return Ok(()),
            Err(EngineError::Overloaded(_)) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(format!("collection {collection:?}: {e}")),
        }
    }
    Err(format!("collection {collection:?} stayed overloaded"))
}
