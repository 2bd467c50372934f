//! MCP (Model Context Protocol) over Streamable HTTP at `/mcp` (PROTOCOL.md §MCP), on the same
//! port, with the official Rust SDK (`rmcp`) and its actix-web transport: the coordination
//! operations as tools whose arguments are the frames' fields and whose results are the reply
//! objects (`structuredContent`, and the same JSON as text). The `/mcp` scope passes the same
//! gate as the REST mirror (credential, `coordinate` scope, admission); each tool call then
//! acts as the credential's tenant.

use std::sync::Arc;

use actix_web::web;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use rmcp_actix_web::transport::{on_request_extensions, AuthorizationHeader};
use serde_json::{json, Value};

use crate::auth::token_of;
use crate::error::ApiError;
use crate::service::coordination::{self, reply_json};
use crate::state::AppState;

/// Each tool: its name (the frame type), what it does, its required and optional arguments
/// (name, JSON Schema type).
type Args = &'static [(&'static str, &'static str)];
const TOOLS: [(&str, &str, Args, Args); 14] = [
    (
        "agent_register",
        "Register (or re-register) an agent in a swarm.",
        &[("agent_id", "string"), ("agent_type", "string")],
        &[
            ("capabilities", "array"),
            ("swarm", "string"),
            ("metadata", "object"),
        ],
    ),
    (
        "heartbeat",
        "Report an agent alive (optionally with metrics).",
        &[("agent_id", "string")],
        &[("metrics", "object")],
    ),
    (
        "agents",
        "List agents, by swarm and status (online | offline).",
        &[],
        &[("swarm", "string"), ("status", "string")],
    ),
    (
        "task_create",
        "Create a task (priority 0-100 or low | medium | high | critical).",
        &[("task_type", "string")],
        &[
            ("task_id", "string"),
            ("priority", "string"),
            ("task_data", "object"),
            ("embedding", "array"),
            ("required_capabilities", "array"),
            ("max_retries", "integer"),
            ("swarm", "string"),
        ],
    ),
    (
        "task_claim",
        "Claim the next task the agent can do (highest priority first).",
        &[("agent_id", "string")],
        &[],
    ),
    (
        "task_complete",
        "Complete a task the agent holds.",
        &[("task_id", "string"), ("agent_id", "string")],
        &[("result", "object")],
    ),
    (
        "task_fail",
        "Fail a task the agent holds (retried while retries remain).",
        &[("task_id", "string"), ("agent_id", "string")],
        &[("error", "string")],
    ),
    (
        "task_status",
        "A task's current state.",
        &[("task_id", "string")],
        &[],
    ),
    (
        "similar_tasks",
        "The k tasks nearest an embedding.",
        &[("embedding", "array")],
        &[("k", "integer")],
    ),
    (
        "publish",
        "Publish a message on a topic.",
        &[("topic", "string")],
        &[("ordering_key", "string"), ("payload", "object")],
    ),
    (
        "memory_store",
        "Store a value in shared memory (optional embedding and ttl in seconds).",
        &[
            ("namespace", "string"),
            ("key", "string"),
            ("value", "object"),
        ],
        &[("embedding", "array"), ("ttl", "integer")],
    ),
    (
        "memory_retrieve",
        "Read a value from shared memory.",
        &[("namespace", "string"), ("key", "string")],
        &[],
    ),
    (
        "memory_delete",
        "Delete a value from shared memory.",
        &[("namespace", "string"), ("key", "string")],
        &[],
    ),
    (
        "memory_search",
        "Search a memory namespace by embedding (vector) or key glob (pattern).",
        &[("namespace", "string")],
        &[("vector", "array"), ("pattern", "string"), ("k", "integer")],
    ),
];

fn schema(required: Args, optional: Args) -> serde_json::Map<String, Value> {
    let prop = |t: &str| match t {
        "array" => json!({"type": "array"}),
        // Values, results and payloads may be any JSON; a priority a number or a name.
        "object" => json!({}),
        other => json!({"type": other}),
    };
    let props: serde_json::Map<String, Value> = required
        .iter()
        .chain(optional)
        .map(|(n, t)| ((*n).to_owned(), prop(t)))
        .collect();
    let req: Vec<&str> = required.iter().map(|(n, _)| *n).collect();
    let mut s = serde_json::Map::new();
    s.insert("type".into(), json!("object"));
    s.insert("properties".into(), Value::Object(props));
    s.insert("required".into(), json!(req));
    s
}

fn tools() -> Vec<Tool> {
    TOOLS
        .iter()
        .map(|(name, what, req, opt)| Tool::new(*name, *what, Arc::new(schema(req, opt))))
        .collect()
}

/// One MCP session's handler.
#[derive(Clone)]
pub struct McpTools {
    app: web::Data<AppState>,
}

impl McpTools {
    pub fn new(app: web::Data<AppState>) -> McpTools {
        McpTools { app }
    }

    async fn call(
        &self,
        name: &str,
        args: Value,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<Value, ApiError> {
        if !TOOLS.iter().any(|(n, ..)| *n == name) {
            return Err(ApiError::invalid(format!("unknown tool {name:?}")));
        }
        let header = on_request_extensions(&ctx.extensions)
            .and_then(|e| e.get::<AuthorizationHeader>())
            .map(|h| h.0.clone());
        let token = token_of(header.as_deref(), "");
        let caller = self.app.auth.authenticate(token, None)?;
        let op = coordination::parse(name, args)?;
        let reply = coordination::call(&self.app, &caller, op, None).await?;
        Ok(reply_json(&reply))
    }
}

impl ServerHandler for McpTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_instructions(
            "Agent coordination of ruvector-streaming: agents, tasks, topics and shared memory \
             of the caller's tenant.",
        )
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = Value::Object(req.arguments.unwrap_or_default());
        metrics::counter!("ruvector_mcp_tool_calls_total").increment(1);
        Ok(match self.call(&req.name, args, &ctx).await {
            Ok(v) => CallToolResult::structured(v),
            Err(e) => CallToolResult::structured_error(e.body()),
        }
        .into())
    }
}

/// The `/mcp` service: stateless (every request stands alone, so no session is held for a
/// client that never says goodbye) and answering plain JSON (no stream held open), behind the
/// route gate with the `coordinate` scope. Built once and shared by every worker.
pub fn service(
    app: web::Data<AppState>,
) -> rmcp_actix_web::transport::StreamableHttpService<McpTools> {
    let hosts = app.settings.server.mcp_allowed_hosts.clone();
    rmcp_actix_web::transport::StreamableHttpService::builder()
        .service_factory(Arc::new(move || Ok(McpTools::new(app.clone()))))
        .session_manager(Arc::new(
            rmcp_actix_web::transport::LocalSessionManager::default(),
        ))
        .stateful_mode(false)
        .json_response(true)
        .maybe_allowed_hosts(Some(hosts).filter(|h| !h.is_empty()))
        .build()
}
