//! A tenant's tasks (PROTOCOL.md §Agent coordination): the task objects and, per swarm, the
//! pending queue — highest priority first, FIFO within a priority — that claims take from. Pure
//! state (no I/O, no clock of its own), so exclusivity, ordering, retries and leases are tested
//! directly; the coordinator makes every change durable before it is answered.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Assigned,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    pub task_type: String,
    pub swarm: String,
    pub priority: u8,
    pub status: TaskStatus,
    pub task_data: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    pub required_capabilities: Vec<String>,
    pub assigned_to: Option<String>,
    pub retries: u32,
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    /// Position within its priority (FIFO; a retried task goes to the tail). Kept durable so a
    /// restart keeps the order.
    #[serde(default)]
    pub queue_order: u64,
    /// Its version in the region's shared state (`shared`; 0 when coordination is local).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
}

pub(super) fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Task {
    /// Assigned to `agent`.
    pub fn assign(&self, agent: &str, now: u64) -> Task {
        let mut t = self.clone();
        t.status = TaskStatus::Assigned;
        t.assigned_to = Some(agent.to_owned());
        t.updated_at = now;
        t
    }

    /// `conflict` unless `agent` holds the task.
    pub fn held_by(&self, agent: &str) -> Result<(), EngineError> {
        if self.status != TaskStatus::Assigned || self.assigned_to.as_deref() != Some(agent) {
            return Err(EngineError::Conflict(format!(
                "task {:?} is not assigned to agent {agent:?} (status {:?})",
                self.task_id, self.status
            )));
        }
        Ok(())
    }

    /// Completed by its holder.
    pub fn complete(&self, agent: &str, result: Value, now: u64) -> Result<Task, EngineError> {
        self.held_by(agent)?;
        let mut t = self.clone();
        t.status = TaskStatus::Completed;
        t.result = Some(result);
        t.updated_at = now;
        Ok(t)
    }

    /// Failed by its holder: back to pending at `tail` (the tail of its priority) while
    /// retries remain, else `failed`.
    pub fn fail(
        &self,
        agent: &str,
        error: String,
        tail: u64,
        now: u64,
    ) -> Result<Task, EngineError> {
        self.held_by(agent)?;
        let mut t = self.clone();
        t.retries += 1;
        t.error = Some(error);
        t.assigned_to = None;
        t.updated_at = now;
        if t.retries > t.max_retries {
            t.status = TaskStatus::Failed;
        } else {
            t.status = TaskStatus::Pending;
            t.queue_order = tail;
        }
        Ok(t)
    }

    /// Its holder went offline: pending again, in its old place.
    pub fn release(&self, now: u64) -> Task {
        let mut t = self.clone();
        t.status = TaskStatus::Pending;
        t.assigned_to = None;
        t.updated_at = now;
        t
    }

    /// The task as clients see it (no embedding, no queue position).
    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("embedding");
            o.remove("queue_order");
            o.remove("version");
        }
        v
    }
}

/// Parses a priority: 0–100, or low | medium | high | critical.
pub fn parse_priority(v: Option<&Value>) -> Result<u8, EngineError> {
    match v {
        None | Some(Value::Null) => Ok(50),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(p) if p <= 100 => Ok(p as u8),
            _ => Err(EngineError::InvalidArgument(
                "priority must be 0 to 100".into(),
            )),
        },
        Some(Value::String(s)) => match s.as_str() {
            "low" => Ok(25),
            "medium" => Ok(50),
            "high" => Ok(75),
            "critical" => Ok(100),
            other => Err(EngineError::InvalidArgument(format!(
                "priority {other:?}: use 0 to 100 or low, medium, high, critical"
            ))),
        },
        Some(Value::Bool(_) | Value::Array(_) | Value::Object(_)) => Err(
            EngineError::InvalidArgument("priority must be a number or a name".into()),
        ),
    }
}

type QueueKey = (Reverse<u8>, u64);

#[derive(Default)]
pub struct Tasks {
    tasks: HashMap<String, Task>,
    /// Per swarm: pending task ids by (priority descending, queue order).
    pending: HashMap<String, BTreeMap<QueueKey, String>>,
    next_order: u64,
}

fn key(t: &Task) -> QueueKey {
    (Reverse(t.priority), t.queue_order)
}

