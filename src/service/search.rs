//! Searches: a body resolved against its collection (vector, query or stored id; filter within
//! the collection's limits; metric checked), the answer budget of whole answers, and the shard
//! fan-out under the request deadline — whole (`search_in`) or as a lazily merged ranking
//! (`search_ranked`) that the streaming transports send hit by hit.

use std::sync::Arc;
use std::time::Instant;

use ruvector_actors::Filter;
use ruvector_actors::{Collection, Ranked, SearchRequest};
use ruvector_actors::{Hit, Metric};
use serde_json::Value;

use super::call::deadline;
use super::shapes::SearchBody;
use crate::error::ApiError;
use crate::state::AppState;

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

/// Runs a search on a collection the router handed out (its shard fan-out, under the request
/// deadline), without a second trip through the router.
pub async fn run_search(
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
pub async fn search_in(
    state: &AppState,
    collection: String,
    body: SearchBody,
) -> Result<Vec<Hit>, ApiError> {
    let c = lookup(state, collection).await?;
    search_on(state, c, body).await
}

/// A whole search of a collection already looked up: the body resolved, the answer budget
/// checked, the fan-out run.
async fn search_on(
    state: &AppState,
    c: Arc<Collection>,
    body: SearchBody,
) -> Result<Vec<Hit>, ApiError> {
    let request = resolve_search(&c, body)?;
    answer_budget(&c, std::slice::from_ref(&request))?;
    run_search(state, c, request).await
}

/// A whole search answer: the hits (with the cache key to keep them under, when the regional
/// cache is on), or the `results` JSON the cache held.
pub enum Answered {
    Hits {
        hits: Vec<Hit>,
        store_as: Option<String>,
    },
    Cached(String),
}

/// `search_in` through the regional cache (`tier::SearchCache`) when it is on and Redis is up:
/// a hit answers the cached `results`; a miss searches and says under which key to keep them.
pub async fn search_cached(
    state: &AppState,
    collection: String,
    body: SearchBody,
) -> Result<Answered, ApiError> {
    let cache = match (&state.cache, &state.tier) {
        (Some(cache), Some(tier)) if tier.is_up() => cache,
        _ => {
            let hits = search_in(state, collection, body).await?;
            return Ok(Answered::Hits {
                hits,
                store_as: None,
            });
        }
    };
    let c = lookup(state, collection).await?;
    let material = serde_json::to_vec(&body)
        .map_err(|e| ruvector_actors::EngineError::Internal(format!("search key: {e}")))?;
    let key = cache.key(&c.spec.name, c.generation, c.version(), &material);
    if let Some(results) = cache.get(&key).await {
        return Ok(Answered::Cached(results));
    }
    let hits = search_on(state, c, body).await?;
    Ok(Answered::Hits {
        hits,
        store_as: Some(key),
    })
}

/// Refuses (413) a request whose whole answer would pass `index.max_request_hits` hits or
/// `index.max_answer_floats` vector components: a REST answer is built whole, so its size is
/// the server's memory. (Streams send hit by hit and need no such bound.)
pub fn answer_budget(c: &Collection, requests: &[SearchRequest]) -> Result<(), ApiError> {
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

/// Looks the collection up, resolves the body and starts the fan-out; the hits are merged as
/// the caller takes them (streams: no answer is built whole, so no answer budget applies).
pub async fn search_ranked(
    state: &AppState,
    collection: String,
    body: SearchBody,
) -> Result<Ranked, ApiError> {
    let t = Instant::now();
    let c = lookup(state, collection).await?;
    let request = resolve_search(&c, body)?;
    let ranked = deadline(state, async { Ok(c.search_ranked(request).await?) }).await?;
    state.supervisor.record_search(t.elapsed());
    Ok(ranked)
}

/// Several searches on one collection (`searches`: search bodies as JSON), run concurrently;
/// the answers in request order.
pub async fn batch(
    state: &AppState,
    collection: String,
    searches: Vec<Value>,
) -> Result<Vec<Vec<Hit>>, ApiError> {
    let max = state.settings.index.max_batch_searches;
    if searches.is_empty() || searches.len() > max {
        return Err(ApiError::invalid(format!(
            "searches must hold 1 to {max} searches"
        )));
    }
    let c = lookup(state, collection).await?;
    let mut requests = Vec::with_capacity(searches.len());
    for (i, s) in searches.into_iter().enumerate() {
        let b: SearchBody = serde_json::from_value(s)
            .map_err(|e| ApiError::invalid(format!("searches[{i}]: {e}")))?;
        requests.push(resolve_search(&c, b)?);
    }
    answer_budget(&c, &requests)?;
    futures_util::future::try_join_all(
        requests
            .into_iter()
            .map(|r| run_search(state, c.clone(), r)),
    )
    .await
}

/// The collection a search runs on (its routing table).
pub use super::call::lookup;
