//! `RedisCoord`: the region's shared coordination state in its Redis, for several instances of
//! one region (the engine's `SharedCoord`; scripts and keys in `coord_scripts.rs`). Every call
//! goes through the tier's connection under the command timeout; while Redis is down it fails
//! at once and the coordinators degrade (reads from their copy, changes refused, heartbeats
//! answered locally). `decode` turns the scripts' and the stream's objects back into changes,
//! shared with the stream reader (`coord_tail.rs`).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::Value;
use ruvector_actors::CoordChange as Change;
use ruvector_actors::{
    Agent, AgentStatus, Committed, Current, EngineError, Expect, Loaded, MemoryEntry, Result,
    SharedCoord, StreamPos, Task, TopicMessage,
};

use super::client::{RedisTier, TierError};
use super::coord_scripts::{COMMIT, FETCH, HEARTBEAT, LOAD, REAP, REGISTER};

/// The region's coordination stream.
pub fn stream_key(region: &str) -> String {
    format!("ruvector:coordlog:{region}")
}

/// Cheap to clone: each call's future owns a handle.
#[derive(Clone)]
pub struct RedisCoord(Arc<Inner>);

pub struct Inner {
    tier: Arc<RedisTier>,
    region: String,
    instance: String,
    maxlen: u64,
    history: usize,
    commit: redis::Script,
    load: redis::Script,
    fetch: redis::Script,
    register: redis::Script,
    heartbeat: redis::Script,
    reap: redis::Script,
}

fn unavailable(e: TierError) -> EngineError {
    EngineError::Unavailable(format!(
        "the region's shared coordination state is unreachable ({e}); try again"
    ))
}

impl RedisCoord {
    pub fn new(
        tier: Arc<RedisTier>,
        region: &str,
        instance: &str,
        maxlen: u64,
        history: usize,
    ) -> RedisCoord {
        RedisCoord(Arc::new(Inner {
            tier,
            region: region.to_owned(),
            instance: instance.to_owned(),
            maxlen,
            history: history.max(1),
            commit: redis::Script::new(COMMIT),
            load: redis::Script::new(LOAD),
            fetch: redis::Script::new(FETCH),
            register: redis::Script::new(REGISTER),
            heartbeat: redis::Script::new(HEARTBEAT),
            reap: redis::Script::new(REAP),
        }))
    }

    fn prefix(&self, tenant: &str) -> String {
        format!("ruvector:coord:{}:{tenant}:", self.region)
    }

    fn agent_keys(&self, tenant: &str) -> [String; 4] {
        let p = self.prefix(tenant);
        [
            stream_key(&self.region),
            format!("{p}agents"),
            format!("{p}beats"),
            format!("{p}gone"),
        ]
    }

    /// `script` over a tenant's agent keys, with the arguments every agent script starts
    /// with (stream length, this instance, the tenant).
    fn agent_script<'a>(
        &self,
        script: &'a redis::Script,
        tenant: &str,
    ) -> redis::ScriptInvocation<'a> {
        let [stream, agents, beats, gone] = self.agent_keys(tenant);
        let mut inv = script.key(stream);
        inv.key(agents)
            .key(beats)
            .key(gone)
            .arg(self.maxlen)
            .arg(&self.instance)
            .arg(tenant);
        inv
    }

    async fn invoke(&self, inv: redis::ScriptInvocation<'_>) -> Result<Value> {
        self.tier
            .run(|mut conn| async move { inv.invoke_async::<Value>(&mut conn).await })
            .await
            .map_err(unavailable)
    }
}

/// Turns a stored object back into a change: kind `t` task, `m` memory, `f` forget (the key
/// names the entry), `p` message (`seq` set); `version` set on tasks, memory and forgets.
pub fn decode(kind: &str, key: &str, version: u64, seq: u64, json: &[u8]) -> Result<Change> {
    let bad = |e: String| EngineError::Internal(format!("shared coordination object {key}: {e}"));
    match kind {
        "t" => {
            let mut t: Task = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
            t.version = version;
            Ok(Change::Task(t))
        }
        "m" => {
            let mut e: MemoryEntry =
                serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
            e.version = version;
            Ok(Change::Memory(e))
        }
        "f" => {
            let rest = key
                .strip_prefix("m/")
                .ok_or_else(|| bad("not memory".into()))?;
            let (namespace, key) = rest
                .split_once('/')
                .ok_or_else(|| bad("no namespace".into()))?;
            Ok(Change::Forget {
                namespace: namespace.into(),
                key: key.into(),
                version,
            })
        }
        "p" => {
            let mut m: TopicMessage =
                serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
            m.seq = seq;
            Ok(Change::Message(m))
        }
        other => Err(bad(format!("unknown kind {other:?}"))),
    }
}

