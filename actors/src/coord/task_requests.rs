//! The coordination requests that change tasks or topics (create, claim, complete, fail,
//! publish), each a `Planner` (`share`): planned on the coordinator's copy, then committed
//! locally or proposed to the region's shared state first. Kept apart from `actor` so that the
//! actor does not depend on how changes are proposed.

use std::collections::HashSet;

use actix::prelude::*;
use serde_json::json;

use super::actor::{Coordinator, Flow};
use super::agents::AgentStatus;
use super::ops::{CoordOp, Reply};
use super::share::{Plan, Planner};
use super::shared::Expect;
use super::store::Change;
use super::tasks::{parse_priority, Task, TaskStatus};
use super::topics::TopicMessage;
use crate::error::{EngineError, Result};

/// How many pending tasks one claim proposes at once (see `TaskClaim`).
const CLAIM_CANDIDATES: usize = 8;

/// A planner that moves one task from the version held here to what `step` makes of it (given
/// a place at the queue's tail when `requeues`, the task and the time) and answers `kind` with
/// the task after.
fn one_task(
    task_id: String,
    kind: &'static str,
    requeues: bool,
    step: impl Fn(u64, &Task, u64) -> Result<Task> + 'static,
) -> Planner {
    Box::new(move |act, now| {
        let tail = if requeues { act.next_queue_order() } else { 0 };
        let held = act.task_or_404(&task_id)?;
        let expect = Expect::Version(held.version);
        let task = step(tail, held, now)?;
        let body = json!({ "task": task.public() });
        Ok(Plan::new(
            vec![Change::Task(task)],
            vec![expect],
            move |_, _, _| Ok(Reply::new(kind, body)),
        ))
    })
}

impl Coordinator {
    pub(super) fn serve_change(
        &mut self,
        from: &str,
        op: CoordOp,
        now: u64,
        ctx: &mut Context<Self>,
    ) -> Result<Flow> {
        match op {
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
                let task = Task {
                    task_id,
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
                    queue_order: 0,
                    version: 0,
                };
                let planner: Planner = Box::new(move |act, _| {
                    let id = task.task_id.clone();
                    if act.state.tasks.len() >= act.cfg.max_tasks {
                        return Err(EngineError::invalid(format!(
                            "at most {} tasks per tenant (coordination.max_tasks)",
                            act.cfg.max_tasks
                        )));
                    }
                    if act.state.tasks.get(&id).is_some() {
                        return Err(EngineError::Conflict(format!("task {id:?} already exists")));
                    }
                    let task = Task {
                        queue_order: act.next_queue_order(),
                        ..task.clone()
                    };
                    Ok(Plan::new(
                        vec![Change::Task(task)],
                        vec![Expect::Version(0)],
                        move |_, _, _| Ok(Reply::new("task_created", json!({ "task_id": id }))),
                    ))
                });
                Ok(self.propose(planner, ctx))
            }
            CoordOp::TaskClaim { agent_id } => {
                let planner: Planner = Box::new(move |act, now| {
                    let agent = act
                        .agents
                        .get(&agent_id)
                        .filter(|a| a.status == AgentStatus::Online)
                        .ok_or_else(|| {
                            EngineError::NotFound(format!("online agent {agent_id:?}"))
                        })?;
                    let caps: HashSet<String> = agent.capabilities.iter().cloned().collect();
                    // Planned on a copy: the claim is applied only once accepted and durable.
                    // A few candidates at once: with other instances claiming from the same
                    // queue, the first still pending in the shared state is the one taken.
                    let (changes, expect): (Vec<Change>, Vec<Expect>) = act
                        .state
                        .tasks
                        .claimable(&agent.swarm, &caps, act.cfg.claim_scan)
                        .take(CLAIM_CANDIDATES)
                        .map(|t| {
                            let expect = Expect::Version(t.version);
                            (Change::Task(t.assign(&agent_id, now)), expect)
                        })
                        .unzip();
                    if changes.is_empty() {
                        return Ok(Plan::reply(Reply::new("no_task", json!({}))));
                    }
                    let plan = Plan::new(changes, expect, |_, _, done| match done.first() {
                        Some(Change::Task(t)) => {
                            Ok(Reply::new("task_assigned", json!({ "task": t.public() })))
                        }
                        _ => Err(EngineError::Internal("a claim lost its task".into())),
                    });
                    Ok(plan.first_of())
                });
                Ok(self.propose(planner, ctx))
            }
            CoordOp::TaskComplete {
                task_id,
                agent_id,
                result,
            } => {
                self.check_value("result", &result)?;
                let key = format!("t/{task_id}");
                let planner = one_task(task_id, "task_completed", false, move |_, held, now| {
                    held.complete(&agent_id, result.clone(), now)
                });
                Ok(self.propose_on(key, planner, ctx))
            }
            CoordOp::TaskFail {
                task_id,
                agent_id,
                error,
            } => {
                let error: String = error.chars().take(4096).collect();
                let key = format!("t/{task_id}");
                let planner = one_task(task_id, "task_failed", true, move |tail, held, now| {
                    held.fail(&agent_id, error.clone(), tail, now)
                });
                Ok(self.propose_on(key, planner, ctx))
            }
            CoordOp::Publish {
                topic,
                ordering_key,
                payload,
            } => {
                Self::check_name("topic", &topic)?;
                self.check_value("payload", &payload)?;
                let m = TopicMessage {
                    seq: 0,
                    topic,
                    ordering_key,
                    payload,
                    from: from.to_owned(),
                    published_at: now,
                };
                let planner: Planner = Box::new(move |act, _| {
                    // Locally the next sequence; the shared state gives its own.
                    let m = TopicMessage {
                        seq: act.state.topics.next_seq(&m.topic),
                        ..m.clone()
                    };
                    Ok(Plan::new(
                        vec![Change::Message(m)],
                        vec![Expect::Any],
                        |_, _, done| match done.first() {
                            Some(Change::Message(m)) => Ok(Reply::new(
                                "published",
                                json!({"topic": m.topic, "seq": m.seq}),
                            )),
                            _ => Err(EngineError::Internal("a publish lost its message".into())),
                        },
                    ))
                });
                Ok(self.propose(planner, ctx))
            }
            CoordOp::AgentRegister { .. }
            | CoordOp::Heartbeat { .. }
            | CoordOp::Agents { .. }
            | CoordOp::TaskStatus { .. }
            | CoordOp::SimilarTasks { .. }
            | CoordOp::TopicMessages { .. }
            | CoordOp::MemoryStore { .. }
            | CoordOp::MemoryRetrieve { .. }
            | CoordOp::MemoryDelete { .. }
            | CoordOp::MemorySearch { .. } => Err(EngineError::Internal(
                "a request that changes nothing was routed as a change".into(),
            )),
        }
    }
}
