//! Agents joining and staying: a registration puts the agent in the tenant's registry (and the
//! calling stream in its swarm, to hear `agent_joined` / `agent_left`), a heartbeat keeps it
//! online. With the region's shared state (`shared`) Redis holds who is online — an agent may
//! register on one instance and heartbeat on another — and the other instances learn of a
//! registration from the coordination stream. A heartbeat that cannot reach Redis is answered
//! from this instance's copy: Redis down must not take agents offline.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::{json, Value};

use super::actor::{now_ms, CoordSink, Coordinator, Flow};
use super::agents::Agent;
use super::ops::Reply;
use super::share::later;
use crate::error::{EngineError, Result};

impl Coordinator {
    pub(super) fn register(
        &mut self,
        agent: Agent,
        sink: Option<(u64, Arc<dyn CoordSink>)>,
        ctx: &mut Context<Self>,
    ) -> Flow {
        let Some(shared) = self.shared.clone() else {
            return Flow::Now(self.joined(agent, sink));
        };
        let asked = shared.register(&self.tenant, &agent);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.wait(asked.into_actor(self).map(move |res, act, _| {
            let _ = tx.send(res.map(|()| act.joined(agent, sink)));
        }));
        later(rx, self)
    }

    /// Registers locally, tells the swarm, and adds the calling stream to it.
    fn joined(&mut self, agent: Agent, sink: Option<(u64, Arc<dyn CoordSink>)>) -> Reply {
        let swarm = agent.swarm.clone();
        let agent = self.agents.register(agent);
        let body = json!({ "agent": agent });
        let members = self.swarms.entry(swarm).or_default();
        Self::tell(members, "agent_joined", &body);
        if let Some((id, sink)) = sink {
            members.insert(id, sink);
        }
        Reply::new("agent_registered", body)
    }

    pub(super) fn heartbeat(
        &mut self,
        agent_id: String,
        metrics: Option<Value>,
        now: u64,
        ctx: &mut Context<Self>,
    ) -> Result<Flow> {
        let Some(shared) = self.shared.clone() else {
            return Ok(Flow::Now(self.beat(agent_id, metrics, now)?));
        };
        let asked = shared.heartbeat(&self.tenant, &agent_id, now);
        let (tx, rx) = tokio::sync::oneshot::channel();
        ctx.spawn(asked.into_actor(self).map(move |res, act, _| {
            let r = match res {
                Ok(true) | Err(_) => act.beat(agent_id, metrics, now),
                Ok(false) => Err(EngineError::NotFound(format!("agent {agent_id:?}"))),
            };
            let _ = tx.send(r);
        }));
        Ok(later(rx, self))
    }

    fn beat(&mut self, agent_id: String, metrics: Option<Value>, now: u64) -> Result<Reply> {
        if !self.agents.heartbeat(&agent_id, metrics, now) {
            return Err(EngineError::NotFound(format!("agent {agent_id:?}")));
        }
        Ok(Reply::new("heartbeat_ack", json!({ "agent_id": agent_id })))
    }

    /// A position at the tail of every priority: this copy's counter locally; with the shared
    /// state, time (microseconds, so tasks created on different instances interleave FIFO).
    pub(super) fn next_queue_order(&mut self) -> u64 {
        let next = self.state.tasks.next_order();
        match self.shared {
            None => next,
            Some(_) => {
                let micros = now_ms().saturating_mul(1000);
                let order = micros.max(next);
                self.state.tasks.reserve_order(order);
                order
            }
        }
    }
}