/// The kind and object key of a change, as the scripts store it.
fn kind_and_key(c: &Change) -> (&'static str, String) {
    match c {
        Change::Task(t) => ("t", format!("t/{}", t.task_id)),
        Change::Memory(e) => ("m", format!("m/{}/{}", e.namespace, e.key)),
        Change::Forget { namespace, key, .. } => ("f", format!("m/{namespace}/{key}")),
        Change::Message(m) => ("p", m.topic.clone()),
    }
}

fn json_of(c: &Change) -> Result<Vec<u8>> {
    let r = match c {
        Change::Task(t) => serde_json::to_vec(t),
        Change::Memory(e) => serde_json::to_vec(e),
        Change::Forget { .. } => Ok(Vec::new()),
        Change::Message(m) => serde_json::to_vec(m),
    };
    r.map_err(|e| EngineError::Internal(e.to_string()))
}

pub fn bytes(v: &Value) -> Option<&[u8]> {
    // `Value` is non-exhaustive: `if let`, not a match with a wildcard.
    if let Value::BulkString(b) = v {
        return Some(b);
    }
    if let Value::SimpleString(s) = v {
        return Some(s.as_bytes());
    }
    None
}

fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok().map(str::to_owned))
}

fn int(v: &Value) -> Option<u64> {
    if let Value::Int(i) = v {
        return u64::try_from(*i).ok();
    }
    text(v).and_then(|s| s.parse().ok())
}

fn array(v: &Value) -> &[Value] {
    if let Value::Array(a) = v {
        return a;
    }
    &[]
}

/// A stream id `ms-seq` as a position.
pub fn position(id: &str) -> Option<StreamPos> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn malformed(what: &str) -> EngineError {
    EngineError::Internal(format!("shared coordination state: malformed {what}"))
}

