//! `Coordinator`: one actor per tenant, owning its agents, tasks, topics and memory. It is the
//! only writer of that state, so a claim is exclusive by construction (one message at a time),
//! and every change is written to the log before it is applied — a change that cannot be
//! written is refused and leaves the state as it was — and durable before anything that depends
//! on it leaves the actor (`durable`: group commit). Once a second it sweeps:
//! silent agents go offline (their tasks back to pending, their swarm told), expired memory is
//! forgotten. Events (`agent_joined`, `agent_left`, topic `message`s) go to the streams that
//! asked for them through `CoordSink`s, which never block. Memory requests live in
//! `memory_requests` (those touching embeddings reach the vector index, so they are futures).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Value};

use super::agents::{Agent, AgentStatus, Agents};
use super::memory::MemoryEntry;
use super::ops::{CoordOp, Reply};
use super::shared::{SharedCoord, StreamPos};
use super::store::{State, Store};
use super::tasks::Task;
use super::vectors::MemoryVectors;
use crate::config::CoordConfig;
use crate::error::{EngineError, Result};
use crate::storage::FsyncMode;

/// Where a stream receives coordination events. Must not block; `false` = gone or full.
/// `frame` is the event's JSON text, rendered once for all receivers (`event_text`).
pub trait CoordSink: Send + Sync {
    fn deliver(&self, kind: &'static str, frame: &Arc<str>) -> bool;
}

/// An event as its JSON text, `{"type": kind, …body}`: rendered once, shared by every stream
/// it goes to (a swarm's or a topic's members can be thousands).
pub fn event_text(kind: &str, body: &Value) -> Arc<str> {
    let mut out = serde_json::Map::new();
    out.insert("type".into(), Value::from(kind));
    if let Value::Object(o) = body {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out).to_string().into()
}

/// One request of a caller (`from`: its id, recorded on published messages).
#[derive(Message)]
#[rtype(result = "Result<Reply>")]
pub struct Call {
    pub from: String,
    pub op: CoordOp,
    /// The calling stream, for the events its request subscribes it to (an agent's swarm).
    pub sink: Option<(u64, Arc<dyn CoordSink>)>,
}

/// Subscribes a stream to a topic; answers the last `last` messages.
#[derive(Message)]
#[rtype(result = "Result<Vec<Value>>")]
pub struct SubscribeTopic {
    pub topic: String,
    pub last: usize,
    pub sink: (u64, Arc<dyn CoordSink>),
}

/// Removes a stream's subscriptions (one topic, or all of them and its swarm membership).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Unsubscribe {
    pub stream: u64,
    pub topic: Option<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Work for a coordinator once the changes before it are durable (`durable`).
pub(super) type AfterSync = Box<dyn FnOnce(&mut Coordinator, &mut Context<Coordinator>) + Send>;

/// Something waiting for the log's next sync: a reply, or work that acts on the changes.
pub(super) enum Waiting {
    Reply(tokio::sync::oneshot::Sender<Result<Reply>>, Result<Reply>),
    Run(AfterSync),
}

/// How a request is answered: now, or by a future of the coordinator (memory embeddings).
pub(super) enum Flow {
    Now(Reply),
    Later(ResponseActFuture<Coordinator, Result<Reply>>),
}

pub struct Coordinator {
    pub(super) cfg: CoordConfig,
    region: String,
    /// The tenant's name (`_` without one), as the shared state knows it.
    pub(super) tenant: String,
    /// The region's shared state, when several instances serve the region (`shared`).
    pub(super) shared: Option<Arc<dyn SharedCoord>>,
    /// The coordination stream position the copy was loaded at (`None`: shared, not loaded).
    pub(super) loaded_at: Option<StreamPos>,
    /// Memory deletes seen lately: (namespace, key) → (version, when).
    pub(super) tombstones: HashMap<(String, String), (u64, Instant)>,
    pub(super) store: Store,
    pub(super) state: State,
    /// The tenant's memory collection (embeddings).
    pub(super) vectors: MemoryVectors,
    /// The last embedding revision handed out.
    pub(super) last_rev: u64,
    /// Replies and effects waiting for the log's next sync (`durable`).
    pub(super) waiting: Vec<Waiting>,
    pub(super) flush_queued: bool,
    /// A sync failed: the state is ahead of the disk and must not be snapshotted.
    pub(super) failed: bool,
    pub(super) agents: Agents,
    /// topic → streams subscribed to it.
    pub(super) topics: HashMap<String, HashMap<u64, Arc<dyn CoordSink>>>,
    /// swarm → member streams (registered agents' streams).
    pub(super) swarms: HashMap<String, HashMap<u64, Arc<dyn CoordSink>>>,
    /// Connected agentic-flow federation clients.
    pub(super) federation: HashMap<u64, Arc<dyn CoordSink>>,
}

impl Coordinator {
    /// Loads a tenant's state from `dir` (with `shared`, Redis's copy replaces it once started).
    pub fn open(
        dir: PathBuf,
        cfg: CoordConfig,
        fsync: FsyncMode,
        region: String,
        tenant: String,
        vectors: MemoryVectors,
        shared: Option<Arc<dyn SharedCoord>>,
    ) -> Result<Self> {
        let (store, state) = Store::open(&dir, fsync, cfg.topic_history)?;
        let last_rev = state.memory.all().filter_map(|e| e.rev).max().unwrap_or(0);
        let mut agents = Agents::default();
        // Agents holding tasks at the last stop get a fresh lease: they are offline (their
        // tasks back to pending) unless they heartbeat within the timeout.
        let now = now_ms();
        let holders = match shared {
            Some(_) => HashSet::new(),
            None => state.tasks.holders(),
        };
        for holder in holders {
            agents.register(Agent {
                agent_id: holder,
                agent_type: "unknown".into(),
                swarm: "default".into(),
                status: AgentStatus::Online,
                capabilities: Vec::new(),
                metadata: Value::Null,
                region: region.clone(),
                last_heartbeat: now,
                metrics: None,
            });
        }
        let loaded_at = match shared {
            Some(_) => None,
            None => Some((0, 0)),
        };
        Ok(Coordinator {
            cfg,
            region,
            tenant,
            shared,
            loaded_at,
            tombstones: HashMap::new(),
            store,
            state,
            vectors,
            last_rev,
            waiting: Vec::new(),
            flush_queued: false,
            failed: false,
            agents,
            topics: HashMap::new(),
            swarms: HashMap::new(),
            federation: HashMap::new(),
        })
    }

