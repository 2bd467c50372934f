//! The request and answer shapes every transport shares (PROTOCOL.md §Points, §Search,
//! §Streams): point and search bodies, a search by id in a query string, hits as JSON, streamed
//! hits and subscription events, and the defaults. Transports parse into these and render
//! these; none defines its own.

use std::time::Instant;

use ruvector_actors::Delivery;
use ruvector_actors::{Hit, Metadata};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::call::took_ms;
use crate::error::ApiError;

/// The collection the short paths and stream frames use when none is named.
pub const DEFAULT_COLLECTION: &str = "default";

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
pub fn metadata_of(raw: Option<&RawValue>, max_bytes: usize) -> Result<Option<Metadata>, ApiError> {
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

pub fn id_of(v: Option<Value>) -> Result<String, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(uuid::Uuid::new_v4().to_string()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid("point id must be a string")),
    }
}

pub fn default_k() -> usize {
    10
}
pub fn yes() -> bool {
    true
}

/// A search body; `query` is the short path's name for `vector`. Serialized again only as the
/// regional cache's key material.
#[derive(Deserialize, Serialize)]
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
pub struct SearchAnswer<'a> {
    results: Vec<HitJson<'a>>,
    took_ms: f64,
}

pub fn search_answer(hits: &[Hit], t: Instant) -> SearchAnswer<'_> {
    SearchAnswer {
        results: hits.iter().map(hit_json).collect(),
        took_ms: took_ms(t),
    }
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

/// One hit of a streamed search (WebSocket `result` frames, SSE `result` events).
#[derive(Serialize)]
pub struct RankedHit<'a> {
    pub query_id: u64,
    pub rank: usize,
    pub vector_id: &'a str,
    pub score: f32,
    pub distance: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<&'a [f32]>,
}

pub fn ranked_hit(query_id: u64, rank: usize, h: &Hit) -> RankedHit<'_> {
    RankedHit {
        query_id,
        rank,
        vector_id: &h.id,
        score: h.score,
        distance: h.distance,
        metadata: h.metadata.as_deref(),
        vector: h.vector.as_deref(),
    }
}

#[derive(Serialize)]
pub struct EventFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subscription: u64,
    pub collection: &'a str,
    pub op: &'static str,
    pub vector_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Metadata>,
    pub seq: u64,
}

pub fn event_frame<'a>(collection: &'a str, d: &'a Delivery) -> EventFrame<'a> {
    EventFrame {
        kind: "event",
        subscription: d.subscription,
        collection,
        op: d.change.op.as_str(),
        vector_id: &d.change.id,
        score: d.score,
        metadata: d.change.metadata.as_deref(),
        seq: d.seq,
    }
}
