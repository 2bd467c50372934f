//! The change hub: every applied write of every collection gets a per-collection sequence
//! number, is kept in a bounded replay window (for SSE `Last-Event-ID` resume) and is delivered
//! to the standing queries (subscriptions) it matches.
//!
//! Shard writer threads publish after a batch is durable and applied, so a subscriber never hears
//! of a write that could still be lost. Matching does not scan every subscription: a subscription
//! whose filter requires `key == scalar` is indexed under that key and value, and a write only
//! visits the subscriptions indexed under its own metadata values plus the unindexed ones.
//!
//! Sinks must not block (they run under the hub's lock on a writer thread): a sink that cannot
//! take an event answers `false`, the hub drops the subscription, and the sink's owner closes the
//! stream as a slow consumer.
//!
//! Sequence numbers start at the hub's creation time in microseconds, so numbers from before a
//! restart are always older than the first one after it and a resume across a restart gets
//! `reset` instead of a wrong replay.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::index::distance::{exact_score, to_graph_form};
use crate::index::filter::{index_keys_at, Filter};
use crate::types::{Metadata, Metric};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Upsert,
    Delete,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "upsert",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One applied write. For a delete, `vector` and `metadata` are what the point held before.
#[derive(Debug)]
pub struct Change {
    pub op: ChangeOp,
    pub id: Arc<str>,
    pub vector: Option<Arc<[f32]>>,
    /// Shared with the stored point: the replay window holds no copy of its own.
    pub metadata: Option<Arc<Metadata>>,
}

impl Change {
    /// Roughly what the change holds in memory: its vector, its id and its metadata (each JSON
    /// node costs a `Value` plus, in an object, a map entry).
    pub fn approx_bytes(&self) -> usize {
        fn value_bytes(v: &serde_json::Value) -> usize {
            80 + match v {
                serde_json::Value::String(s) => s.len(),
                serde_json::Value::Array(a) => a.iter().map(value_bytes).sum(),
                serde_json::Value::Object(m) => {
                    m.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
                }
                serde_json::Value::Null
                | serde_json::Value::Bool(_)
                | serde_json::Value::Number(_) => 0,
            }
        }
        let meta: usize = self
            .metadata
            .iter()
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + value_bytes(v))
            .sum();
        64 + self.id.len() + self.vector.as_ref().map_or(0, |v| v.len() * 4) + meta
    }
}

/// What a subscriber receives: one matching change.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub subscription: u64,
    pub seq: u64,
    pub change: Arc<Change>,
    pub score: Option<f32>,
}

/// Where a subscription's events go. Must not block.
pub trait Sink: Send + Sync {
    /// `false`: the sink is full or gone; the hub drops the subscription.
    fn deliver(&self, d: Delivery) -> bool;
}

/// A subscription's condition.
#[derive(Debug, Clone)]
pub struct StandingQuery {
    pub metric: Metric,
    /// In graph form (see `StandingQuery::new`).
    pub vector: Option<Vec<f32>>,
    pub k: Option<usize>,
    pub score_threshold: Option<f32>,
    pub filter: Option<Filter>,
}

impl StandingQuery {
    pub fn new(
        metric: Metric,
        vector: Option<&[f32]>,
        k: Option<usize>,
        score_threshold: Option<f32>,
        filter: Option<Filter>,
    ) -> StandingQuery {
        StandingQuery {
            metric,
            vector: vector.map(|v| to_graph_form(metric, v)),
            k,
            score_threshold,
            filter,
        }
    }
}

/// A subscription's state: its query and, with `k`, the current top-k it tracks.
struct Sub {
    query: StandingQuery,
    /// (score, id) of the tracked top-k (unsorted; k is small).
    top: Vec<(f32, Arc<str>)>,
    sink: Arc<dyn Sink>,
    key: Option<(String, String)>,
}

impl Sub {
    /// Whether a change matches, with its score when the query has a vector.
    fn decide(&mut self, c: &Change) -> Option<Option<f32>> {
        if let Some(f) = &self.query.filter {
            if !f.matches(c.metadata.as_deref()) {
                return None;
            }
        }
        let Some(q) = &self.query.vector else {
            return Some(None);
        };
        let score = c
            .vector
            .as_ref()
            .map(|v| exact_score(self.query.metric, q, v).0);
        match (c.op, self.query.k) {
            (ChangeOp::Delete, Some(_)) => {
                let at = self.top.iter().position(|(_, id)| *id == c.id)?;
                self.top.swap_remove(at);
                Some(score)
            }
            (ChangeOp::Delete, None) => {
                let s = score?;
                (s >= self.query.score_threshold.unwrap_or(f32::NEG_INFINITY)).then_some(Some(s))
            }
            (ChangeOp::Upsert, k) => {
                let s = score?;
                if s < self.query.score_threshold.unwrap_or(f32::NEG_INFINITY) {
                    return None;
                }
                let Some(k) = k else { return Some(Some(s)) };
                if let Some(at) = self.top.iter().position(|(_, id)| *id == c.id) {
                    self.top[at].0 = s;
                    return Some(Some(s));
                }
                if self.top.len() < k {
                    self.top.push((s, c.id.clone()));
                    return Some(Some(s));
                }
                let (worst, _) = self
                    .top
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))?;
                if s > self.top[worst].0 {
                    self.top[worst] = (s, c.id.clone());
                    Some(Some(s))
                } else {
                    None
                }
            }
        }
    }
}