    pub(super) fn tell(
        members: &mut HashMap<u64, Arc<dyn CoordSink>>,
        kind: &'static str,
        body: &Value,
    ) {
        if members.is_empty() {
            return;
        }
        let frame = event_text(kind, body);
        members.retain(|_, sink| sink.deliver(kind, &frame));
    }

    pub(super) fn check_value(&self, what: &str, v: &Value) -> Result<()> {
        let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > self.cfg.max_value_bytes {
            return Err(EngineError::invalid(format!(
                "{what} of {size} bytes is over the limit of {} (coordination.max_value_bytes)",
                self.cfg.max_value_bytes
            )));
        }
        Ok(())
    }

    pub(super) fn check_name(what: &str, s: &str) -> Result<()> {
        if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
            return Err(EngineError::invalid(format!(
                "{what} must be 1 to 256 characters without control characters"
            )));
        }
        Ok(())
    }

    pub(super) fn check_vector(&self, v: &[f32]) -> Result<()> {
        if v.is_empty() || v.len() > self.cfg.max_dimension || v.iter().any(|x| !x.is_finite()) {
            return Err(EngineError::invalid(format!(
                "an embedding needs 1 to {} finite numbers",
                self.cfg.max_dimension
            )));
        }
        Ok(())
    }

    pub(super) fn task_or_404(&self, id: &str) -> Result<&Task> {
        self.state
            .tasks
            .get(id)
            .ok_or_else(|| EngineError::NotFound(format!("task {id:?}")))
    }

