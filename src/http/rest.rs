//! REST handlers for collections, points and search (PROTOCOL.md §Collections, §Points,
//! §Search and the design's short paths). Handlers are thin: parse, ask the `Router`, shape.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Handler, Message};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ruvector_actors::index::filter::Filter;
use ruvector_actors::router::{
    Collection, CollectionInfo, CollectionOptions, CreateCollection, DropCollection,
    ListCollections, Lookup, RouteWrite, Router, SearchRequest,
};
use ruvector_actors::shard::WriteOp;
use ruvector_actors::types::{Hit, Metadata, Metric};
use ruvector_actors::EngineError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::body::read_json;
use super::error::ApiError;
use super::guard::Caller;
use super::AppState;

/// The collection the short paths use when none is named.
pub const DEFAULT_COLLECTION: &str = "default";

type ApiResult = Result<HttpResponse, ApiError>;

/// Sends a message to the router under the request deadline.
pub(crate) async fn ask<M>(state: &AppState, msg: M) -> Result<M::Result, ApiError>
where
    M: Message + Send + 'static,
    M::Result: Send,
    Router: Handler<M>,
    <Router as actix::Actor>::Context: ToEnvelope<Router, M>,
{
    deadline(state, async {
        state
            .router
            .send(msg)
            .await
            .map_err(|e| ApiError::from(EngineError::from(e)))
    })
    .await
}

pub(crate) async fn deadline<T>(
    state: &AppState,
    f: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let ms = state.settings.server.request_timeout_ms;
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .map_err(|_| ApiError::from(EngineError::Timeout(ms)))?
}

// ---------- collections ----------

#[derive(Deserialize)]
struct CreateBody {
    dimension: usize,
    metric: Option<String>,
    shards: Option<usize>,
    hnsw: Option<HnswBody>,
}

#[derive(Deserialize, Default)]
struct HnswBody {
    m: Option<usize>,
    ef_construction: Option<usize>,
    ef_search: Option<usize>,
}

pub async fn create_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let (body, _busy): (CreateBody, _) = read_json(&state, payload).await?;
    let hnsw = body.hnsw.unwrap_or_default();
    let options = CollectionOptions {
        dimension: body.dimension,
        metric: body.metric.as_deref().map(Metric::parse).transpose()?,
        shards: body.shards,
        m: hnsw.m,
        ef_construction: hnsw.ef_construction,
        ef_search: hnsw.ef_search,
    };
    let (info, created) = ask(
        &state,
        CreateCollection {
            name: caller.internal(&name)?,
            options,
        },
    )
    .await??;
    let info = shown(&caller, info);
    Ok(if created {
        HttpResponse::Created().json(info)
    } else {
        HttpResponse::Ok().json(info)
    })
}

/// A collection's info with the name as the caller knows it (tenants see their own names).
fn shown(caller: &Caller, mut info: CollectionInfo) -> CollectionInfo {
    if let Some(name) = caller.external(&info.name) {
        info.name = name.to_owned();
    }
    info
}

pub async fn list_collections(state: web::Data<AppState>, caller: Caller) -> ApiResult {
    let list: Vec<CollectionInfo> = ask(&state, ListCollections)
        .await??
        .into_iter()
        .filter(|c| caller.external(&c.name).is_some())
        .map(|c| shown(&caller, c))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "collections": list })))
}

pub async fn get_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> ApiResult {
    let c = ask(&state, Lookup(caller.internal(&name)?)).await??;
    Ok(HttpResponse::Ok().json(shown(&caller, c.info())))
}

pub async fn delete_collection(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
) -> ApiResult {
    ask(&state, DropCollection(caller.internal(&name)?)).await??;
    Ok(HttpResponse::NoContent().finish())
}

// ---------- points ----------

/// A point as clients send it: the id is optional (a UUID is assigned).
#[derive(Deserialize)]
pub struct PointBody {
    pub id: Option<Value>,
    pub vector: Vec<f32>,
    /// Kept as text until its size is checked: parsed JSON costs ~40x its text in memory.
    #[serde(default)]
    pub metadata: Option<Box<RawValue>>,
}

