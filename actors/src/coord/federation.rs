//! agentic-flow's federation protocol (`FederationHubClient`, PROTOCOL.md §federation) on a
//! tenant's coordinator: connected clients join, `push` stores episodes as the tenant's memory
//! (namespace `episodes`, durable like any memory) and re-broadcasts them to the tenant's other
//! clients, `pull` answers the episodes a client's vector clock does not cover. An episode stored
//! from agent X's push at X's clock value c is covered when the client's clock has X ≥ c.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Map, Value};

use super::actor::{event_text, now_ms, CoordSink, Coordinator, Flow};
use super::memory::MemoryEntry;
use super::ops::Reply;
use super::share::{Plan, Planner};
use super::shared::Expect;
use super::store::Change;
use crate::error::{EngineError, Result};

/// The memory namespace episodes are stored in.
pub const EPISODES: &str = "episodes";
/// Most episodes one pull answers (newest first).
const PULL_LIMIT: usize = 100;
/// Most episodes one push may carry.
const PUSH_LIMIT: usize = 1000;

pub type VectorClock = HashMap<String, u64>;

/// A federation client joined (its stream hears the tenant's other clients' pushes).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FedJoin {
    pub stream: u64,
    pub sink: Arc<dyn CoordSink>,
}

/// The episodes `clock` does not cover, and the merged clock.
#[derive(Message)]
#[rtype(result = "Result<(Vec<Value>, VectorClock)>")]
pub struct FedPull {
    pub clock: VectorClock,
}

/// Stores a client's episodes and re-broadcasts them.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct FedPush {
    pub stream: u64,
    pub agent_id: String,
    pub clock: VectorClock,
    pub data: Vec<Value>,
}

/// The fields of a stored episode row, as the reference hub returns them.
const FIELDS: [&str; 9] = [
    "sessionId",
    "task",
    "input",
    "output",
    "reward",
    "critique",
    "success",
    "tokensUsed",
    "latencyMs",
];

fn covered(row: &Value, clock: &VectorClock) -> bool {
    let Some(agent) = row["agentId"].as_str() else {
        return false;
    };
    let at = row["vectorClock"][agent].as_u64().unwrap_or(0);
    clock.get(agent).is_some_and(|c| *c >= at)
}

impl Handler<FedJoin> for Coordinator {
    type Result = ();

    fn handle(&mut self, j: FedJoin, _: &mut Self::Context) {
        self.federation.insert(j.stream, j.sink);
    }
}

impl Handler<FedPull> for Coordinator {
    type Result = Result<(Vec<Value>, VectorClock)>;

    fn handle(&mut self, p: FedPull, ctx: &mut Self::Context) -> Self::Result {
        // What a pull answers must be durable.
        self.flush(ctx)?;
        let now = now_ms();
        let mut missing: Vec<&MemoryEntry> = self
            .state
            .memory
            .entries_of(EPISODES, now)
            .filter(|e| !covered(&e.value, &p.clock))
            .collect();
        // Keys start with the push time and the episode's place in it: newest first.
        missing.sort_by(|a, b| b.key.cmp(&a.key));
        let data = missing
            .into_iter()
            .take(PULL_LIMIT)
            .map(|e| e.value.clone())
            .collect();
        let mut clock = p.clock;
        for e in self.state.memory.entries_of(EPISODES, now) {
            for (agent, v) in e.value["vectorClock"].as_object().into_iter().flatten() {
                let c = clock.entry(agent.clone()).or_insert(0);
                *c = (*c).max(v.as_u64().unwrap_or(0));
            }
        }
        Ok((data, clock))
    }
}

impl Handler<FedPush> for Coordinator {
    type Result = ResponseActFuture<Self, Result<()>>;

    fn handle(&mut self, p: FedPush, ctx: &mut Self::Context) -> Self::Result {
        if p.data.len() > PUSH_LIMIT {
            return Box::pin(fut::ready(Err(EngineError::invalid(format!(
                "at most {PUSH_LIMIT} episodes per push"
            )))));
        }
        let planner: Planner = Box::new(move |act, now| {
            if act.state.memory.len() + p.data.len() > act.cfg.max_memory_entries {
                return Err(EngineError::invalid(format!(
                    "at most {} memory entries per tenant (coordination.max_memory_entries)",
                    act.cfg.max_memory_entries
                )));
            }
            let clock = json!(p.clock);
            let mut changes = Vec::with_capacity(p.data.len());
            for (i, episode) in p.data.iter().enumerate() {
                let Some(fields) = episode.as_object() else {
                    return Err(EngineError::invalid("an episode must be a JSON object"));
                };
                let id = format!(
                    "{now:013}-{i:04}-{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                );
                let mut row = Map::new();
                row.insert("id".into(), Value::from(id.clone()));
                row.insert("agentId".into(), Value::from(p.agent_id.clone()));
                for f in FIELDS {
                    row.insert(f.into(), fields.get(f).cloned().unwrap_or(Value::Null));
                }
                row.insert("vectorClock".into(), clock.clone());
                row.insert("createdAt".into(), Value::from(now));
                let row = Value::Object(row);
                act.check_value("an episode", &row)?;
                changes.push(Change::Memory(MemoryEntry {
                    namespace: EPISODES.into(),
                    key: id,
                    value: row,
                    rev: None,
                    created_at: now,
                    expires_at: None,
                    version: 0,
                }));
            }
            let expect = vec![Expect::Any; changes.len()];
            let frame = event_text(
                "push",
                &json!({"agentId": p.agent_id, "data": p.data, "timestamp": now}),
            );
            let stream = p.stream;
            Ok(Plan::new(changes, expect, move |act, ctx, _| {
                // The other clients hear of it once it is durable.
                act.after_sync(ctx, move |act, _| {
                    act.federation
                        .retain(|s, sink| *s == stream || sink.deliver("push", &frame));
                });
                Ok(Reply::new("pushed", json!({})))
            }))
        });
        match self.propose(planner, ctx) {
            Flow::Now(_) => Box::pin(fut::ready(Ok(()))),
            Flow::Later(later) => Box::pin(later.map(|r, _, _| r.map(|_| ()))),
        }
    }
}
