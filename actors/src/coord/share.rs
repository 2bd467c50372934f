//! How a coordinator changes state: every request that changes something is a `Planner`, a
//! function from the current state to the changes it wants (`Plan`). Locally the plan is
//! committed at once. With the region's shared state (`shared`) it is proposed to Redis first
//! — while the tenant's other requests wait — and committed locally only once accepted; a stale
//! answer (another instance changed the object) is adopted and the request planned again, a
//! bounded number of times. The same file applies what other instances changed (newer versions
//! only) and (re)loads the tenant's copy from Redis.

use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;

use super::actor::{now_ms, Coordinator, Flow, Waiting};
use super::agents::{AgentStatus, Agents};
use super::ops::Reply;
use super::shared::{ApplyShared, Committed, Expect, Loaded, Reload, SharedEvent};
use super::store::{Change, State};
use crate::error::{EngineError, Result};

/// What a request's reply is made of, once its changes are committed (with the versions and
/// sequences the shared state gave them). It may also act on the coordinator (tell streams,
/// queue work after the sync).
pub(super) type Answer =
    Box<dyn FnOnce(&mut Coordinator, &mut Context<Coordinator>, &[Change]) -> Result<Reply>>;

pub(super) struct Plan {
    pub changes: Vec<Change>,
    pub expect: Vec<Expect>,
    /// The changes are alternatives: only the first whose expectation holds applies.
    pub first_of: bool,
    pub answer: Answer,
}

impl Plan {
    pub fn new(
        changes: Vec<Change>,
        expect: Vec<Expect>,
        answer: impl FnOnce(&mut Coordinator, &mut Context<Coordinator>, &[Change]) -> Result<Reply>
            + 'static,
    ) -> Plan {
        Plan {
            changes,
            expect,
            first_of: false,
            answer: Box::new(answer),
        }
    }

    /// Alternatives: the first change whose expectation holds is the one applied.
    pub fn first_of(mut self) -> Plan {
        self.first_of = true;
        self
    }

    /// Nothing to change: just this reply.
    pub fn reply(r: Reply) -> Plan {
        Plan::new(Vec::new(), Vec::new(), move |_, _, _| Ok(r))
    }
}

/// Plans a request on the state as it is (`now`: the request's time).
pub(super) type Planner = Box<dyn FnMut(&mut Coordinator, u64) -> Result<Plan>>;

/// Where a request's result goes.
pub(super) type ReplyTo = tokio::sync::oneshot::Sender<Result<Reply>>;

/// How often a request is planned again after stale answers before it gives up (`conflict`).
pub(super) const ATTEMPTS: usize = 16;
/// How long a delete's version is remembered, so an older write still in flight on the stream
/// cannot bring the entry back (the stream delivers within milliseconds; a reload resets it).
const TOMBSTONE_KEEP: Duration = Duration::from_secs(120);

impl Coordinator {
    /// Runs a planned request; its reply once the changes are durable (and accepted).
    pub(super) fn propose(&mut self, planner: Planner, ctx: &mut Context<Self>) -> Flow {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.propose_into(planner, tx, ATTEMPTS, ctx);
        later(rx, self)
    }

