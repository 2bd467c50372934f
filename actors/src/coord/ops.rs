//! The coordination requests (PROTOCOL.md §Agent coordination), as the frames spell them: one
//! enum tagged by `type`, so a WebSocket frame, a REST mirror body (with its path's fields added)
//! and an MCP tool call all parse into the same value. Replies are a kind and a JSON body.

use serde::Deserialize;
use serde_json::Value;

use super::agents::AgentStatus;

fn default_swarm() -> String {
    "default".into()
}
fn default_retries() -> u32 {
    3
}
fn default_k() -> usize {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CoordOp {
    AgentRegister {
        agent_id: String,
        agent_type: String,
        #[serde(default)]
        capabilities: Vec<String>,
        #[serde(default = "default_swarm")]
        swarm: String,
        #[serde(default)]
        metadata: Value,
    },
    Heartbeat {
        agent_id: String,
        #[serde(default)]
        metrics: Option<Value>,
    },
    Agents {
        #[serde(default)]
        swarm: Option<String>,
        #[serde(default)]
        status: Option<AgentStatus>,
    },
    TaskCreate {
        #[serde(default)]
        task_id: Option<String>,
        task_type: String,
        #[serde(default)]
        priority: Option<Value>,
        #[serde(default)]
        task_data: Value,
        #[serde(default)]
        embedding: Option<Vec<f32>>,
        #[serde(default)]
        required_capabilities: Vec<String>,
        #[serde(default = "default_retries")]
        max_retries: u32,
        #[serde(default = "default_swarm")]
        swarm: String,
    },
    TaskClaim {
        agent_id: String,
    },
    TaskComplete {
        task_id: String,
        agent_id: String,
        #[serde(default)]
        result: Value,
    },
    TaskFail {
        task_id: String,
        agent_id: String,
        #[serde(default)]
        error: String,
    },
    TaskStatus {
        task_id: String,
    },
    SimilarTasks {
        embedding: Vec<f32>,
        #[serde(default = "default_k")]
        k: usize,
    },
    Publish {
        topic: String,
        #[serde(default)]
        ordering_key: Option<String>,
        #[serde(default)]
        payload: Value,
    },
    /// The last `last` messages of a topic (the REST mirror's `GET …/topics/{topic}/messages`).
    TopicMessages {
        topic: String,
        #[serde(default = "default_k")]
        last: usize,
    },
    MemoryStore {
        namespace: String,
        key: String,
        value: Value,
        #[serde(default)]
        embedding: Option<Vec<f32>>,
        #[serde(default)]
        ttl: Option<u64>,
    },
    MemoryRetrieve {
        namespace: String,
        key: String,
    },
    MemoryDelete {
        namespace: String,
        key: String,
    },
    MemorySearch {
        namespace: String,
        #[serde(default)]
        vector: Option<Vec<f32>>,
        #[serde(default)]
        pattern: Option<String>,
        #[serde(default = "default_k")]
        k: usize,
    },
}

impl CoordOp {
    /// The request's frame type (a bounded metric label).
    pub fn name(&self) -> &'static str {
        match self {
            CoordOp::AgentRegister { .. } => "agent_register",
            CoordOp::Heartbeat { .. } => "heartbeat",
            CoordOp::Agents { .. } => "agents",
            CoordOp::TaskCreate { .. } => "task_create",
            CoordOp::TaskClaim { .. } => "task_claim",
            CoordOp::TaskComplete { .. } => "task_complete",
            CoordOp::TaskFail { .. } => "task_fail",
            CoordOp::TaskStatus { .. } => "task_status",
            CoordOp::SimilarTasks { .. } => "similar_tasks",
            CoordOp::Publish { .. } => "publish",
            CoordOp::TopicMessages { .. } => "topic_messages",
            CoordOp::MemoryStore { .. } => "memory_store",
            CoordOp::MemoryRetrieve { .. } => "memory_retrieve",
            CoordOp::MemoryDelete { .. } => "memory_delete",
            CoordOp::MemorySearch { .. } => "memory_search",
        }
    }

    /// Whether this is one of the coordination frame types.
    pub fn is_coordination(kind: &str) -> bool {
        matches!(
            kind,
            "agent_register"
                | "heartbeat"
                | "agents"
                | "task_create"
                | "task_claim"
                | "task_complete"
                | "task_fail"
                | "task_status"
                | "similar_tasks"
                | "publish"
                | "memory_store"
                | "memory_retrieve"
                | "memory_delete"
                | "memory_search"
        )
    }
}

/// A reply: its frame type and body (the transport adds `type` and `id`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub kind: &'static str,
    pub body: Value,
}

impl Reply {
    pub fn new(kind: &'static str, body: Value) -> Reply {
        Reply { kind, body }
    }
}