impl Tasks {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Puts a task in (a new one, or one loaded from disk), queueing it when pending.
    pub fn put(&mut self, t: Task) {
        if let Some(old) = self.tasks.get(&t.task_id) {
            if let Some(q) = self.pending.get_mut(&old.swarm) {
                q.remove(&key(old));
            }
        }
        self.next_order = self.next_order.max(t.queue_order + 1);
        if t.status == TaskStatus::Pending {
            self.pending
                .entry(t.swarm.clone())
                .or_default()
                .insert(key(&t), t.task_id.clone());
        }
        self.tasks.insert(t.task_id.clone(), t);
    }

    /// The next queue position (the tail of every priority).
    pub fn next_order(&mut self) -> u64 {
        let o = self.next_order;
        self.next_order += 1;
        o
    }

    /// Makes every later `next_order` come after `order` (taken from elsewhere).
    pub fn reserve_order(&mut self, order: u64) {
        self.next_order = self.next_order.max(order + 1);
    }

    /// Creates a task; `conflict` when the id is taken.
    pub fn create(&mut self, mut t: Task) -> Result<Task, EngineError> {
        if self.tasks.contains_key(&t.task_id) {
            return Err(EngineError::Conflict(format!(
                "task {:?} already exists",
                t.task_id
            )));
        }
        t.status = TaskStatus::Pending;
        t.queue_order = self.next_order();
        self.put(t.clone());
        Ok(t)
    }