    /// `propose` for a request about one object (`key`) whose plan may fail on this copy
    /// being behind (the object changed on another instance a moment ago): with the shared
    /// state, such a failure fetches the object and plans once more before it answers.
    pub(super) fn propose_on(
        &mut self,
        key: String,
        mut planner: Planner,
        ctx: &mut Context<Self>,
    ) -> Flow {
        let Some(shared) = self.shared.clone() else {
            return self.propose(planner, ctx);
        };
        match planner(self, now_ms()) {
            Err(EngineError::Conflict(_) | EngineError::NotFound(_)) => {}
            Ok(_) | Err(_) => return self.propose(planner, ctx),
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.wait(
            shared
                .fetch(&self.tenant, &key)
                .into_actor(self)
                .map(move |res, act, ctx| {
                    if let Ok(c) = res {
                        act.adopt(&c.key, c.change, c.version, ctx);
                    }
                    act.propose_into(planner, tx, ATTEMPTS, ctx);
                }),
        );
        later(rx, self)
    }

    pub(super) fn propose_into(
        &mut self,
        mut planner: Planner,
        tx: ReplyTo,
        attempts: usize,
        ctx: &mut Context<Self>,
    ) {
        let plan = match planner(self, now_ms()) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let shared = match &self.shared {
            Some(s) if !plan.changes.is_empty() => s.clone(),
            Some(_) | None => {
                let mut changes = plan.changes;
                if plan.first_of {
                    changes.truncate(1);
                }
                let r = self.settle(changes, plan.answer, ctx);
                self.reply_when_durable(tx, r, ctx);
                return;
            }
        };
        if self.loaded_at.is_none() {
            let _ = tx.send(Err(EngineError::Unavailable(
                "the region's shared coordination state is unreachable (its Redis); changes wait until it is back".into(),
            )));
            return;
        }
        let asked = shared.commit(
            &self.tenant,
            plan.changes.clone(),
            plan.expect,
            plan.first_of,
        );
        let (changes, answer) = (plan.changes, plan.answer);
        // `wait`: the tenant's other requests queue until Redis has answered, so this instance
        // never plans on a state it has already changed.
        ctx.wait(asked.into_actor(self).map(move |res, act, ctx| match res {
            Ok(Committed::Done {
                versions,
                seqs,
                chosen,
            }) => {
                let changes = match chosen {
                    Some(i) => changes.into_iter().skip(i).take(1).collect(),
                    None => changes,
                };
                let changes = stamp(changes, &versions, &seqs);
                let r = act.settle(changes, answer, ctx);
                act.reply_when_durable(tx, r, ctx);
            }
            Ok(Committed::Stale(current)) => {
                metrics::counter!("ruvector_coordination_stale_total").increment(1);
                let key = current.first().map(|c| c.key.clone()).unwrap_or_default();
                for c in current {
                    act.adopt(&c.key, c.change, c.version, ctx);
                }
                if attempts <= 1 {
                    let _ = tx.send(Err(EngineError::Conflict(format!(
                        "{key} kept changing on other instances of the region; try again"
                    ))));
                } else {
                    act.propose_into(planner, tx, attempts - 1, ctx);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }));
    }

    /// Commits accepted changes and makes the reply; topic messages go to subscribers once
    /// durable.
    fn settle(
        &mut self,
        changes: Vec<Change>,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) -> Result<Reply> {
        self.commit(changes.clone())?;
        self.tell_messages(&changes, ctx);
        answer(self, ctx, &changes)
    }

    fn tell_messages(&mut self, changes: &[Change], ctx: &mut Context<Self>) {
        let messages: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Message(m) => Some(m.clone()),
                Change::Task(_) | Change::Memory(_) | Change::Forget { .. } => None,
            })
            .collect();
        if messages.is_empty() {
            return;
        }
        self.after_sync(ctx, move |act, _| {
            for m in messages {
                if let Some(subs) = act.topics.get_mut(&m.topic) {
                    let body = serde_json::to_value(&m).unwrap_or_default();
                    Self::tell(subs, "message", &body);
                }
            }
        });
    }

    /// Sends `r` once everything written so far is durable.
    pub(super) fn reply_when_durable(
        &mut self,
        tx: ReplyTo,
        r: Result<Reply>,
        ctx: &mut Context<Self>,
    ) {
        if self.store.unsynced() && r.is_ok() {
            self.waiting.push(Waiting::Reply(tx, r));
            self.schedule_flush(ctx);
        } else {
            let _ = tx.send(r);
        }
    }

    /// Takes on the shared state's current version of an object a proposal expected older.
    fn adopt(&mut self, key: &str, current: Option<Change>, version: u64, ctx: &mut Context<Self>) {
        match current {
            Some(c) => self.absorb(c, ctx),
            None => {
                if let Some(("m", rest)) = key.split_once('/') {
                    if let Some((namespace, key)) = rest.split_once('/') {
                        self.absorb(
                            Change::Forget {
                                namespace: namespace.into(),
                                key: key.into(),
                                version,
                            },
                            ctx,
                        );
                    }
                }
            }
        }
    }

    /// Applies another instance's change if it is newer than what this copy holds.
    fn absorb(&mut self, c: Change, ctx: &mut Context<Self>) {
        let newer = match &c {
            Change::Task(t) => self
                .state
                .tasks
                .get(&t.task_id)
                .is_none_or(|held| held.version < t.version),
            Change::Memory(e) => e.version > self.memory_version(&e.namespace, &e.key),
            Change::Forget {
                namespace,
                key,
                version,
            } => {
                let held = self.memory_version(namespace, key);
                let entry = (namespace.clone(), key.clone());
                let known = self.tombstones.get(&entry).map_or(0, |t| t.0);
                self.tombstones
                    .insert(entry, (known.max(*version), Instant::now()));
                *version > held && self.state.memory.get(namespace, key, 0).is_some()
            }
            Change::Message(_) => true,
        };
        if !newer {
            return;
        }
        if let Err(e) = self.commit(vec![c.clone()]) {
            tracing::error!(error = %e, "applying a change of another instance failed; the next reload brings it");
            return;
        }
        self.tell_messages(std::slice::from_ref(&c), ctx);
    }

    /// The version of a memory entry here, a remembered delete included (0: never seen).
    fn memory_version(&self, namespace: &str, key: &str) -> u64 {
        let live = self
            .state
            .memory
            .get(namespace, key, 0)
            .map_or(0, |e| e.version);
        let gone = self
            .tombstones
            .get(&(namespace.to_owned(), key.to_owned()))
            .map_or(0, |t| t.0);
        live.max(gone)
    }

    /// Loads the tenant's copy from the shared state, while its requests wait.
    pub(super) fn load_shared(&mut self, ctx: &mut Context<Self>) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        ctx.wait(
            shared
                .load(&self.tenant)
                .into_actor(self)
                .map(|res, act, _| match res {
                    Ok(l) => act.replace(l),
                    Err(e) => {
                        act.loaded_at = None;
                        tracing::warn!(error = %e, tenant = %act.tenant, "loading the region's shared coordination state failed; serving the last copy read-only and retrying");
                    }
                }),
        );
    }

