//! The memory requests of a coordinator: store, retrieve, delete and search. Those that touch
//! an embedding reach the tenant's memory collection (`vectors`) and so run as futures:
//!
//! - a store with an embedding writes the point first and commits the entry after, while the
//!   coordinator waits (no other request of the tenant runs in between, so the revision it
//!   commits is the one written); a store whose point cannot be written is refused and leaves
//!   the entry as it was;
//! - a delete (or an expiry, or a store without an embedding over one with) commits first and
//!   removes the point after, best effort: a point left behind names an entry or revision that
//!   is gone, so it is never an answer;
//! - a search asks the collection for the namespace's nearest points and keeps those whose entry
//!   is still live at that revision.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::actor::{now_ms, Coordinator, Flow};
use super::memory::MemoryEntry;
use super::ops::Reply;
use super::share::{later, Plan, Planner, ATTEMPTS};
use super::shared::Expect;
use super::store::Change;
use super::vectors::{check_point_id, point_id};
use crate::error::{EngineError, Result};

/// A search asks the collection for this many more than `k`, for points that no longer count.
const SEARCH_SLACK: usize = 16;

impl Coordinator {
    fn index_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.index_timeout_ms)
    }

    /// A revision newer than any this coordinator handed out (microseconds, so a restart
    /// continues above the last one).
    fn next_rev(&mut self) -> u64 {
        let micros = now_ms().saturating_mul(1000);
        self.last_rev = micros.max(self.last_rev + 1);
        self.last_rev
    }

    /// Removes points of entries that are gone or changed, in the background.
    pub(super) fn forget_points(&self, ids: Vec<String>, ctx: &mut Context<Self>) {
        if ids.is_empty() {
            return;
        }
        let vectors = self.vectors.clone();
        let timeout = self.index_timeout();
        ctx.spawn(
            async move {
                let n = ids.len();
                match tokio::time::timeout(timeout, vectors.remove(ids)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, points = n, "removing memory embeddings failed; they no longer count")
                    }
                    Err(_) => {
                        tracing::warn!(points = n, "removing memory embeddings timed out; they no longer count")
                    }
                }
            }
            .into_actor(self),
        );
    }

    pub(super) fn memory_store(
        &mut self,
        entry: MemoryEntry,
        embedding: Option<Vec<f32>>,
        ctx: &mut Context<Self>,
    ) -> Result<Flow> {
        Self::check_name("namespace", &entry.namespace)?;
        Self::check_name("key", &entry.key)?;
        if entry.namespace.contains('/') {
            return Err(EngineError::invalid("namespace must not contain '/'"));
        }
        self.check_value("value", &entry.value)?;
        if let Some(e) = &embedding {
            self.check_vector(e)?;
            check_point_id(&entry.namespace, &entry.key)?;
        }
        let Some(vector) = embedding else {
            return Ok(self.propose(store_entry(entry), ctx));
        };
        // Checked before the point is written too, so refused stores leave no points behind.
        let known = self.state.memory.get(&entry.namespace, &entry.key, 0);
        if known.is_none() && self.state.memory.len() >= self.cfg.max_memory_entries {
            return Err(EngineError::invalid(format!(
                "at most {} memory entries per tenant (coordination.max_memory_entries)",
                self.cfg.max_memory_entries
            )));
        }
        let rev = self.next_rev();
        let entry = MemoryEntry {
            rev: Some(rev),
            ..entry
        };
        let (vectors, timeout) = (self.vectors.clone(), self.index_timeout());
        let (ns, key) = (entry.namespace.clone(), entry.key.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        // `wait`: the tenant's other requests (and the sweep) queue until this store is done.
        ctx.wait(
            async move {
                match tokio::time::timeout(timeout, vectors.put(&ns, &key, rev, vector)).await {
                    Ok(r) => r,
                    Err(_) => Err(EngineError::Timeout(timeout.as_millis() as u64)),
                }
            }
            .into_actor(self)
            .map(move |written, act, ctx| match written {
                Ok(()) => act.propose_into(store_entry(entry), tx, ATTEMPTS, ctx),
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }),
        );
        Ok(later(rx, self))
    }

    pub(super) fn memory_retrieve(&self, namespace: &str, key: &str) -> Result<Reply> {
        let e = self
            .state
            .memory
            .get(namespace, key, now_ms())
            .ok_or_else(|| EngineError::NotFound(format!("memory {namespace}/{key}")))?;
        Ok(Reply::new("memory", e.public()))
    }

    pub(super) fn memory_delete(
        &mut self,
        namespace: String,
        key: String,
        ctx: &mut Context<Self>,
    ) -> Flow {
        let planner: Planner = Box::new(move |act, now| {
            let found = act.state.memory.get(&namespace, &key, now);
            let body = json!({"namespace": namespace, "key": key, "deleted": found.is_some()});
            let Some(found) = found else {
                return Ok(Plan::reply(Reply::new("memory_deleted", body)));
            };
            let had_embedding = found.rev.is_some();
            let forget = Change::Forget {
                namespace: namespace.clone(),
                key: key.clone(),
                version: found.version,
            };
            let id = point_id(&namespace, &key);
            Ok(Plan::new(
                vec![forget],
                vec![Expect::Any],
                move |act, ctx, _| {
                    if had_embedding {
                        act.after_sync(ctx, move |act, ctx| act.forget_points(vec![id], ctx));
                    }
                    Ok(Reply::new("memory_deleted", body))
                },
            ))
        });
        self.propose(planner, ctx)
    }

    pub(super) fn memory_search(
        &mut self,
        namespace: String,
        vector: Option<Vec<f32>>,
        pattern: Option<String>,
        k: usize,
    ) -> Result<Flow> {
        let k = k.min(self.cfg.max_k);
        match (vector, pattern) {
            (Some(v), None) => {
                self.check_vector(&v)?;
                let (vectors, timeout) = (self.vectors.clone(), self.index_timeout());
                let ask = k + SEARCH_SLACK;
                let found = async move {
                    match tokio::time::timeout(timeout, vectors.search(&namespace, v, ask)).await {
                        Ok(r) => r,
                        Err(_) => Err(EngineError::Timeout(timeout.as_millis() as u64)),
                    }
                };
                Ok(Flow::Later(Box::pin(found.into_actor(self).map(
                    move |hits, act, ctx| {
                        // What the answer names must be durable.
                        act.flush(ctx)?;
                        let now = now_ms();
                        let results: Vec<Value> = hits?
                            .into_iter()
                            .filter_map(|h| {
                                let e =
                                    act.state.memory.current(&h.namespace, &h.key, h.rev, now)?;
                                Some(json!({"key": e.key, "value": e.value, "score": h.score}))
                            })
                            .take(k)
                            .collect();
                        Ok(Reply::new("memory_results", json!({ "results": results })))
                    },
                ))))
            }
            (None, Some(p)) => {
                // A glob is matched against every key: bounded like a name.
                Self::check_name("pattern", &p)?;
                let results: Vec<Value> = self
                    .state
                    .memory
                    .by_pattern(&namespace, &p, k, now_ms())
                    .into_iter()
                    .map(|e| json!({"key": e.key, "value": e.value}))
                    .collect();
                Ok(Flow::Now(Reply::new(
                    "memory_results",
                    json!({ "results": results }),
                )))
            }
            (Some(_), Some(_)) | (None, None) => Err(EngineError::invalid(
                "give exactly one of \"vector\" and \"pattern\"",
            )),
        }
    }
}

/// Commits a memory entry (its embedding, if any, already written). An entry replacing one
/// that had an embedding, without one itself, removes the old point after the sync.
fn store_entry(entry: MemoryEntry) -> Planner {
    Box::new(move |act, _| {
        let previous = act
            .state
            .memory
            .get(&entry.namespace, &entry.key, entry.created_at);
        if previous.is_none() && act.state.memory.len() >= act.cfg.max_memory_entries {
            return Err(EngineError::invalid(format!(
                "at most {} memory entries per tenant (coordination.max_memory_entries)",
                act.cfg.max_memory_entries
            )));
        }
        let stale_point = previous.is_some_and(|p| p.rev.is_some()) && entry.rev.is_none();
        let id = point_id(&entry.namespace, &entry.key);
        let reply = Reply::new(
            "memory_stored",
            json!({"namespace": entry.namespace, "key": entry.key}),
        );
        Ok(Plan::new(
            vec![Change::Memory(entry.clone())],
            vec![Expect::Any],
            move |act, ctx, _| {
                if stale_point {
                    act.after_sync(ctx, move |act, ctx| act.forget_points(vec![id], ctx));
                }
                Ok(reply)
            },
        ))
    })
}
