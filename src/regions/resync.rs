//! Full resync from a peer over HTTP: every collection, every point with its version, paged
//! through the peer's scroll endpoint (`GET /api/v1/collections/{c}/points`) and applied as
//! replicated writes, so last-write-wins keeps whatever is newer here.
//!
//! Used when a link cannot trust its offset (the peer's stream lost or trimmed past it).
//! Deletes the peer made while this link was blind are not points: its delete tombstones are
//! paged too (`?deleted=true`) and applied as replicated deletes, which win only where they
//! are newer (tombstones older than `regions.tombstone_retention_s` are gone at the peer).

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use ruvector_actors::version::PointVersion;
use ruvector_actors::{Metadata, Metric, ReplicatedChange, Router, WriteOp};
use serde::Deserialize;

use super::apply::Target;
use super::drops::Drops;

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
pub async fn copy_all(
    base: &str,
    peer: &str,
    router: &Addr<Router>,
    drops: &Drops,
) -> Result<u64, String> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let base = base.trim_end_matches('/');
    let listing: Listing = get_json(&http, format!("{base}/api/v1/collections")).await?;
    let mut copied = 0u64;
    for c in listing.collections {
        let target = Target {
            router,
            peer,
            collection: &c.name,
            dimension: c.dimension,
            metric: c.metric,
            drops,
        };
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", PAGE.to_string())];
            if let Some(cur) = &cursor {
                query.push(("cursor", cur.clone()));
            }
            let query = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
            let url = format!("{base}/api/v1/collections/{}/points?{query}", c.name);
            let page: Page = get_json(&http, url).await?;
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
            target.apply(ops).await?;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        copied += copy_deletes(&http, base, &c.name, &target).await?;
    }
    Ok(copied)
}

#[derive(Deserialize)]
struct Grave {
    id: String,
    version: serde_json::Value,
}

#[derive(Deserialize)]
struct GravePage {
    deleted: Vec<Grave>,
    next_cursor: Option<String>,
}

/// Applies the peer's delete tombstones of one collection; answers how many were sent.
async fn copy_deletes(
    http: &reqwest::Client,
    base: &str,
    collection: &str,
    target: &Target<'_>,
) -> Result<u64, String> {
    let mut cursor: Option<String> = None;
    let mut sent = 0u64;
    loop {
        let mut query = vec![("limit", PAGE.to_string()), ("deleted", "true".into())];
        if let Some(cur) = &cursor {
            query.push(("cursor", cur.clone()));
        }
        let query = serde_urlencoded::to_string(&query).map_err(|e| e.to_string())?;
        let url = format!("{base}/api/v1/collections/{collection}/points?{query}");
        let page: GravePage = get_json(http, url).await?;
        let ops: Vec<WriteOp> = page
            .deleted
            .into_iter()
            .filter_map(|g| {
                let version = PointVersion::from_json(&g.version).ok()?;
                Some(WriteOp::Replicated {
                    id: g.id,
                    change: ReplicatedChange::Delete,
                    version: Arc::new(version),
                })
            })
            .collect();
        sent += ops.len() as u64;
        target.apply(ops).await?;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(sent),
        }
    }
}

/// A JSON answer of the peer.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Result<T, String> {
    http.get(url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())
}