/// A point's metadata from its JSON text: refused past `max_bytes` before it is parsed (the
/// engine checks the parsed form again, depth included, on every write path).
pub(crate) fn metadata_of(
    raw: Option<&RawValue>,
    max_bytes: usize,
) -> Result<Option<Metadata>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text.len() > max_bytes {
        return Err(ApiError::invalid(format!(
            "metadata of {} bytes is over the limit of {max_bytes} bytes (index.max_metadata_bytes)",
            text.len()
        )));
    }
    match serde_json::from_str(text) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(ApiError::invalid("metadata must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!("metadata: {e}"))),
    }
}

fn id_of(v: Option<Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(uuid::Uuid::new_v4().to_string()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid("point id must be a string")),
    }
}

pub(crate) fn upserts(
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

#[derive(Deserialize)]
struct UpsertBody {
    points: Vec<PointBody>,
}

pub(crate) async fn write(
    state: &AppState,
    collection: String,
    ops: Vec<WriteOp>,
    create_dimension: Option<usize>,
) -> Result<Vec<bool>, ApiError> {
    Ok(ask(
        state,
        RouteWrite {
            collection,
            ops,
            create_dimension,
        },
    )
    .await??)
}

pub async fn upsert_points(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let (body, _busy): (UpsertBody, _) = read_json(&state, payload).await?;
    let (ids, ops) = upserts(body.points, state.settings.index.max_metadata_bytes)?;
    write(&state, caller.internal(&name)?, ops, None).await?;
    Ok(HttpResponse::Ok().json(json!({ "ids": ids })))
}

pub async fn get_point(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (name, id) = path.into_inner();
    let name = caller.internal(&name)?;
    let c = ask(&state, Lookup(name)).await??;
    Ok(HttpResponse::Ok().json(c.get(&id)?))
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
    let patch = metadata_of(
        Some(&body.metadata),
        state.settings.index.max_metadata_bytes,
    )?
    .unwrap_or_default();
    let existed = write(
        &state,
        name.clone(),
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
    let c = ask(&state, Lookup(name)).await??;
    Ok(HttpResponse::Ok().json(c.get(&id)?))
}

pub async fn delete_point(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult {
    let (name, id) = path.into_inner();
    let name = caller.internal(&name)?;
    let existed = write(&state, name, vec![WriteOp::Delete { id: id.clone() }], None).await?;
    if !existed.first().copied().unwrap_or(false) {
        return Err(EngineError::NotFound(format!("point {id:?}")).into());
    }
    Ok(HttpResponse::Ok().json(json!({ "deleted": true })))
}

// ---------- search ----------

pub(crate) fn default_k() -> usize {
    10
}
pub(crate) fn yes() -> bool {
    true
}

/// A search body; `query` is the short path's name for `vector`.
#[derive(Deserialize)]
pub struct SearchBody {
    pub collection: Option<String>,
    pub vector: Option<Vec<f32>>,
    pub query: Option<Vec<f32>>,
    pub id: Option<String>,
    #[serde(default = "default_k")]
    pub k: usize,
    pub ef_search: Option<usize>,
    pub filter: Option<Value>,
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub with_vector: bool,
    #[serde(default = "yes")]
    pub with_metadata: bool,
    pub metric: Option<String>,
}

/// Resolves a search body against a collection into an engine request (fetching the stored
/// vector for a search by id).
pub fn resolve_search(c: &Collection, b: SearchBody) -> Result<SearchRequest, ApiError> {
    let filter = match b.filter {
        None | Some(Value::Null) => None,
        Some(f) => Some(Filter::parse_with(&f, c.limits().filter_limits())?),
    };
    let given = [b.vector.is_some(), b.query.is_some(), b.id.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        return Err(ApiError::invalid(
            "give exactly one of \"vector\" (or \"query\") and \"id\"",
        ));
    }
    if let Some(m) = b.metric.as_deref() {
        let m = Metric::parse(m)?;
        if m != c.spec.metric {
            return Err(ApiError::invalid(format!(
                "metric {} differs from the collection's metric {}",
                m.as_str(),
                c.spec.metric.as_str()
            )));
        }
    }
    let vector = match (b.vector.or(b.query), b.id) {
        (Some(v), _) => v,
        (None, Some(id)) => c.get(&id)?.vector,
        (None, None) => return Err(ApiError::invalid("a search needs \"vector\" or \"id\"")),
    };
    Ok(SearchRequest {
        vector,
        k: b.k,
        ef_search: b.ef_search,
        filter,
        score_threshold: b.score_threshold,
        with_vector: b.with_vector,
        with_metadata: b.with_metadata,
    })
}

/// A hit on the wire. Serialized straight from f32 (through `Value` it would print f64 digits).
#[derive(Serialize)]
pub struct HitJson<'a> {
    pub id: &'a str,
    pub score: f32,
    pub distance: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<&'a [f32]>,
}

pub fn hit_json(h: &Hit) -> HitJson<'_> {
    HitJson {
        id: &h.id,
        score: h.score,
        distance: h.distance,
        metadata: h.metadata.as_deref(),
        vector: h.vector.as_deref(),
    }
}

#[derive(Serialize)]
struct SearchAnswer<'a> {
    results: Vec<HitJson<'a>>,
    took_ms: f64,
}

