//! REST handlers for search (PROTOCOL.md §Search and the design's short paths): parse, call
//! `service::search`, answer. `GET /api/v1/search` adds HTTP caching (ETag, Cache-Control).

use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;

use super::body::read_json;
use super::guard::Caller;
use crate::error::ApiError;
use crate::service::call::took_ms;
use crate::service::search;
use crate::service::shapes::{
    hit_json, search_answer, HitJson, SearchBody, SearchQuery, DEFAULT_COLLECTION,
};
use crate::state::AppState;

type ApiResult = Result<HttpResponse, ApiError>;

pub async fn search_points(
    state: web::Data<AppState>,
    caller: Caller,
    name: web::Path<String>,
    payload: web::Payload,
) -> ApiResult {
    let t = Instant::now();
    let (body, _busy): (SearchBody, _) = read_json(&state, payload).await?;
    let answered = search::search_cached(&state, caller.internal(&name)?, body).await?;
    answer(&state, answered, t)
}

/// A whole search answer; one from the regional cache says so in `x-ruvector-cache: hit`, a
/// fresh one is offered to the cache.
fn answer(state: &AppState, answered: search::Answered, t: Instant) -> ApiResult {
    let (results, hit) = match answered {
        search::Answered::Hits {
            hits,
            store_as: None,
        } => return Ok(HttpResponse::Ok().json(search_answer(&hits, t))),
        search::Answered::Hits {
            hits,
            store_as: Some(key),
        } => {
            let results = serde_json::to_string(&hits.iter().map(hit_json).collect::<Vec<_>>())
                .map_err(|e| ruvector_actors::EngineError::Internal(format!("answer: {e}")))?;
            if let Some(cache) = &state.cache {
                cache.put(key, results.clone());
            }
            (results, false)
        }
        search::Answered::Cached(results) => (results, true),
    };
    let mut res = HttpResponse::Ok();
    if hit {
        res.insert_header(("x-ruvector-cache", "hit"));
    }
    Ok(res.content_type("application/json").body(format!(
        r#"{{"results":{results},"took_ms":{}}}"#,
        took_ms(t)
    )))
}

#[derive(serde::Deserialize)]
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
    let all = search::batch(&state, caller.internal(&name)?, body.searches).await?;
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

/// `POST /api/v1/search`.
pub async fn short_search(
    state: web::Data<AppState>,
    caller: Caller,
    payload: web::Payload,
) -> ApiResult {
    let t = Instant::now();
    let (body, _busy): (SearchBody, _) = read_json(&state, payload).await?;
    let collection = caller.internal(body.collection.as_deref().unwrap_or(DEFAULT_COLLECTION))?;
    let answered = search::search_cached(&state, collection, body).await?;
    answer(&state, answered, t)
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
    let c = search::lookup(&state, collection).await?;
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
    let request = search::resolve_search(&c, body)?;
    let hits = search::run_search(&state, c, request).await?;
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