    fn replace(&mut self, l: Loaded) {
        let mut state = State::default();
        for t in l.tasks {
            state.tasks.put(t);
        }
        for e in l.memory {
            state.memory.put(e);
        }
        for m in l.messages {
            state.topics.put(m, self.cfg.topic_history);
        }
        let mut agents = Agents::default();
        for a in l.agents {
            agents.register(a);
        }
        self.state = state;
        self.agents = agents;
        self.tombstones.clear();
        self.loaded_at = Some(l.position);
        metrics::counter!("ruvector_coordination_loads_total").increment(1);
        // The copy on disk follows, so a start without Redis serves the last known state.
        if let Err(e) = self.store.snapshot(&self.state) {
            tracing::warn!(error = %e, "writing the loaded coordination state failed; it is in memory");
        }
    }

    /// Forgets remembered deletes old enough that nothing older can still arrive.
    pub(super) fn prune_tombstones(&mut self) {
        self.tombstones
            .retain(|_, (_, at)| at.elapsed() < TOMBSTONE_KEEP);
    }
}

/// Gives each change the version (and each message the sequence) the shared state assigned.
fn stamp(changes: Vec<Change>, versions: &[u64], seqs: &[Option<u64>]) -> Vec<Change> {
    changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let v = versions.get(i).copied().unwrap_or(0);
            match c {
                Change::Task(mut t) => {
                    t.version = v;
                    Change::Task(t)
                }
                Change::Memory(mut e) => {
                    e.version = v;
                    Change::Memory(e)
                }
                Change::Forget { namespace, key, .. } => Change::Forget {
                    namespace,
                    key,
                    version: v,
                },
                Change::Message(mut m) => {
                    if let Some(Some(s)) = seqs.get(i) {
                        m.seq = *s;
                    }
                    Change::Message(m)
                }
            }
        })
        .collect()
}

impl Handler<ApplyShared> for Coordinator {
    type Result = ();

    fn handle(&mut self, a: ApplyShared, ctx: &mut Self::Context) {
        // What the last load already held (or a load that failed: the next one brings it).
        let Some(at) = self.loaded_at else {
            return;
        };
        if a.position <= at {
            return;
        }
        match a.event {
            SharedEvent::Change(c) => self.absorb(c, ctx),
            SharedEvent::Joined(agent) => {
                let swarm = agent.swarm.clone();
                let agent = self.agents.register(agent);
                if let Some(members) = self.swarms.get_mut(&swarm) {
                    Self::tell(members, "agent_joined", &json!({ "agent": agent }));
                }
            }
            SharedEvent::Left(id) => self.agent_left(&id),
        }
    }
}

impl Handler<Reload> for Coordinator {
    type Result = ();

    fn handle(&mut self, _: Reload, ctx: &mut Self::Context) {
        self.load_shared(ctx);
    }
}

impl Coordinator {
    /// An agent went offline: its swarm is told (its tasks are released by whoever reaped it).
    pub(super) fn agent_left(&mut self, id: &str) {
        let Some(agent) = self.agents.leave(id, now_ms()) else {
            return;
        };
        debug_assert_eq!(agent.status, AgentStatus::Offline);
        if let Some(members) = self.swarms.get_mut(&agent.swarm) {
            Self::tell(members, "agent_left", &json!({"agent_id": agent.agent_id}));
        }
    }
}

/// A reply that comes through `rx` (from work the coordinator queued or waits for).
pub(super) fn later(rx: tokio::sync::oneshot::Receiver<Result<Reply>>, act: &Coordinator) -> Flow {
    Flow::Later(Box::pin(
        async move {
            rx.await
                .unwrap_or_else(|_| Err(EngineError::Internal("the coordinator stopped".into())))
        }
        .into_actor(act),
    ))
}