fn search_answer(hits: &[Hit], t: Instant) -> SearchAnswer<'_> {
    SearchAnswer {
        results: hits.iter().map(hit_json).collect(),
        took_ms: took_ms(t),
    }
}

/// Runs a search on a collection the router handed out (its shard fan-out, under the request
/// deadline), without a second trip through the router.
async fn run_search(
    state: &AppState,
    c: Arc<Collection>,
    request: SearchRequest,
) -> Result<Vec<Hit>, ApiError> {
    let t = Instant::now();
    let hits = deadline(state, async { Ok(c.search(request).await?) }).await?;
    state.supervisor.record_search(t.elapsed());
    Ok(hits)
}

/// Looks the collection up once, resolves the body against it and searches.
async fn search_in(
    state: &AppState,
    collection: String,
    body: SearchBody,
) -> Result<Vec<Hit>, ApiError> {
    let c = ask(state, Lookup(collection)).await??;
    let request = resolve_search(&c, body)?;
    answer_budget(&c, std::slice::from_ref(&request))?;
    run_search(state, c, request).await
}

/// Refuses (413) a request whose whole answer would pass `index.max_request_hits` hits or
/// `index.max_answer_floats` vector components: a REST answer is built whole, so its size is
/// the server's memory. (Streams send hit by hit and need no such bound.)
fn answer_budget(c: &Collection, requests: &[SearchRequest]) -> Result<(), ApiError> {
    let limits = c.limits();
    let hits: usize = requests.iter().map(|r| r.k).sum();
    let floats: usize = requests
        .iter()
        .filter(|r| r.with_vector)
        .map(|r| r.k.saturating_mul(c.spec.dimension))
        .sum();
    if hits > limits.max_request_hits {
        return Err(ApiError::AnswerTooLarge(format!(
            "the request asks for {hits} hits; at most {} per request (index.max_request_hits)",
            limits.max_request_hits
        )));
    }
    if floats > limits.max_answer_floats {
        return Err(ApiError::AnswerTooLarge(format!(
            "the answer would carry {floats} vector components; at most {} per request \
             (index.max_answer_floats): ask fewer hits or with_vector false",
            limits.max_answer_floats
        )));
    }
    Ok(())
}

pub(crate) fn took_ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

pub async fn search_points(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let t = Instant::now();
    let (body, _busy): (SearchBody, _) = read_json(&state, payload).await?;
    let hits = search_in(&state, caller.internal(&name)?, body).await?;
    Ok(HttpResponse::Ok().json(search_answer(&hits, t)))
}

#[derive(Deserialize)]
struct BatchBody {
    searches: Vec<Value>,
}

