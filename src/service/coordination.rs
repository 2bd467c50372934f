//! Agent coordination through the tenant's coordinator: requests from WebSocket frames, the REST
//! mirror and the agentic-flow federation endpoint (and later MCP tools), each under the request
//! deadline and the caller's tenant — a tenant reaches only its own coordinator, so swarms, tasks,
//! topics and memory are isolated exactly as collections are.

use std::sync::Arc;

use ruvector_actors::{Call, CoordOp, CoordSink, Reply, SubscribeTopic, Unsubscribe};
use ruvector_actors::{Coordinator, Coordinators, EngineError};
use ruvector_actors::{FedJoin, FedPull, FedPush, VectorClock};
use serde_json::Value;

use super::call::deadline;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;
use crate::supervise::Class;

/// A stream's identity and event sink, for requests that subscribe it to something.
pub type StreamSink = (u64, Arc<dyn CoordSink>);

/// The rate-limit class of a request: reads are reads, everything else writes.
pub fn class(op: &CoordOp) -> Class {
    match op {
        CoordOp::Agents { .. }
        | CoordOp::TaskStatus { .. }
        | CoordOp::SimilarTasks { .. }
        | CoordOp::TopicMessages { .. }
        | CoordOp::MemoryRetrieve { .. }
        | CoordOp::MemorySearch { .. } => Class::Read,
        CoordOp::AgentRegister { .. }
        | CoordOp::Heartbeat { .. }
        | CoordOp::TaskCreate { .. }
        | CoordOp::TaskClaim { .. }
        | CoordOp::TaskComplete { .. }
        | CoordOp::TaskFail { .. }
        | CoordOp::Publish { .. }
        | CoordOp::MemoryStore { .. }
        | CoordOp::MemoryDelete { .. } => Class::Write,
    }
}

async fn coordinator(
    app: &AppState,
    caller: &Principal,
) -> Result<actix::Addr<Coordinator>, ApiError> {
    let c: &Coordinators = &app.coordinators;
    deadline(app, async { Ok(c.get(caller.tenant.as_deref()).await?) }).await
}

/// Serves one request.
pub async fn call(
    app: &AppState,
    caller: &Principal,
    op: CoordOp,
    sink: Option<StreamSink>,
) -> Result<Reply, ApiError> {
    let addr = coordinator(app, caller).await?;
    let msg = Call {
        from: caller.id.to_string(),
        op,
        sink,
    };
    deadline(app, async {
        Ok(addr.send(msg).await.map_err(EngineError::from)??)
    })
    .await
}

/// Subscribes a stream to a topic; the last `last` messages come back to send first.
pub async fn subscribe_topic(
    app: &AppState,
    caller: &Principal,
    topic: String,
    last: usize,
    sink: StreamSink,
) -> Result<Vec<Value>, ApiError> {
    let addr = coordinator(app, caller).await?;
    deadline(app, async {
        Ok(addr
            .send(SubscribeTopic { topic, last, sink })
            .await
            .map_err(EngineError::from)??)
    })
    .await
}

/// Ends a stream's topic subscription (`Some`) or all it has with the coordinator (`None`).
pub async fn unsubscribe(
    app: &AppState,
    caller: &Principal,
    stream: u64,
    topic: Option<String>,
) -> Result<bool, ApiError> {
    let addr = coordinator(app, caller).await?;
    deadline(app, async {
        Ok(addr
            .send(Unsubscribe { stream, topic })
            .await
            .map_err(EngineError::from)?)
    })
    .await
}

/// A reply or an event as one JSON object: its `type` first, then its body's fields.
pub fn frame(kind: &str, body: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("type".into(), Value::from(kind));
    if let Value::Object(o) = body {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

/// A reply as one JSON object (see `frame`).
pub fn reply_json(r: &Reply) -> Value {
    frame(r.kind, &r.body)
}

/// Parses a request from its JSON object (a frame; a REST body with its path's fields added).
pub fn parse(kind: &str, mut v: Value) -> Result<CoordOp, ApiError> {
    match v.as_object_mut() {
        Some(o) => {
            o.insert("type".into(), Value::from(kind));
        }
        None => return Err(ApiError::invalid("the request must be a JSON object")),
    }
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("{kind}: {e}")))
}

/// A federation client joins its tenant (it hears the other clients' pushes).
pub async fn fed_join(
    app: &AppState,
    caller: &Principal,
    sink: StreamSink,
) -> Result<(), ApiError> {
    let addr = coordinator(app, caller).await?;
    let (stream, sink) = sink;
    deadline(app, async {
        Ok(addr
            .send(FedJoin { stream, sink })
            .await
            .map_err(EngineError::from)?)
    })
    .await
}

/// The episodes `clock` does not cover (newest first, at most 100) and the merged clock.
pub async fn fed_pull(
    app: &AppState,
    caller: &Principal,
    clock: VectorClock,
) -> Result<(Vec<Value>, VectorClock), ApiError> {
    let addr = coordinator(app, caller).await?;
    deadline(app, async {
        Ok(addr
            .send(FedPull { clock })
            .await
            .map_err(EngineError::from)??)
    })
    .await
}

/// Stores a federation client's episodes (durably) and re-broadcasts them to the tenant's other
/// clients.
pub async fn fed_push(
    app: &AppState,
    caller: &Principal,
    stream: u64,
    agent_id: String,
    clock: VectorClock,
    data: Vec<Value>,
) -> Result<(), ApiError> {
    let addr = coordinator(app, caller).await?;
    let msg = FedPush {
        stream,
        agent_id,
        clock,
        data,
    };
    deadline(app, async {
        Ok(addr.send(msg).await.map_err(EngineError::from)??)
    })
    .await
}
