//! Point writes and reads: upsert (with ids assigned and metadata bounded before it is parsed),
//! patch, delete and get, each through the router under the request deadline. Every transport's
//! write goes through here, so a WebSocket insert and a REST upsert are one code path.

use ruvector_actors::EngineError;
use ruvector_actors::Point;
use ruvector_actors::RouteWrite;
use ruvector_actors::WriteOp;

use super::call::{ask, lookup};
use super::shapes::{id_of, metadata_of, PointBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Turns client points into upserts: ids assigned where missing, metadata checked.
pub fn upserts(
    points: Vec<PointBody>,
    max_metadata_bytes: usize,
) -> Result<(Vec<String>, Vec<WriteOp>), ApiError> {
    if points.is_empty() {
        return Err(ApiError::invalid("points must not be empty"));
    }
    let mut ids = Vec::with_capacity(points.len());
    let mut ops = Vec::with_capacity(points.len());
    for p in points {
        let id = id_of(p.id)?;
        ids.push(id.clone());
        ops.push(WriteOp::Upsert {
            id,
            vector: p.vector,
            metadata: metadata_of(p.metadata.as_deref(), max_metadata_bytes)?,
        });
    }
    Ok((ids, ops))
}

/// Applies `ops` durably; per op, whether the point existed before. `create_dimension` creates
/// the collection on first use (the short paths).
pub async fn write(
    app: &AppState,
    collection: String,
    ops: Vec<WriteOp>,
    create_dimension: Option<usize>,
) -> Result<Vec<bool>, ApiError> {
    Ok(ask(
        app,
        RouteWrite {
            collection,
            ops,
            create_dimension,
        },
    )
    .await??)
}

/// Upserts `points`; returns their ids. With `create`, a missing collection is created with
/// the first point's dimension (the short path and stream inserts).
pub async fn upsert(
    app: &AppState,
    collection: String,
    points: Vec<PointBody>,
    create: bool,
) -> Result<Vec<String>, ApiError> {
    let dimension = create
        .then(|| points.first().map(|p| p.vector.len()).filter(|d| *d > 0))
        .flatten();
    let (ids, ops) = upserts(points, app.settings.index.max_metadata_bytes)?;
    write(app, collection, ops, dimension).await?;
    Ok(ids)
}

/// Deletes points by id; returns how many existed.
pub async fn delete(
    app: &AppState,
    collection: String,
    ids: Vec<String>,
) -> Result<usize, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid("ids must not be empty"));
    }
    let ops = ids.into_iter().map(|id| WriteOp::Delete { id }).collect();
    let existed = write(app, collection, ops, None).await?;
    Ok(existed.iter().filter(|e| **e).count())
}

/// Deletes one point; `not_found` when it did not exist.
pub async fn delete_one(app: &AppState, collection: String, id: String) -> Result<(), ApiError> {
    let existed = write(
        app,
        collection,
        vec![WriteOp::Delete { id: id.clone() }],
        None,
    )
    .await?;
    if !existed.first().copied().unwrap_or(false) {
        return Err(EngineError::NotFound(format!("point {id:?}")).into());
    }
    Ok(())
}

/// A page cursor is the last point id of the previous page: it must be a valid id.
fn check_cursor(cursor: Option<&str>) -> Result<(), ApiError> {
    match cursor {
        Some(after) => ruvector_actors::types::validate_point_id(after)
            .map_err(|e| ApiError::invalid(format!("cursor: {e}"))),
        None => Ok(()),
    }
}

/// A page of points in id order (bytewise) after `cursor` (the last id of the previous page):
/// `{"points":[{"id","vector","metadata"?,"version"}],"next_cursor"}`. `limit` is lowered to
/// `index.max_page_points` and to what `index.max_answer_floats` allows at this dimension.
pub async fn page(
    app: &AppState,
    collection: String,
    limit: Option<usize>,
    cursor: Option<String>,
) -> Result<serde_json::Value, ApiError> {
    let c = lookup(app, collection).await?;
    check_cursor(cursor.as_deref())?;
    let limits = c.limits();
    let limit = limit
        .unwrap_or(100)
        .min(limits.max_page_points)
        .min(limits.max_answer_floats / c.spec.dimension.max(1))
        .max(1);
    let (points, more) = c.page(cursor.as_deref(), limit);
    let next = if more {
        points.last().map(|(p, _, _)| p.id.clone())
    } else {
        None
    };
    let points: Vec<serde_json::Value> = points
        .into_iter()
        .map(|(p, seq, version)| {
            // The replication version where writes are stamped (identical in every region once
            // they converge); the shard's sequence number otherwise.
            let version = match version {
                Some(v) => v.to_json(),
                None => serde_json::json!({ "seq": seq }),
            };
            let mut v = serde_json::json!({"id": p.id, "vector": p.vector, "version": version});
            if let Some(m) = p.metadata {
                v["metadata"] = serde_json::Value::Object(m);
            }
            v
        })
        .collect();
    Ok(serde_json::json!({"points": points, "next_cursor": next}))
}

/// A page of delete tombstones in id order after `cursor`:
/// `{"deleted":[{"id","version"}],"next_cursor"}` — the deletes still remembered for
/// last-write-wins (`regions.tombstone_retention_s`), which a full resync applies besides the
/// points. `limit` as for points (at most `index.max_page_points`).
pub async fn deleted_page(
    app: &AppState,
    collection: String,
    limit: Option<usize>,
    cursor: Option<String>,
) -> Result<serde_json::Value, ApiError> {
    let c = lookup(app, collection).await?;
    check_cursor(cursor.as_deref())?;
    let limit = limit.unwrap_or(100).min(c.limits().max_page_points).max(1);
    let (graves, more) = c.deleted_page(cursor.as_deref(), limit);
    let next = if more {
        graves.last().map(|(id, _)| id.to_string())
    } else {
        None
    };
    let deleted: Vec<serde_json::Value> = graves
        .into_iter()
        .map(|(id, v)| serde_json::json!({"id": &*id, "version": v.to_json()}))
        .collect();
    Ok(serde_json::json!({"deleted": deleted, "next_cursor": next}))
}

/// A stored point.
pub async fn get(app: &AppState, collection: String, id: &str) -> Result<Point, ApiError> {
    let c = lookup(app, collection).await?;
    Ok(c.get(id)?)
}

/// Merges `patch` (a JSON object's text) into a point's metadata; returns the point after.
pub async fn patch(
    app: &AppState,
    collection: String,
    id: String,
    patch: &serde_json::value::RawValue,
) -> Result<Point, ApiError> {
    let patch =
        metadata_of(Some(patch), app.settings.index.max_metadata_bytes)?.unwrap_or_default();
    let existed = write(
        app,
        collection.clone(),
        vec![WriteOp::Patch {
            id: id.clone(),
            patch,
        }],
        None,
    )
    .await?;
    if !existed.first().copied().unwrap_or(false) {
        return Err(EngineError::NotFound(format!("point {id:?}")).into());
    }
    get(app, collection, &id).await
}
