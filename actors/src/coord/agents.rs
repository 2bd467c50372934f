//! A tenant's agents: soft state, rebuilt from registrations and heartbeats (never written to
//! disk). An agent whose last heartbeat is older than `coordination.heartbeat_timeout_ms` goes
//! offline; the coordinator then returns its tasks to pending and tells its swarm.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_id: String,
    pub agent_type: String,
    pub swarm: String,
    pub status: AgentStatus,
    pub capabilities: Vec<String>,
    pub metadata: Value,
    pub region: String,
    pub last_heartbeat: u64,
    /// The metrics of the last heartbeat, when it carried some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
}

#[derive(Default)]
pub struct Agents {
    agents: HashMap<String, Agent>,
}

impl Agents {
    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.get(id)
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Registers (or re-registers) an agent, online now.
    pub fn register(&mut self, a: Agent) -> Agent {
        self.agents.insert(a.agent_id.clone(), a.clone());
        a
    }

    /// A heartbeat: `false` when the agent is unknown (it must register).
    pub fn heartbeat(&mut self, id: &str, metrics: Option<Value>, now: u64) -> bool {
        match self.agents.get_mut(id) {
            Some(a) => {
                a.last_heartbeat = now;
                a.status = AgentStatus::Online;
                if metrics.is_some() {
                    a.metrics = metrics;
                }
                true
            }
            None => false,
        }
    }

    /// Agents of a swarm (all swarms when `None`) with a status (any when `None`).
    pub fn list(&self, swarm: Option<&str>, status: Option<AgentStatus>) -> Vec<Agent> {
        let mut v: Vec<Agent> = self
            .agents
            .values()
            .filter(|a| swarm.is_none_or(|s| a.swarm == s))
            .filter(|a| status.is_none_or(|s| a.status == s))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        v
    }

    /// Marks online agents silent since before `now - timeout` offline; returns them.
    pub fn expire(&mut self, now: u64, timeout: u64) -> Vec<Agent> {
        let cutoff = now.saturating_sub(timeout);
        self.agents
            .values_mut()
            .filter(|a| a.status == AgentStatus::Online && a.last_heartbeat < cutoff)
            .map(|a| {
                a.status = AgentStatus::Offline;
                a.clone()
            })
            .collect()
    }

    /// Takes an online agent offline at `now` (another instance reaped it); returns it.
    pub fn leave(&mut self, id: &str, now: u64) -> Option<Agent> {
        let a = self.agents.get_mut(id)?;
        if a.status == AgentStatus::Offline {
            return None;
        }
        a.status = AgentStatus::Offline;
        a.last_heartbeat = a.last_heartbeat.min(now);
        Some(a.clone())
    }

    /// Forgets agents offline for longer than `keep` (their ids may be reused).
    pub fn forget_offline(&mut self, now: u64, keep: u64) {
        let cutoff = now.saturating_sub(keep);
        self.agents
            .retain(|_, a| a.status == AgentStatus::Online || a.last_heartbeat >= cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, swarm: &str, at: u64) -> Agent {
        Agent {
            agent_id: id.into(),
            agent_type: "worker".into(),
            swarm: swarm.into(),
            status: AgentStatus::Online,
            capabilities: vec![],
            metadata: Value::Null,
            region: "us".into(),
            last_heartbeat: at,
            metrics: None,
        }
    }

    #[test]
    fn silent_agents_go_offline_and_heartbeats_bring_them_back() {
        let mut a = Agents::default();
        a.register(agent("x", "s", 0));
        a.register(agent("y", "t", 900));
        assert!(a
            .expire(1000, 500)
            .iter()
            .map(|a| a.agent_id.as_str())
            .eq(["x"]));
        assert!(a.expire(1000, 500).is_empty(), "once");
        assert_eq!(a.list(None, Some(AgentStatus::Online)).len(), 1);
        assert!(a.heartbeat("x", None, 1100));
        assert_eq!(a.list(Some("s"), Some(AgentStatus::Online)).len(), 1);
        assert!(!a.heartbeat("nobody", None, 1100));
    }
}
