//! Standing subscriptions: a subscribe request checked against its collection (filter within
//! limits, vector valid, threshold finite), the current top-k of a `k` query seeded with a
//! search, and the hub registration — resuming from a sequence number when the replay window
//! still reaches back to it. WebSocket `subscribe` frames and both SSE servers go through here.

use std::sync::Arc;

use ruvector_actors::validate_vector;
use ruvector_actors::EngineError;
use ruvector_actors::Filter;
use ruvector_actors::SearchRequest;
use ruvector_actors::{ResetNeeded, Sink, StandingQuery};
use serde::Deserialize;
use serde_json::Value;

use super::call::{deadline, lookup};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// What a subscription asks for (a `subscribe` frame; an SSE query string).
#[derive(Deserialize)]
pub struct SubscribeRequest {
    pub collection: String,
    pub vector: Option<Vec<f32>>,
    pub k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub filter: Option<Value>,
}

/// `GET /api/v1/stream/subscribe`'s query string: JSON values arrive as text.
#[derive(Deserialize)]
pub struct SubscribeQuery {
    pub collection: String,
    pub filter: Option<String>,
    pub vector: Option<String>,
    pub k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub last_event_id: Option<String>,
}

impl SubscribeQuery {
    /// The request and the position to resume after: the `Last-Event-ID` header's, else
    /// `?last_event_id=`.
    pub fn into_request(
        self,
        last_event_id: Option<&str>,
    ) -> Result<(SubscribeRequest, Option<u64>), ApiError> {
        let json_param = |name: &str, v: Option<String>| -> Result<Option<Value>, ApiError> {
            v.map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| ApiError::invalid(format!("{name} is not JSON: {e}")))
            })
            .transpose()
        };
        let vector: Option<Vec<f32>> = match json_param("vector", self.vector)? {
            None => None,
            Some(v) => Some(
                serde_json::from_value(v)
                    .map_err(|_| ApiError::invalid("vector must be an array of numbers"))?,
            ),
        };
        let last = match last_event_id.or(self.last_event_id.as_deref()) {
            Some(id) => Some(super::event_id::resume_position(id).ok_or_else(|| {
                ApiError::invalid("Last-Event-ID must be an event id (<seq> or <seq>.<instance>)")
            })?),
            None => None,
        };
        let request = SubscribeRequest {
            collection: self.collection,
            vector,
            k: self.k,
            score_threshold: self.score_threshold,
            filter: json_param("filter", self.filter)?,
        };
        Ok((request, last))
    }
}

/// A subscription checked and ready to register: the stored collection, the standing query
/// and the seeded top-k.
pub struct Prepared {
    pub collection: String,
    query: StandingQuery,
    top: Vec<(f32, Arc<str>)>,
}

/// Checks a subscribe request against its collection (named as the caller knows it); seeds the
/// top-k of a `k` query with a search so that only points entering the current top k are
/// reported.
pub async fn prepare(
    app: &AppState,
    caller: &Principal,
    s: SubscribeRequest,
) -> Result<Prepared, ApiError> {
    let collection = caller.internal(&s.collection)?;
    let c = lookup(app, collection.clone()).await?;
    let filter = match &s.filter {
        None | Some(Value::Null) => None,
        Some(f) => Some(Filter::parse_with(f, c.limits().filter_limits())?),
    };
    if let Some(v) = &s.vector {
        validate_vector(v, c.spec.dimension, c.spec.metric)?;
    }
    if let Some(t) = s.score_threshold {
        if !t.is_finite() {
            return Err(ApiError::invalid("score_threshold must be a finite number"));
        }
    }
    let mut top = Vec::new();
    if let Some(k) = s.k {
        let Some(v) = &s.vector else {
            return Err(ApiError::invalid("\"k\" needs a \"vector\""));
        };
        let req = SearchRequest {
            vector: v.clone(),
            k,
            ef_search: None,
            filter: filter.clone(),
            score_threshold: s.score_threshold,
            with_vector: false,
            with_metadata: false,
        };
        let hits = deadline(app, async { Ok(c.clone().search(req).await?) }).await?;
        top = hits.into_iter().map(|h| (h.score, h.id)).collect();
    }
    let query = StandingQuery::new(
        c.spec.metric,
        s.vector.as_deref(),
        s.k,
        s.score_threshold,
        filter,
    );
    Ok(Prepared {
        collection,
        query,
        top,
    })
}

/// A registered subscription.
pub struct Opened {
    pub id: u64,
    /// The collection's sequence number at registration.
    pub seq: u64,
    /// The resume position had left the replay window: the client must start over.
    pub reset: bool,
}

/// Registers a prepared subscription with the hub; with `resume_after`, events after that
/// sequence number are replayed first (or `reset` says they cannot be).
pub fn open(
    app: &AppState,
    p: Prepared,
    sink: Arc<dyn Sink>,
    resume_after: Option<u64>,
) -> Result<Opened, ApiError> {
    let refused = |_| ApiError::from(EngineError::Internal("subscription refused".into()));
    match app.hub.subscribe(
        &p.collection,
        p.query.clone(),
        p.top.clone(),
        sink.clone(),
        resume_after,
    ) {
        Ok((id, seq)) => Ok(Opened {
            id,
            seq,
            reset: false,
        }),
        Err(ResetNeeded) => {
            let (id, seq) = app
                .hub
                .subscribe(&p.collection, p.query, p.top, sink, None)
                .map_err(refused)?;
            metrics::counter!("ruvector_sse_resets_total").increment(1);
            Ok(Opened {
                id,
                seq,
                reset: true,
            })
        }
    }
}