    /// The first pending task of `swarm` the agent can do (highest priority first, FIFO within
    /// one), looking at no more than `max_scan` candidates. Nothing changes until the caller
    /// puts the assigned task back (`Task::assign`, then `put`).
    pub fn peek_claim<'a>(
        &'a self,
        swarm: &str,
        capabilities: &'a HashSet<String>,
        max_scan: usize,
    ) -> Option<&'a Task> {
        self.claimable(swarm, capabilities, max_scan).next()
    }

    /// The pending tasks of `swarm` the agent can do, in claim order, among the first
    /// `max_scan` (several instances propose a few at once: the first still pending wins).
    pub fn claimable<'a>(
        &'a self,
        swarm: &str,
        capabilities: &'a HashSet<String>,
        max_scan: usize,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        self.pending
            .get(swarm)
            .into_iter()
            .flat_map(|q| q.values())
            .take(max_scan)
            .filter_map(|id| self.tasks.get(id))
            .filter(|t| {
                t.required_capabilities
                    .iter()
                    .all(|c| capabilities.contains(c))
            })
    }

    /// Agents holding assigned tasks (after a restart their leases start afresh).
    pub fn holders(&self) -> HashSet<String> {
        self.tasks
            .values()
            .filter(|t| t.status == TaskStatus::Assigned)
            .filter_map(|t| t.assigned_to.clone())
            .collect()
    }

    /// The `k` tasks whose embeddings are nearest `query` (cosine), best first.
    pub fn similar(&self, query: &[f32], k: usize) -> Vec<(Task, f32)> {
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let qn = norm(query);
        let mut scored: Vec<(f32, &Task)> = self
            .tasks
            .values()
            .filter_map(|t| {
                let e = t.embedding.as_deref()?;
                if e.len() != query.len() {
                    return None;
                }
                let dot: f32 = e.iter().zip(query).map(|(a, b)| a * b).sum();
                let d = norm(e) * qn;
                Some((if d > 0.0 { dot / d } else { 0.0 }, t))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(k)
            .map(|(s, t)| (t.clone(), s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, priority: u8, caps: &[&str]) -> Task {
        Task {
            task_id: id.into(),
            task_type: "t".into(),
            swarm: "default".into(),
            priority,
            status: TaskStatus::Pending,
            task_data: json!({}),
            embedding: None,
            required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            assigned_to: None,
            retries: 0,
            max_retries: 1,
            result: None,
            error: None,
            created_at: 0,
            updated_at: 0,
            queue_order: 0,
            version: 0,
        }
    }

    fn caps(list: &[&str]) -> HashSet<String> {
        list.iter().map(|c| c.to_string()).collect()
    }

    /// What the coordinator does for a claim.
    fn claim(t: &mut Tasks, swarm: &str, agent: &str, c: &[&str]) -> Option<String> {
        let got = t.peek_claim(swarm, &caps(c), 100)?.assign(agent, 1);
        t.put(got.clone());
        Some(got.task_id)
    }

    #[test]
    fn claims_take_the_highest_priority_first_and_fifo_within_one() {
        let mut t = Tasks::default();
        for (id, p) in [("low", 25), ("a", 75), ("b", 75), ("crit", 100)] {
            t.create(task(id, p, &[])).expect("new");
        }
        let order: Vec<String> = (0..4)
            .filter_map(|_| claim(&mut t, "default", "x", &[]))
            .collect();
        assert_eq!(order, ["crit", "a", "b", "low"]);
        assert!(claim(&mut t, "default", "x", &[]).is_none());
        assert!(matches!(
            t.create(task("a", 1, &[])),
            Err(EngineError::Conflict(_))
        ));
    }

    #[test]
    fn a_claim_skips_tasks_the_agent_cannot_do_and_never_assigns_twice() {
        let mut t = Tasks::default();
        t.create(task("gpu", 90, &["gpu"])).expect("new");
        t.create(task("any", 10, &[])).expect("new");
        assert_eq!(
            claim(&mut t, "default", "cpu-agent", &["cpu"]).as_deref(),
            Some("any")
        );
        assert_eq!(
            claim(&mut t, "default", "gpu-agent", &["gpu", "cpu"]).as_deref(),
            Some("gpu")
        );
        assert!(claim(&mut t, "default", "gpu-agent", &["gpu"]).is_none());
        assert!(
            claim(&mut t, "other", "a", &[]).is_none(),
            "swarms are apart"
        );
    }

    #[test]
    fn failures_retry_at_the_tail_then_fail_and_only_the_holder_may_settle() {
        let mut t = Tasks::default();
        t.create(task("a", 50, &[])).expect("new");
        t.create(task("b", 50, &[])).expect("new");
        assert_eq!(claim(&mut t, "default", "x", &[]).as_deref(), Some("a"));
        let a = t.get("a").expect("a").clone();
        assert!(matches!(
            a.complete("y", json!(1), 2),
            Err(EngineError::Conflict(_))
        ));
        let tail = t.next_order();
        let failed = a.fail("x", "boom".into(), tail, 2).expect("held");
        assert_eq!((failed.status, failed.retries), (TaskStatus::Pending, 1));
        t.put(failed);
        // Retried: behind b now.
        assert_eq!(claim(&mut t, "default", "x", &[]).as_deref(), Some("b"));
        assert_eq!(claim(&mut t, "default", "x", &[]).as_deref(), Some("a"));
        let tail = t.next_order();
        let failed = t
            .get("a")
            .expect("a")
            .fail("x", "boom".into(), tail, 4)
            .expect("held");
        assert_eq!((failed.status, failed.retries), (TaskStatus::Failed, 2));
        t.put(failed);
        let tail = t.next_order();
        assert!(matches!(
            t.get("a").expect("a").fail("x", "again".into(), tail, 5),
            Err(EngineError::Conflict(_))
        ));
        let done = t
            .get("b")
            .expect("b")
            .complete("x", json!({"ok": true}), 6)
            .expect("held");
        t.put(done);
        assert!(matches!(
            t.get("b").expect("b").complete("x", json!(1), 7),
            Err(EngineError::Conflict(_))
        ));
    }

    #[test]
    fn a_released_task_returns_to_pending_in_its_place() {
        let mut t = Tasks::default();
        t.create(task("first", 50, &[])).expect("new");
        t.create(task("second", 50, &[])).expect("new");
        claim(&mut t, "default", "gone", &[]).expect("first");
        assert_eq!(t.holders(), caps(&["gone"]));
        let back = t.get("first").expect("first").release(2);
        t.put(back);
        assert_eq!(claim(&mut t, "default", "y", &[]).as_deref(), Some("first"));
    }

    #[test]
    fn priorities_parse_as_numbers_or_names() {
        assert_eq!(parse_priority(None).ok(), Some(50));
        assert_eq!(parse_priority(Some(&json!("critical"))).ok(), Some(100));
        assert_eq!(parse_priority(Some(&json!(7))).ok(), Some(7));
        assert!(parse_priority(Some(&json!(101))).is_err());
        assert!(parse_priority(Some(&json!("urgent"))).is_err());
    }
}
