//! A coordinator's once-a-second sweep: agents silent past `coordination.heartbeat_timeout_ms`
//! go offline (their tasks back to pending, their swarm told) and expired memory is forgotten.
//! Locally the coordinator decides both. With the region's shared state (`shared`) silence is
//! judged by Redis, which hands each silent agent to exactly one instance (`reap`), and an
//! expiry is a delete conditional on the entry's version, so one instance forgets it.

use actix::prelude::*;
use serde_json::json;

use super::actor::{now_ms, Coordinator};
use super::ops::Reply;
use super::share::{Plan, Planner};
use super::shared::Expect;
use super::store::Change;
use super::tasks::TaskStatus;
use super::vectors::point_id;

impl Coordinator {
    pub(super) fn sweep(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        match self.shared.clone() {
            None => {
                for agent in self.agents.expire(now, self.cfg.heartbeat_timeout_ms) {
                    if let Some(members) = self.swarms.get_mut(&agent.swarm) {
                        Self::tell(members, "agent_left", &json!({"agent_id": agent.agent_id}));
                    }
                    self.release_tasks_of(agent.agent_id, ctx);
                }
            }
            Some(shared) => {
                if self.loaded_at.is_none() {
                    self.load_shared(ctx);
                    return;
                }
                self.prune_tombstones();
                let reaped = shared.reap(&self.tenant, now, self.cfg.heartbeat_timeout_ms);
                ctx.spawn(reaped.into_actor(self).map(|res, act, ctx| match res {
                    Ok(ids) => {
                        for id in ids {
                            act.agent_left(&id);
                            act.release_tasks_of(id, ctx);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "reaping silent agents waits for the region's Redis"),
                }));
            }
        }
        self.agents
            .forget_offline(now, self.cfg.heartbeat_timeout_ms.saturating_mul(10));
        self.forget_expired(ctx);
    }

    /// An offline agent's tasks go back to pending (planned again if another instance
    /// changed one meanwhile).
    fn release_tasks_of(&mut self, agent: String, ctx: &mut Context<Self>) {
        let planner: Planner = Box::new(move |act, now| {
            let (changes, expect) = act
                .state
                .tasks
                .all()
                .filter(|t| {
                    t.status == TaskStatus::Assigned && t.assigned_to.as_deref() == Some(&agent)
                })
                .map(|t| (Change::Task(t.release(now)), Expect::Version(t.version)))
                .unzip();
            Ok(Plan::new(changes, expect, |_, _, _| {
                Ok(Reply::new("released", json!({})))
            }))
        });
        self.sweep_step(planner, "returning an offline agent's tasks", ctx);
    }

    /// Expired memory is forgotten; the embeddings of what was forgotten go after the sync.
    fn forget_expired(&mut self, ctx: &mut Context<Self>) {
        let planner: Planner = Box::new(|act, now| {
            let expired: Vec<_> = act
                .state
                .memory
                .all()
                .filter(|e| e.expires_at.is_some_and(|x| x <= now))
                .map(|e| (e.namespace.clone(), e.key.clone(), e.rev, e.version))
                .collect();
            let points: Vec<String> = expired
                .iter()
                .filter(|e| e.2.is_some())
                .map(|e| point_id(&e.0, &e.1))
                .collect();
            let (changes, expect) = expired
                .into_iter()
                .map(|(namespace, key, _, version)| {
                    let c = Change::Forget {
                        namespace,
                        key,
                        version,
                    };
                    (c, Expect::Version(version))
                })
                .unzip();
            Ok(Plan::new(changes, expect, move |act, ctx, _| {
                act.after_sync(ctx, move |act, ctx| act.forget_points(points, ctx));
                Ok(Reply::new("forgotten", json!({})))
            }))
        });
        self.sweep_step(planner, "forgetting expired memory", ctx);
    }

    fn sweep_step(&mut self, planner: Planner, what: &'static str, ctx: &mut Context<Self>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.propose_into(planner, tx, 2, ctx);
        ctx.spawn(
            async move {
                if let Ok(Err(e)) = rx.await {
                    tracing::warn!(error = %e, "{what} failed; retried next sweep");
                }
            }
            .into_actor(self),
        );
    }
}