impl SharedCoord for RedisCoord {
    fn commit(
        &self,
        tenant: &str,
        changes: Vec<Change>,
        expect: Vec<Expect>,
        first_of: bool,
    ) -> BoxFuture<'static, Result<Committed>> {
        let me = self.clone();
        let tenant = tenant.to_owned();
        Box::pin(async move {
            let p = me.prefix(&tenant);
            let mut inv = me.commit.key(stream_key(&me.region));
            inv.key(format!("{p}v"))
                .key(format!("{p}o"))
                .key(format!("{p}seq"))
                .key(format!("{p}clock"))
                .arg(me.maxlen)
                .arg(&me.instance)
                .arg(&tenant)
                .arg(me.history)
                .arg(&p)
                .arg(if first_of { "1" } else { "0" })
                .arg(changes.len());
            for (c, e) in changes.iter().zip(&expect) {
                let (kind, key) = kind_and_key(c);
                let expect = match e {
                    Expect::Any => "*".to_owned(),
                    Expect::Version(v) => v.to_string(),
                };
                inv.arg(kind).arg(key).arg(expect).arg(json_of(c)?);
            }
            let out = me.invoke(inv).await?;
            let out = array(&out);
            match out.first().and_then(text).as_deref() {
                Some("ok") => {
                    let Some(Value::Int(chosen)) = out.get(1) else {
                        return Err(malformed("answer"));
                    };
                    let chosen = usize::try_from(*chosen).ok();
                    let (mut versions, mut seqs) = (Vec::new(), Vec::new());
                    for pair in out[2..].chunks(2) {
                        versions.push(pair.first().and_then(int).unwrap_or(0));
                        seqs.push(pair.get(1).and_then(int).filter(|s| *s > 0));
                    }
                    Ok(Committed::Done {
                        versions,
                        seqs,
                        chosen,
                    })
                }
                Some("stale") => {
                    let mut current = Vec::new();
                    for c in out[1..].chunks(3) {
                        let key = c
                            .first()
                            .and_then(text)
                            .ok_or_else(|| malformed("answer"))?;
                        let version = c.get(1).and_then(int).unwrap_or(0);
                        let change = match c.get(2).and_then(bytes) {
                            None => None,
                            Some(json) => {
                                let kind = if key.starts_with("t/") { "t" } else { "m" };
                                Some(decode(kind, &key, version, 0, json)?)
                            }
                        };
                        current.push(Current {
                            key,
                            change,
                            version,
                        });
                    }
                    Ok(Committed::Stale(current))
                }
                _ => Err(malformed("answer")),
            }
        })
    }

    fn load(&self, tenant: &str) -> BoxFuture<'static, Result<Loaded>> {
        let me = self.clone();
        let tenant = tenant.to_owned();
        Box::pin(async move {
            let mut inv = me.load.key(stream_key(&me.region));
            inv.arg(me.prefix(&tenant));
            let out = me.invoke(inv).await?;
            let [pos, objects, versions, messages, agents, beats] = array(&out) else {
                return Err(malformed("load"));
            };
            let position = text(pos)
                .as_deref()
                .and_then(position)
                .ok_or_else(|| malformed("position"))?;
            let mut loaded = Loaded {
                position,
                ..Loaded::default()
            };
            let versions: std::collections::HashMap<String, u64> = array(versions)
                .chunks(2)
                .filter_map(|kv| Some((text(&kv[0])?, int(kv.get(1)?)?)))
                .collect();
            for kv in array(objects).chunks(2) {
                let (Some(key), Some(json)) = (text(&kv[0]), kv.get(1).and_then(bytes)) else {
                    return Err(malformed("object"));
                };
                let kind = if key.starts_with("t/") { "t" } else { "m" };
                let version = versions.get(&key).copied().unwrap_or(0);
                match decode(kind, &key, version, 0, json)? {
                    Change::Task(t) => loaded.tasks.push(t),
                    Change::Memory(e) => loaded.memory.push(e),
                    Change::Forget { .. } | Change::Message(_) => {}
                }
            }
            for m in array(messages) {
                let raw = bytes(m).ok_or_else(|| malformed("message"))?;
                let at = raw
                    .iter()
                    .position(|b| *b == b' ')
                    .ok_or_else(|| malformed("message"))?;
                let seq = std::str::from_utf8(&raw[..at])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| malformed("message"))?;
                if let Change::Message(m) = decode("p", "message", 0, seq, &raw[at + 1..])? {
                    loaded.messages.push(m);
                }
            }
            loaded.messages.sort_by_key(|m| m.seq);
            let beats: std::collections::HashMap<String, u64> = array(beats)
                .chunks(2)
                .filter_map(|kv| {
                    let at = text(kv.get(1)?)?.parse::<f64>().ok()?;
                    Some((text(&kv[0])?, at as u64))
                })
                .collect();
            for kv in array(agents).chunks(2) {
                let Some(json) = kv.get(1).and_then(bytes) else {
                    continue;
                };
                let Ok(mut a) = serde_json::from_slice::<Agent>(json) else {
                    tracing::warn!(
                        "a malformed agent in the shared coordination state was skipped"
                    );
                    continue;
                };
                match beats.get(&a.agent_id) {
                    Some(at) => {
                        a.status = AgentStatus::Online;
                        a.last_heartbeat = *at;
                    }
                    None => a.status = AgentStatus::Offline,
                }
                loaded.agents.push(a);
            }
            Ok(loaded)
        })
    }

    fn fetch(&self, tenant: &str, key: &str) -> BoxFuture<'static, Result<Current>> {
        let me = self.clone();
        let (p, key) = (self.prefix(tenant), key.to_owned());
        Box::pin(async move {
            let mut inv = me.fetch.key(format!("{p}v"));
            inv.key(format!("{p}o")).arg(&key);
            let out = me.invoke(inv).await?;
            let out = array(&out);
            let version = out.first().and_then(int).unwrap_or(0);
            let change = match out.get(1).and_then(bytes) {
                None => None,
                Some(json) => {
                    let kind = if key.starts_with("t/") { "t" } else { "m" };
                    Some(decode(kind, &key, version, 0, json)?)
                }
            };
            Ok(Current {
                key,
                change,
                version,
            })
        })
    }

    fn register(&self, tenant: &str, agent: &Agent) -> BoxFuture<'static, Result<()>> {
        let me = self.clone();
        let tenant = tenant.to_owned();
        let json = serde_json::to_vec(agent);
        let (id, now) = (agent.agent_id.clone(), agent.last_heartbeat);
        Box::pin(async move {
            let json = json.map_err(|e| EngineError::Internal(e.to_string()))?;
            let mut inv = me.agent_script(&me.register, &tenant);
            inv.arg(id).arg(json).arg(now);
            me.invoke(inv).await.map(|_| ())
        })
    }

    fn heartbeat(&self, tenant: &str, agent: &str, now: u64) -> BoxFuture<'static, Result<bool>> {
        let me = self.clone();
        let [_, _, beats, _] = self.agent_keys(tenant);
        let agent = agent.to_owned();
        Box::pin(async move {
            let mut inv = me.heartbeat.key(beats);
            inv.arg(agent).arg(now);
            Ok(int(&me.invoke(inv).await?) == Some(1))
        })
    }

    fn reap(
        &self,
        tenant: &str,
        now: u64,
        timeout_ms: u64,
    ) -> BoxFuture<'static, Result<Vec<String>>> {
        let me = self.clone();
        let tenant = tenant.to_owned();
        Box::pin(async move {
            let mut inv = me.agent_script(&me.reap, &tenant);
            inv.arg(now.saturating_sub(timeout_ms))
                .arg(now)
                .arg(now.saturating_sub(timeout_ms.saturating_mul(10)));
            Ok(array(&me.invoke(inv).await?)
                .iter()
                .filter_map(text)
                .collect())
        })
    }
}

impl std::ops::Deref for RedisCoord {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