    fn serve(
        &mut self,
        from: &str,
        op: CoordOp,
        sink: Option<(u64, Arc<dyn CoordSink>)>,
        ctx: &mut Context<Self>,
    ) -> Result<Flow> {
        let now = now_ms();
        let reply = match op {
            CoordOp::AgentRegister {
                agent_id,
                agent_type,
                capabilities,
                swarm,
                metadata,
            } => {
                Self::check_name("agent_id", &agent_id)?;
                Self::check_name("swarm", &swarm)?;
                self.check_value("metadata", &metadata)?;
                if self.agents.get(&agent_id).is_none() && self.agents.len() >= self.cfg.max_agents
                {
                    return Err(EngineError::invalid(format!(
                        "at most {} agents per tenant (coordination.max_agents)",
                        self.cfg.max_agents
                    )));
                }
                let agent = Agent {
                    agent_id,
                    agent_type,
                    swarm,
                    status: AgentStatus::Online,
                    capabilities,
                    metadata,
                    region: self.region.clone(),
                    last_heartbeat: now,
                    metrics: None,
                };
                return Ok(self.register(agent, sink, ctx));
            }
            CoordOp::Heartbeat { agent_id, metrics } => {
                return self.heartbeat(agent_id, metrics, now, ctx);
            }
            CoordOp::Agents { swarm, status } => {
                let agents = self.agents.list(swarm.as_deref(), status);
                Ok(Reply::new("agents", json!({ "agents": agents })))
            }
            op @ (CoordOp::TaskCreate { .. }
            | CoordOp::TaskClaim { .. }
            | CoordOp::TaskComplete { .. }
            | CoordOp::TaskFail { .. }
            | CoordOp::Publish { .. }) => return self.serve_change(from, op, now, ctx),
            CoordOp::TaskStatus { task_id } => {
                let task = self.task_or_404(&task_id)?;
                Ok(Reply::new("task", json!({ "task": task.public() })))
            }
            CoordOp::SimilarTasks { embedding, k } => {
                self.check_vector(&embedding)?;
                let tasks: Vec<Value> = self
                    .state
                    .tasks
                    .similar(&embedding, k.min(self.cfg.max_k))
                    .into_iter()
                    .map(|(t, score)| json!({"task": t.public(), "score": score}))
                    .collect();
                Ok(Reply::new("similar_tasks", json!({ "tasks": tasks })))
            }
            CoordOp::TopicMessages { topic, last } => {
                let messages = self
                    .state
                    .topics
                    .last(&topic, last.min(self.cfg.topic_history));
                Ok(Reply::new(
                    "messages",
                    json!({"topic": topic, "messages": messages}),
                ))
            }
            CoordOp::MemoryStore {
                namespace,
                key,
                value,
                embedding,
                ttl,
            } => {
                let entry = MemoryEntry {
                    namespace,
                    key,
                    value,
                    rev: None,
                    created_at: now,
                    expires_at: ttl.map(|s| now.saturating_add(s.saturating_mul(1000))),
                    version: 0,
                };
                return self.memory_store(entry, embedding, ctx);
            }
            CoordOp::MemoryRetrieve { namespace, key } => self.memory_retrieve(&namespace, &key),
            CoordOp::MemoryDelete { namespace, key } => {
                return Ok(self.memory_delete(namespace, key, ctx))
            }
            CoordOp::MemorySearch {
                namespace,
                vector,
                pattern,
                k,
            } => return self.memory_search(namespace, vector, pattern, k),
        };
        reply.map(Flow::Now)
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.cfg.mailbox);
        self.load_shared(ctx);
        ctx.run_interval(
            Duration::from_millis(self.cfg.sweep_interval_ms.max(10)),
            |act, ctx| act.sweep(ctx),
        );
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if self.failed || self.flush(ctx).is_err() {
            return;
        }
        if self.store.since_snapshot() > 0 {
            if let Err(e) = self.store.snapshot(&self.state) {
                tracing::warn!(error = %e, "final coordination snapshot failed; the log holds everything");
            }
        }
    }
}

impl Handler<Call> for Coordinator {
    type Result = ResponseActFuture<Self, Result<Reply>>;

    fn handle(&mut self, c: Call, ctx: &mut Self::Context) -> Self::Result {
        let t = std::time::Instant::now();
        let name = c.op.name();
        let record = move |r: Result<Reply>| {
            metrics::histogram!("ruvector_coordination_seconds", "op" => name)
                .record(t.elapsed().as_secs_f64());
            r
        };
        let served = match self.serve(&c.from, c.op, c.sink, ctx) {
            Ok(Flow::Now(reply)) => self.answer(Ok(reply), ctx),
            Ok(Flow::Later(later)) => later,
            Err(e) => self.answer(Err(e), ctx),
        };
        Box::pin(served.map(move |r, _, _| record(r)))
    }
}

impl Handler<SubscribeTopic> for Coordinator {
    type Result = Result<Vec<Value>>;

    fn handle(&mut self, s: SubscribeTopic, ctx: &mut Self::Context) -> Result<Vec<Value>> {
        Self::check_name("topic", &s.topic)?;
        // The history answered must be durable.
        self.flush(ctx)?;
        let subs = self.topics.entry(s.topic.clone()).or_default();
        if subs.len() >= self.cfg.max_topic_subscribers {
            return Err(EngineError::invalid(format!(
                "at most {} subscribers per topic (coordination.max_topic_subscribers)",
                self.cfg.max_topic_subscribers
            )));
        }
        subs.insert(s.sink.0, s.sink.1);
        let last = self
            .state
            .topics
            .last(&s.topic, s.last.min(self.cfg.topic_history));
        Ok(last
            .into_iter()
            .map(|m| serde_json::to_value(m).unwrap_or(Value::Null))
            .collect())
    }
}

impl Handler<Unsubscribe> for Coordinator {
    type Result = bool;

    fn handle(&mut self, u: Unsubscribe, _: &mut Self::Context) -> bool {
        match u.topic {
            Some(topic) => self
                .topics
                .get_mut(&topic)
                .is_some_and(|subs| subs.remove(&u.stream).is_some()),
            None => {
                for subs in self.topics.values_mut().chain(self.swarms.values_mut()) {
                    subs.remove(&u.stream);
                }
                self.federation.remove(&u.stream);
                true
            }
        }
    }
}