#[derive(Default)]
struct CollectionChanges {
    seq: u64,
    /// (seq, change, its approximate bytes as counted when it entered)
    window: VecDeque<(u64, Arc<Change>, usize)>,
    /// Approximate bytes the window holds (see `Change::approx_bytes`).
    window_bytes: usize,
    subs: HashMap<u64, Sub>,
    /// path -> value key -> subscriptions whose filter requires that value.
    by_key: HashMap<String, HashMap<String, Vec<u64>>>,
    /// Subscriptions without an indexable equality.
    scan: Vec<u64>,
}

impl CollectionChanges {
    fn candidates(&self, c: &Change) -> Vec<u64> {
        let mut out = self.scan.clone();
        for (path, values) in &self.by_key {
            for key in index_keys_at(c.metadata.as_deref(), path) {
                if let Some(ids) = values.get(&key) {
                    out.extend_from_slice(ids);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn remove(&mut self, id: u64) -> bool {
        let Some(sub) = self.subs.remove(&id) else {
            return false;
        };
        match sub.key {
            Some((path, value)) => {
                if let Some(values) = self.by_key.get_mut(&path) {
                    if let Some(ids) = values.get_mut(&value) {
                        ids.retain(|x| *x != id);
                        if ids.is_empty() {
                            values.remove(&value);
                        }
                    }
                    if values.is_empty() {
                        self.by_key.remove(&path);
                    }
                }
            }
            None => self.scan.retain(|x| *x != id),
        }
        true
    }
}

/// Why a resume could not replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetNeeded;

pub struct Hub {
    /// Each collection has its own lock: one collection's matching never holds up another's.
    collections: Mutex<HashMap<String, Arc<Mutex<CollectionChanges>>>>,
    window: usize,
    /// Bound of one collection's window in bytes, besides its bound in changes.
    window_bytes: usize,
    base: u64,
    next_id: AtomicU64,
}

impl Hub {
    /// `window`: changes kept per collection for resume, and at most `window_bytes` of them.
    pub fn new(window: usize, window_bytes: usize) -> Hub {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Hub {
            collections: Mutex::new(HashMap::new()),
            window,
            window_bytes,
            base,
            next_id: AtomicU64::new(1),
        }
    }

    fn entry(&self, collection: &str) -> Arc<Mutex<CollectionChanges>> {
        let base = self.base;
        self.collections
            .lock()
            .entry(collection.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(CollectionChanges {
                    seq: base,
                    ..Default::default()
                }))
            })
            .clone()
    }

    fn existing(&self, collection: &str) -> Option<Arc<Mutex<CollectionChanges>>> {
        self.collections.lock().get(collection).cloned()
    }

    /// Numbers, records and delivers applied changes of one collection, in order.
    pub fn publish(&self, collection: &str, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let entry = self.entry(collection);
        let mut c = entry.lock();
        let mut delivered = 0u64;
        let mut dropped = Vec::new();
        for change in changes {
            c.seq += 1;
            let seq = c.seq;
            let change = Arc::new(change);
            if self.window > 0 {
                let bytes = change.approx_bytes();
                c.window_bytes += bytes;
                c.window.push_back((seq, change.clone(), bytes));
                while c.window.len() > self.window || c.window_bytes > self.window_bytes {
                    match c.window.pop_front() {
                        Some((_, _, old)) => c.window_bytes -= old,
                        None => break,
                    }
                }
            }
            if c.subs.is_empty() {
                continue;
            }
            for id in c.candidates(&change) {
                let Some(sub) = c.subs.get_mut(&id) else {
                    continue;
                };
                if let Some(score) = sub.decide(&change) {
                    let ok = sub.sink.deliver(Delivery {
                        subscription: id,
                        seq,
                        change: change.clone(),
                        score,
                    });
                    if ok {
                        delivered += 1;
                    } else {
                        dropped.push(id);
                    }
                }
            }
            for id in dropped.drain(..) {
                c.remove(id);
            }
        }
        metrics::counter!("ruvector_subscription_events_total").increment(delivered);
    }

    /// Registers a standing query. With `resume_after`, first replays the changes after that
    /// sequence number that match (or answers `ResetNeeded` when they left the window). `top`
    /// seeds the tracked top-k. Returns the subscription id and the collection's current sequence
    /// number.
    pub fn subscribe(
        &self,
        collection: &str,
        query: StandingQuery,
        top: Vec<(f32, Arc<str>)>,
        sink: Arc<dyn Sink>,
        resume_after: Option<u64>,
    ) -> Result<(u64, u64), ResetNeeded> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let key = query.filter.as_ref().and_then(Filter::equality_key);
        let mut sub = Sub {
            query,
            top,
            sink,
            key: key.clone(),
        };
        let entry = self.entry(collection);
        let mut c = entry.lock();
        if let Some(after) = resume_after {
            let oldest = c.window.front().map(|(s, _, _)| *s).unwrap_or(c.seq + 1);
            if after > c.seq || after + 1 < oldest {
                return Err(ResetNeeded);
            }
            for (seq, change, _) in c.window.iter().filter(|(s, _, _)| *s > after) {
                if let Some(score) = sub.decide(change) {
                    let d = Delivery {
                        subscription: id,
                        seq: *seq,
                        change: change.clone(),
                        score,
                    };
                    if !sub.sink.deliver(d) {
                        return Ok((id, c.seq));
                    }
                }
            }
        }
        match &key {
            Some((path, value)) => c
                .by_key
                .entry(path.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .push(id),
            None => c.scan.push(id),
        }
        c.subs.insert(id, sub);
        let seq = c.seq;
        metrics::gauge!("ruvector_subscriptions").increment(1.0);
        Ok((id, seq))
    }

    /// Stops a subscription; `false` when it was not there (already dropped or unknown).
    pub fn unsubscribe(&self, collection: &str, id: u64) -> bool {
        let removed = self
            .existing(collection)
            .is_some_and(|c| c.lock().remove(id));
        if removed {
            metrics::gauge!("ruvector_subscriptions").decrement(1.0);
        }
        removed
    }

    /// Current sequence number of a collection.
    pub fn seq(&self, collection: &str) -> u64 {
        self.existing(collection)
            .map(|c| c.lock().seq)
            .unwrap_or(self.base)
    }

    /// A dropped collection: its window and subscriptions go (their streams see no more events).
    pub fn forget(&self, collection: &str) {
        let removed = self.collections.lock().remove(collection);
        if let Some(c) = removed {
            metrics::gauge!("ruvector_subscriptions").decrement(c.lock().subs.len() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Collect {
        got: Mutex<Vec<Delivery>>,
        cap: usize,
    }

    impl Sink for Collect {
        fn deliver(&self, d: Delivery) -> bool {
            let mut g = self.got.lock();
            if g.len() >= self.cap {
                return false;
            }
            g.push(d);
            true
        }
    }

    fn upsert(id: &str, v: &[f32], meta: serde_json::Value) -> Change {
        Change {
            op: ChangeOp::Upsert,
            id: Arc::from(id),
            vector: Some(Arc::from(v)),
            metadata: meta.as_object().cloned().map(Arc::new),
        }
    }

    fn sink(cap: usize) -> Arc<Collect> {
        Arc::new(Collect {
            got: Mutex::new(vec![]),
            cap,
        })
    }

    fn ids(s: &Collect) -> Vec<String> {
        s.got
            .lock()
            .iter()
            .map(|d| d.change.id.to_string())
            .collect()
    }

    #[test]
    fn filters_are_indexed_and_matched_exactly() {
        let hub = Hub::new(100, usize::MAX);
        let red = sink(100);
        let any = sink(100);
        let f = Filter::parse(&json!({"color": "red", "size": 2})).unwrap();
        assert!(f.equality_key().is_some());
        let q = StandingQuery::new(Metric::L2, None, None, None, Some(f));
        hub.subscribe("c", q, vec![], red.clone(), None).unwrap();
        let q = StandingQuery::new(Metric::L2, None, None, None, None);
        hub.subscribe("c", q, vec![], any.clone(), None).unwrap();
        hub.publish(
            "c",
            vec![
                upsert("a", &[0.0], json!({"color": "red", "size": 2})),
                upsert("b", &[0.0], json!({"color": "red", "size": 3})),
                upsert("c", &[0.0], json!({"color": ["blue", "red"], "size": 2.0})),
                upsert("d", &[0.0], json!({"color": "blue"})),
            ],
        );
        assert_eq!(ids(&red), ["a", "c"]);
        assert_eq!(ids(&any), ["a", "b", "c", "d"]);
        let seqs: Vec<u64> = any.got.lock().iter().map(|d| d.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        // Other collections are separate.
        hub.publish("other", vec![upsert("x", &[0.0], json!({}))]);
        assert_eq!(any.got.lock().len(), 4);
    }

    #[test]
    fn vector_queries_track_threshold_and_top_k() {
        let hub = Hub::new(100, usize::MAX);
        let near = sink(100);
        let q = StandingQuery::new(Metric::L2, Some(&[0.0, 0.0]), Some(2), Some(-5.0), None);
        hub.subscribe("c", q, vec![], near.clone(), None).unwrap();
        hub.publish(
            "c",
            vec![
                upsert("far", &[10.0, 0.0], json!({})), // below threshold
                upsert("a", &[3.0, 0.0], json!({})),    // top: a
                upsert("b", &[2.0, 0.0], json!({})),    // top: a b
                upsert("c", &[4.0, 0.0], json!({})),    // worse than both: no
                upsert("d", &[1.0, 0.0], json!({})),    // replaces a
                Change {
                    op: ChangeOp::Delete,
                    id: Arc::from("a"),
                    vector: Some(Arc::from(&[3.0f32, 0.0][..])),
                    metadata: None,
                }, // a is no longer tracked: no event
                Change {
                    op: ChangeOp::Delete,
                    id: Arc::from("b"),
                    vector: Some(Arc::from(&[2.0f32, 0.0][..])),
                    metadata: None,
                },
            ],
        );
        assert_eq!(ids(&near), ["a", "b", "d", "b"]);
        let scores: Vec<Option<f32>> = near.got.lock().iter().map(|d| d.score).collect();
        assert_eq!(scores[0], Some(-3.0));
    }

    #[test]
    fn resume_replays_inside_the_window_and_resets_beyond() {
        let hub = Hub::new(3, usize::MAX);
        let start = hub.seq("c");
        for i in 0..5 {
            hub.publish("c", vec![upsert(&format!("p{i}"), &[0.0], json!({}))]);
        }
        let q = || StandingQuery::new(Metric::L2, None, None, None, None);
        // Window holds start+3..=start+5.
        let s = sink(100);
        hub.subscribe("c", q(), vec![], s.clone(), Some(start + 2))
            .unwrap();
        assert_eq!(ids(&s), ["p2", "p3", "p4"]);
        assert_eq!(
            hub.subscribe("c", q(), vec![], sink(10), Some(start + 1)),
            Err(ResetNeeded)
        );
        assert_eq!(
            hub.subscribe("c", q(), vec![], sink(10), Some(start + 99)),
            Err(ResetNeeded)
        );
        // Fully caught up: nothing to replay, fine.
        let s = sink(100);
        hub.subscribe("c", q(), vec![], s.clone(), Some(start + 5))
            .unwrap();
        assert!(s.got.lock().is_empty());
    }

    #[test]
    fn a_write_visits_only_the_subscriptions_indexed_under_its_values() {
        let hub = Hub::new(10, usize::MAX);
        let sinks: Vec<Arc<Collect>> = (0..10_000).map(|_| sink(10)).collect();
        for (i, s) in sinks.iter().enumerate() {
            let f = Filter::parse(&json!({"user": format!("u{i}")})).unwrap();
            let q = StandingQuery::new(Metric::L2, None, None, None, Some(f));
            hub.subscribe("c", q, vec![], s.clone(), None).unwrap();
        }
        let all = sink(10);
        let q = StandingQuery::new(Metric::L2, None, None, None, None);
        hub.subscribe("c", q, vec![], all.clone(), None).unwrap();
        let change = upsert("p", &[0.0], json!({"user": "u42", "other": 1}));
        let entry = hub.entry("c");
        assert_eq!(
            entry.lock().candidates(&change).len(),
            2,
            "u42's subscription and the unfiltered one"
        );
        hub.publish("c", vec![change]);
        assert_eq!(ids(&sinks[42]), ["p"]);
        assert!(sinks[41].got.lock().is_empty() && sinks[43].got.lock().is_empty());
        assert_eq!(ids(&all), ["p"]);
    }

    #[test]
    fn a_full_sink_loses_its_subscription() {
        let hub = Hub::new(0, usize::MAX);
        let s = sink(1);
        let q = StandingQuery::new(Metric::L2, None, None, None, None);
        let (id, _) = hub.subscribe("c", q, vec![], s.clone(), None).unwrap();
        hub.publish(
            "c",
            vec![
                upsert("a", &[0.0], json!({})),
                upsert("b", &[0.0], json!({})),
            ],
        );
        assert_eq!(ids(&s), ["a"]);
        assert!(!hub.unsubscribe("c", id));
    }
}
