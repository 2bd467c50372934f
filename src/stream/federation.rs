//! The agentic-flow federation dialect (`GET /api/v1/federation`, PROTOCOL.md §federation): what
//! `FederationHubClient` sends (`auth` first, then `pull` and `push`), parsed and checked, and the
//! frames it understands back (`ack`, `error`, `push`). Its fields are camelCase and its errors
//! are strings, so it has its own frames; the session serves it with the same I/O as ours.

use std::collections::HashMap;

use serde_json::{json, Value};

/// What a federation session knows once its `auth` frame was accepted.
#[derive(Debug, Default)]
pub struct FedState {
    pub agent_id: Option<String>,
    pub tenant_id: Option<String>,
}

/// A client frame.
#[derive(Debug, PartialEq)]
pub enum FedRequest {
    Auth {
        agent_id: String,
        tenant_id: String,
        token: String,
    },
    Pull {
        tenant_id: Option<String>,
        clock: HashMap<String, u64>,
    },
    Push {
        tenant_id: Option<String>,
        clock: HashMap<String, u64>,
        data: Vec<Value>,
    },
    /// Not a frame this protocol has: its error says which type.
    Unknown(String),
    /// Not usable: the error to send.
    Bad(String),
}

fn clock_of(v: &Value) -> HashMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one text frame.
pub fn parse(text: &[u8]) -> FedRequest {
    let Ok(v) = serde_json::from_slice::<Value>(text) else {
        return FedRequest::Bad("Invalid JSON".into());
    };
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    match v["type"].as_str() {
        Some("auth") => match (s("agentId"), s("tenantId"), s("token")) {
            (Some(agent_id), Some(tenant_id), Some(token))
                if !agent_id.is_empty() && !tenant_id.is_empty() =>
            {
                FedRequest::Auth {
                    agent_id,
                    tenant_id,
                    token,
                }
            }
            _ => FedRequest::Bad("Missing authentication credentials".into()),
        },
        Some("pull") => FedRequest::Pull {
            tenant_id: s("tenantId"),
            clock: clock_of(&v["vectorClock"]),
        },
        Some("push") => match v["data"].as_array() {
            Some(data) => FedRequest::Push {
                tenant_id: s("tenantId"),
                clock: clock_of(&v["vectorClock"]),
                data: data.clone(),
            },
            None => FedRequest::Bad("push needs a data array".into()),
        },
        Some(other) => FedRequest::Unknown(other.to_owned()),
        None => FedRequest::Bad("Missing message type".into()),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{type:"ack", timestamp}`.
pub fn ack() -> Value {
    json!({"type": "ack", "timestamp": unix_ms()})
}

/// A pull's answer.
pub fn pulled(data: Vec<Value>, clock: &HashMap<String, u64>) -> Value {
    json!({"type": "ack", "data": data, "vectorClock": clock, "timestamp": unix_ms()})
}

/// `{type:"error", error}`.
pub fn error(message: &str) -> Value {
    json!({"type": "error", "error": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_as_the_client_sends_them() {
        let auth = br#"{"type":"auth","agentId":"a1","tenantId":"t","token":"k","vectorClock":{},"timestamp":1}"#;
        assert_eq!(
            parse(auth),
            FedRequest::Auth {
                agent_id: "a1".into(),
                tenant_id: "t".into(),
                token: "k".into()
            }
        );
        let missing = br#"{"type":"auth","agentId":"a1"}"#;
        assert_eq!(
            parse(missing),
            FedRequest::Bad("Missing authentication credentials".into())
        );
        let pull =
            br#"{"type":"pull","agentId":"a1","tenantId":"t","vectorClock":{"a1":3,"x":"no"}}"#;
        let FedRequest::Pull { clock, .. } = parse(pull) else {
            panic!("a pull")
        };
        assert_eq!(clock, HashMap::from([("a1".to_string(), 3)]));
        assert_eq!(
            parse(br#"{"type":"gossip"}"#),
            FedRequest::Unknown("gossip".into())
        );
        assert!(matches!(parse(b"{"), FedRequest::Bad(_)));
        assert_eq!(error("x")["error"], "x");
    }
}
