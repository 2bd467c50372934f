//! REST handlers for points (PROTOCOL.md §Points) and the design's short insert path: parse,
//! call `service::points`, answer.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::body::read_json;
use super::guard::Caller;
use crate::error::ApiError;
use crate::service::points;
use crate::service::shapes::{PointBody, DEFAULT_COLLECTION};
use crate::state::AppState;

type ApiResult = Result<HttpResponse, ApiError>;

#[derive(Deserialize)]
struct UpsertBody {
    points: Vec<PointBody>,
}

pub async fn upsert_points(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let (body, _busy): (UpsertBody, _) = read_json(&state, payload).await?;
    let ids = points::upsert(&state, caller.internal(&name)?, body.points, false).await?;
    Ok(HttpResponse::Ok().json(json!({ "ids": ids })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    /// `true`: page through delete tombstones instead of points.
    deleted: Option<bool>,
}

/// `GET /api/v1/collections/{c}/points?limit=&cursor=`: every point, a page at a time
/// (`&deleted=true`: the delete tombstones instead).
pub async fn list_points(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    q: web::Query<PageQuery>,
) -> ApiResult {
    let q = q.into_inner();
    let collection = caller.internal(&name)?;
    let page = match q.deleted {
        Some(true) => points::deleted_page(&state, collection, q.limit, q.cursor).await?,
        Some(false) | None => points::page(&state, collection, q.limit, q.cursor).await?,
    };
    Ok(HttpResponse::Ok().json(page))
}

pub async fn get_point(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (name, id) = path.into_inner();
    Ok(HttpResponse::Ok().json(points::get(&state, caller.internal(&name)?, &id).await?))
}

#[derive(Deserialize)]
struct PatchBody {
    metadata: Box<RawValue>,
}

pub async fn patch_point(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> ApiResult {
    let (name, id) = path.into_inner();
    let name = caller.internal(&name)?;
    let (body, _busy): (PatchBody, _) = read_json(&state, payload).await?;
    let point = points::patch(&state, name, id, &body.metadata).await?;
    Ok(HttpResponse::Ok().json(point))
}

pub async fn delete_point(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (name, id) = path.into_inner();
    points::delete_one(&state, caller.internal(&name)?, id).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": true })))
}

#[derive(Deserialize)]
struct InsertBody {
    collection: Option<String>,
    id: Option<Value>,
    vector: Option<Vec<f32>>,
    metadata: Option<Box<RawValue>>,
    vectors: Option<Vec<PointBody>>,
}

/// `POST /api/v1/insert`: one point or several; the collection is created on first use.
pub async fn short_insert(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> ApiResult {
    let (body, _busy): (InsertBody, _) = read_json(&state, payload).await?;
    let points = match (body.vector, body.vectors) {
        (Some(vector), None) => vec![PointBody {
            id: body.id,
            vector,
            metadata: body.metadata,
        }],
        (None, Some(points)) => points,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"vector\" and \"vectors\"",
            ))
        }
    };
    let collection = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let ids = points::upsert(&state, collection, points, true).await?;
    Ok(HttpResponse::Ok().json(json!({ "ids": ids })))
}