pub async fn search_batch(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let t = Instant::now();
    let (body, _busy): (BatchBody, _) = read_json(&state, payload).await?;
    let max = state.settings.index.max_batch_searches;
    if body.searches.is_empty() || body.searches.len() > max {
        return Err(ApiError::invalid(format!(
            "searches must hold 1 to {max} searches"
        )));
    }
    let c = ask(&state, Lookup(caller.internal(&name)?)).await??;
    let mut requests = Vec::with_capacity(body.searches.len());
    for (i, s) in body.searches.into_iter().enumerate() {
        let b: SearchBody = serde_json::from_value(s)
            .map_err(|e| ApiError::invalid(format!("searches[{i}]: {e}")))?;
        requests.push(resolve_search(&c, b)?);
    }
    answer_budget(&c, &requests)?;
    let all = futures_util::future::try_join_all(
        requests
            .into_iter()
            .map(|r| run_search(&state, c.clone(), r)),
    )
    .await?;
    #[derive(Serialize)]
    struct BatchAnswer<'a> {
        results: Vec<Vec<HitJson<'a>>>,
        took_ms: f64,
    }
    Ok(HttpResponse::Ok().json(BatchAnswer {
        results: all
            .iter()
            .map(|hits| hits.iter().map(hit_json).collect())
            .collect(),
        took_ms: took_ms(t),
    }))
}

// ---------- the design's short paths ----------

#[derive(Deserialize)]
struct InsertBody {
    collection: Option<String>,
    id: Option<Value>,
    vector: Option<Vec<f32>>,
    metadata: Option<Box<RawValue>>,
    vectors: Option<Vec<PointBody>>,
}

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
    let dimension = points.first().map(|p| p.vector.len()).filter(|d| *d > 0);
    let (ids, ops) = upserts(points, state.settings.index.max_metadata_bytes)?;
    let collection = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    write(&state, collection, ops, dimension).await?;
    Ok(HttpResponse::Ok().json(json!({ "ids": ids })))
}

pub async fn short_search(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> ApiResult {
    let t = Instant::now();
    let (body, _busy): (SearchBody, _) = read_json(&state, payload).await?;
    let collection = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let hits = search_in(&state, collection, body).await?;
    Ok(HttpResponse::Ok().json(search_answer(&hits, t)))
}

/// A search by a stored point's id in a query string (`GET /api/v1/search`,
/// `GET /api/v1/stream/search`): numbers arrive as text, the filter as JSON text.
#[derive(Deserialize)]
pub struct SearchQuery {
    pub collection: Option<String>,
    pub query_vector_id: Option<String>,
    pub k: Option<String>,
    pub ef_search: Option<String>,
    pub filter: Option<String>,
    pub metric: Option<String>,
}

fn number<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, ApiError> {
    v.map(|s| {
        s.parse()
            .map_err(|_| ApiError::invalid(format!("{name} must be a positive integer, got {s:?}")))
    })
    .transpose()
}

impl SearchQuery {
    pub fn into_body(self) -> Result<SearchBody, ApiError> {
        let id = self
            .query_vector_id
            .ok_or_else(|| ApiError::invalid("query_vector_id is required"))?;
        let filter = self
            .filter
            .map(|f| {
                serde_json::from_str(&f)
                    .map_err(|e| ApiError::invalid(format!("filter is not JSON: {e}")))
            })
            .transpose()?;
        Ok(SearchBody {
            collection: self.collection,
            vector: None,
            query: None,
            id: Some(id),
            k: number("k", self.k.as_deref())?.unwrap_or_else(default_k),
            ef_search: number("ef_search", self.ef_search.as_deref())?,
            filter,
            score_threshold: None,
            with_vector: false,
            with_metadata: true,
            metric: self.metric,
        })
    }
}

/// `GET /api/v1/search`: cacheable by a CDN (Cache-Control + an ETag that changes with the
/// collection; If-None-Match answers 304).
pub async fn short_search_get(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<SearchQuery>,
) -> ApiResult {
    let t = Instant::now();
    let body = query.into_inner().into_body()?;
    let collection = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let c = ask(&state, Lookup(collection)).await??;
    let etag = c.etag();
    // Answers to authenticated callers may only be cached by the caller itself.
    let visibility = if state.auth.enabled() {
        "private"
    } else {
        "public"
    };
    let cache = format!(
        "{visibility}, max-age={}",
        state.settings.server.search_cache_max_age_s
    );
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache))
            .finish());
    }
    let request = resolve_search(&c, body)?;
    let hits = run_search(&state, c, request).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache))
        .json(search_answer(&hits, t)))
}

/// Query-string errors as our JSON errors.
pub fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("bad query string: {err}")).into()
}

/// Path errors (never expected with String segments) as our JSON errors.
pub fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::invalid(format!("bad path: {err}")).into()
}
