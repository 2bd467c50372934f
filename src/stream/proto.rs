//! Stream frames (PROTOCOL.md §Streams): what clients send, parsed in two steps so that even a
//! bad frame's reply can echo its `id`, and the server's replies.

use ruvector_actors::Hit;
use ruvector_actors::{CoordOp, EngineError};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::service::shapes::{self, ranked_hit, PointBody, RankedHit, SearchBody};
use crate::service::subscribe::SubscribeRequest;

/// The first look at a frame: its type and request id (every other field skipped).
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<Value>,
}

#[derive(Deserialize)]
pub struct SearchFrame {
    pub collection: Option<String>,
    pub query: Option<Vec<f32>>,
    pub vector: Option<Vec<f32>>,
    /// Search by a stored point's vector (`id` is the request id on a stream).
    pub vector_id: Option<String>,
    #[serde(default = "shapes::default_k")]
    pub k: usize,
    pub ef_search: Option<usize>,
    pub filter: Option<Value>,
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub with_vector: bool,
    #[serde(default = "shapes::yes")]
    pub with_metadata: bool,
    #[serde(default = "shapes::yes")]
    pub stream: bool,
}

impl SearchFrame {
    pub fn into_body(self) -> SearchBody {
        SearchBody {
            collection: self.collection,
            vector: self.vector,
            query: self.query,
            id: self.vector_id,
            k: self.k,
            ef_search: self.ef_search,
            filter: self.filter,
            score_threshold: self.score_threshold,
            with_vector: self.with_vector,
            with_metadata: self.with_metadata,
            metric: None,
        }
    }
}

#[derive(Deserialize)]
pub struct InsertFrame {
    pub collection: Option<String>,
    pub points: Vec<PointBody>,
}

#[derive(Deserialize)]
pub struct DeleteFrame {
    pub collection: Option<String>,
    pub ids: Vec<String>,
}

#[derive(Deserialize)]
pub struct UnsubscribeFrame {
    pub subscription: u64,
}

#[derive(Deserialize)]
pub struct AuthFrame {
    pub token: String,
}

#[derive(Deserialize)]
struct Empty {
    #[serde(rename = "type")]
    _kind: IgnoredAny,
}

/// `subscribe_topic {topic, last?}` / `unsubscribe_topic {topic}`.
#[derive(Deserialize)]
pub struct TopicFrame {
    pub topic: String,
    #[serde(default)]
    pub last: usize,
}

pub enum Request {
    /// An agent coordination request (PROTOCOL.md §Agent coordination).
    Coord(CoordOp),
    SubscribeTopic(TopicFrame),
    UnsubscribeTopic(TopicFrame),
    Search(SearchFrame),
    Insert(InsertFrame),
    Delete(DeleteFrame),
    Subscribe(SubscribeRequest),
    Unsubscribe(UnsubscribeFrame),
    Ping,
    Auth(AuthFrame),
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Search(_) => "search",
            Request::Insert(_) => "insert",
            Request::Delete(_) => "delete",
            Request::Subscribe(_) => "subscribe",
            Request::Unsubscribe(_) => "unsubscribe",
            Request::Ping => "ping",
            Request::Auth(_) => "auth",
            Request::Coord(op) => op.name(),
            Request::SubscribeTopic(_) => "subscribe_topic",
            Request::UnsubscribeTopic(_) => "unsubscribe_topic",
        }
    }
}

/// A frame that could not be understood: the reply's `id` and the error.
pub struct BadFrame {
    pub id: Value,
    pub error: EngineError,
}

fn invalid(id: &Value, msg: impl Into<String>) -> BadFrame {
    BadFrame {
        id: id.clone(),
        error: EngineError::invalid(msg),
    }
}

/// Parses one text frame into a request and its id (`Value::Null` when none was given).
pub fn parse(text: &[u8]) -> Result<(Value, Request), BadFrame> {
    let head: Head = serde_json::from_slice(text).map_err(|e| BadFrame {
        id: Value::Null,
        error: EngineError::invalid(format!("malformed JSON frame: {e}")),
    })?;
    let id = match head.id {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        Some(_) => return Err(invalid(&Value::Null, "\"id\" must be a string or a number")),
    };
    let Some(kind) = head.kind else {
        return Err(invalid(&id, "a frame needs a \"type\""));
    };
    fn body<T: for<'de> Deserialize<'de>>(text: &[u8], id: &Value) -> Result<T, BadFrame> {
        serde_json::from_slice(text).map_err(|e| invalid(id, format!("bad frame: {e}")))
    }
    let req = match kind.as_str() {
        "search" => Request::Search(body(text, &id)?),
        "insert" | "upsert" => Request::Insert(body(text, &id)?),
        "delete" => Request::Delete(body(text, &id)?),
        "subscribe" => Request::Subscribe(body(text, &id)?),
        "unsubscribe" => Request::Unsubscribe(body(text, &id)?),
        "ping" => {
            body::<Empty>(text, &id)?;
            Request::Ping
        }
        "auth" => Request::Auth(body(text, &id)?),
        "subscribe_topic" => Request::SubscribeTopic(body(text, &id)?),
        "unsubscribe_topic" => Request::UnsubscribeTopic(body(text, &id)?),
        k if CoordOp::is_coordination(k) => Request::Coord(body(text, &id)?),
        other => return Err(invalid(&id, format!("unknown frame type {other:?}"))),
    };
    Ok((id, req))
}

// ---------- server frames ----------

#[derive(Serialize)]
pub struct ErrorFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a Value,
    pub code: &'a str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

pub fn error_frame<'a>(id: &'a Value, e: &ApiError) -> ErrorFrame<'a> {
    ErrorFrame {
        kind: "error",
        id,
        code: e.code(),
        message: e.to_string(),
        retry_after_ms: e.retry_after_ms(),
    }
}

#[derive(Serialize)]
pub struct ResultFrame<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a Value,
    #[serde(flatten)]
    pub hit: RankedHit<'a>,
}

pub fn result_frame<'a>(id: &'a Value, query_id: u64, rank: usize, h: &'a Hit) -> ResultFrame<'a> {
    ResultFrame {
        kind: "result",
        id,
        hit: ranked_hit(query_id, rank, h),
    }
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_echoed_even_for_bad_frames() {
        let (id, req) = parse(br#"{"type":"ping","id":7}"#).ok().unwrap();
        assert_eq!(id, 7);
        assert!(matches!(req, Request::Ping));
        let bad = parse(br#"{"type":"search","id":"a","k":"x"}"#)
            .err()
            .unwrap();
        assert_eq!(bad.id, "a");
        assert_eq!(bad.error.code(), "invalid_argument");
        let bad = parse(br#"{"type":"nope","id":"b"}"#).err().unwrap();
        assert_eq!(bad.id, "b");
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"type":"ping","id":[1]}"#).is_err());
        let (_, req) = parse(br#"{"type":"search","query":[1,2],"k":3}"#)
            .ok()
            .unwrap();
        let Request::Search(s) = req else {
            panic!("expected a search")
        };
        assert!(s.stream && s.k == 3);
    }
}
