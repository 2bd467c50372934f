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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde_json::{json, Value};

use super::agents::{Agent, AgentStatus, Agents};
use super::memory::MemoryEntry;
use super::ops::{CoordOp, Reply};
use super::store::{Change, State, Store};
use super::tasks::{parse_priority, Task, TaskStatus};
use super::topics::TopicMessage;
use super::vectors::{point_id, MemoryVectors};
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
    agents: Agents,
    /// topic → streams subscribed to it.
    topics: HashMap<String, HashMap<u64, Arc<dyn CoordSink>>>,
    /// swarm → member streams (registered agents' streams).
    swarms: HashMap<String, HashMap<u64, Arc<dyn CoordSink>>>,
    /// Connected agentic-flow federation clients.
    pub(super) federation: HashMap<u64, Arc<dyn CoordSink>>,
}

impl Coordinator {
    /// Loads a tenant's state from `dir`.
    pub fn open(
        dir: PathBuf,
        cfg: CoordConfig,
        fsync: FsyncMode,
        region: String,
        vectors: MemoryVectors,
    ) -> Result<Self> {
        let (store, state) = Store::open(&dir, fsync, cfg.topic_history)?;
        let last_rev = state.memory.all().filter_map(|e| e.rev).max().unwrap_or(0);
        let mut agents = Agents::default();
        // Agents holding tasks at the last stop get a fresh lease: they are offline (their
        // tasks back to pending) unless they heartbeat within the timeout.
        let now = now_ms();
        for holder in state.tasks.holders() {
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
        Ok(Coordinator {
            cfg,
            region,
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

    fn task_or_404(&self, id: &str) -> Result<&Task> {
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
                let agent = self.agents.register(Agent {
                    agent_id,
                    agent_type,
                    swarm: swarm.clone(),
                    status: AgentStatus::Online,
                    capabilities,
                    metadata,
                    region: self.region.clone(),
                    last_heartbeat: now,
                    metrics: None,
                });
                let body = json!({ "agent": agent });
                let members = self.swarms.entry(swarm).or_default();
                Self::tell(members, "agent_joined", &body);
                if let Some((id, sink)) = sink {
                    members.insert(id, sink);
                }
                Ok(Reply::new("agent_registered", body))
            }
            CoordOp::Heartbeat { agent_id, metrics } => {
                if !self.agents.heartbeat(&agent_id, metrics, now) {
                    return Err(EngineError::NotFound(format!("agent {agent_id:?}")));
                }
                Ok(Reply::new("heartbeat_ack", json!({ "agent_id": agent_id })))
            }
            CoordOp::Agents { swarm, status } => {
                let agents = self.agents.list(swarm.as_deref(), status);
                Ok(Reply::new("agents", json!({ "agents": agents })))
            }
            CoordOp::TaskCreate {
                task_id,
                task_type,
                priority,
                task_data,
                embedding,
                required_capabilities,
                max_retries,
                swarm,
            } => {
                let task_id = task_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                Self::check_name("task_id", &task_id)?;
                Self::check_name("swarm", &swarm)?;
                self.check_value("task_data", &task_data)?;
                if let Some(e) = &embedding {
                    self.check_vector(e)?;
                }
                if self.state.tasks.len() >= self.cfg.max_tasks {
                    return Err(EngineError::invalid(format!(
                        "at most {} tasks per tenant (coordination.max_tasks)",
                        self.cfg.max_tasks
                    )));
                }
                if self.state.tasks.get(&task_id).is_some() {
                    return Err(EngineError::Conflict(format!(
                        "task {task_id:?} already exists"
                    )));
                }
                let task = Task {
                    task_id: task_id.clone(),
                    task_type,
                    swarm,
                    priority: parse_priority(priority.as_ref())?,
                    status: TaskStatus::Pending,
                    task_data,
                    embedding,
                    required_capabilities,
                    assigned_to: None,
                    retries: 0,
                    max_retries: max_retries.min(100),
                    result: None,
                    error: None,
                    created_at: now,
                    updated_at: now,
                    queue_order: self.state.tasks.next_order(),
                };
                self.commit(vec![Change::Task(task)])?;
                Ok(Reply::new("task_created", json!({ "task_id": task_id })))
            }
            CoordOp::TaskClaim { agent_id } => {
                let agent = self
                    .agents
                    .get(&agent_id)
                    .filter(|a| a.status == AgentStatus::Online)
                    .ok_or_else(|| EngineError::NotFound(format!("online agent {agent_id:?}")))?;
                let caps: HashSet<String> = agent.capabilities.iter().cloned().collect();
                let swarm = agent.swarm.clone();
                // Tried on a copy: the claim is applied only once it is durable.
                let Some(task) = self
                    .state
                    .tasks
                    .peek_claim(&swarm, &caps, self.cfg.claim_scan)
                else {
                    return Ok(Flow::Now(Reply::new("no_task", json!({}))));
                };
                let task = task.assign(&agent_id, now);
                self.commit(vec![Change::Task(task.clone())])?;
                Ok(Reply::new(
                    "task_assigned",
                    json!({ "task": task.public() }),
                ))
            }
            CoordOp::TaskComplete {
                task_id,
                agent_id,
                result,
            } => {
                self.check_value("result", &result)?;
                let task = self
                    .task_or_404(&task_id)?
                    .complete(&agent_id, result, now)?;
                self.commit(vec![Change::Task(task.clone())])?;
                Ok(Reply::new(
                    "task_completed",
                    json!({ "task": task.public() }),
                ))
            }
            CoordOp::TaskFail {
                task_id,
                agent_id,
                error,
            } => {
                let tail = self.state.tasks.next_order();
                let error = error.chars().take(4096).collect();
                let task = self
                    .task_or_404(&task_id)?
                    .fail(&agent_id, error, tail, now)?;
                self.commit(vec![Change::Task(task.clone())])?;
                Ok(Reply::new("task_failed", json!({ "task": task.public() })))
            }
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
            CoordOp::Publish {
                topic,
                ordering_key,
                payload,
            } => {
                Self::check_name("topic", &topic)?;
                self.check_value("payload", &payload)?;
                let m = TopicMessage {
                    seq: self.state.topics.next_seq(&topic),
                    topic: topic.clone(),
                    ordering_key,
                    payload,
                    from: from.to_owned(),
                    published_at: now,
                };
                self.commit(vec![Change::Message(m.clone())])?;
                let (t, seq) = (topic.clone(), m.seq);
                self.after_sync(ctx, move |act, _| {
                    if let Some(subs) = act.topics.get_mut(&t) {
                        let body = serde_json::to_value(&m).unwrap_or(Value::Null);
                        Self::tell(subs, "message", &body);
                    }
                });
                Ok(Reply::new("published", json!({"topic": topic, "seq": seq})))
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
                };
                return self.memory_store(entry, embedding, ctx);
            }
            CoordOp::MemoryRetrieve { namespace, key } => self.memory_retrieve(&namespace, &key),
            CoordOp::MemoryDelete { namespace, key } => self.memory_delete(namespace, key, ctx),
            CoordOp::MemorySearch {
                namespace,
                vector,
                pattern,
                k,
            } => return self.memory_search(namespace, vector, pattern, k),
        };
        reply.map(Flow::Now)
    }

    /// Silent agents go offline (tasks back to pending, swarm told); expired memory goes.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        for agent in self.agents.expire(now, self.cfg.heartbeat_timeout_ms) {
            let released: Vec<Change> = self
                .state
                .tasks
                .all()
                .filter(|t| {
                    t.status == TaskStatus::Assigned
                        && t.assigned_to.as_deref() == Some(agent.agent_id.as_str())
                })
                .map(|t| Change::Task(t.release(now)))
                .collect();
            if let Err(e) = self.commit(released) {
                tracing::error!(error = %e, agent = %agent.agent_id, "returning an offline agent's tasks failed; retried next sweep");
                continue;
            }
            self.after_sync(ctx, move |act, _| {
                if let Some(members) = act.swarms.get_mut(&agent.swarm) {
                    Self::tell(members, "agent_left", &json!({"agent_id": agent.agent_id}));
                }
            });
        }
        self.agents
            .forget_offline(now, self.cfg.heartbeat_timeout_ms.saturating_mul(10));
        let expired: Vec<&MemoryEntry> = self
            .state
            .memory
            .all()
            .filter(|e| e.expires_at.is_some_and(|x| x <= now))
            .collect();
        let points: Vec<String> = expired
            .iter()
            .filter(|e| e.rev.is_some())
            .map(|e| point_id(&e.namespace, &e.key))
            .collect();
        let forget: Vec<Change> = expired
            .into_iter()
            .map(|e| Change::Forget {
                namespace: e.namespace.clone(),
                key: e.key.clone(),
            })
            .collect();
        match self.commit(forget) {
            Ok(()) => self.after_sync(ctx, move |act, ctx| act.forget_points(points, ctx)),
            Err(e) => {
                tracing::error!(error = %e, "forgetting expired memory failed; retried next sweep")
            }
        }
    }
}

impl Actor for Coordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.cfg.mailbox);
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
