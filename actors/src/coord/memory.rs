//! A tenant's shared memory: namespaced key/value entries with an optional TTL, found by key or
//! by a glob over keys (`*`, `?`). An entry's embedding lives in the tenant's memory collection
//! (`vectors`); the entry keeps the revision of it (`rev`) so that only the embedding written for
//! this very entry counts. Expired entries are invisible at once and purged by the coordinator's
//! sweep.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub namespace: String,
    pub key: String,
    pub value: Value,
    /// The revision of its embedding in the memory collection (`None`: no embedding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Its version in the region's shared state (`shared`; 0 when coordination is local).
    #[serde(default, skip_serializing_if = "super::tasks::is_zero")]
    pub version: u64,
}

impl MemoryEntry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }

    /// The entry as clients see it (no revision).
    pub fn public(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("rev");
            o.remove("version");
        }
        v
    }
}

/// Whether `key` matches the glob `pattern` (`*` any run, `?` any one character).
pub fn glob(pattern: &str, key: &str) -> bool {
    let (p, k): (Vec<char>, Vec<char>) = (pattern.chars().collect(), key.chars().collect());
    let (mut pi, mut ki, mut star, mut mark) = (0, 0, None, 0);
    while ki < k.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == k[ki]) {
            pi += 1;
            ki += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ki;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ki = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[derive(Default)]
pub struct Memory {
    /// (namespace, key) → entry; ordered so a namespace is one range.
    entries: BTreeMap<(String, String), MemoryEntry>,
}

impl Memory {
    pub fn put(&mut self, e: MemoryEntry) {
        self.entries.insert((e.namespace.clone(), e.key.clone()), e);
    }

    pub fn get(&self, namespace: &str, key: &str, now: u64) -> Option<&MemoryEntry> {
        self.entries
            .get(&(namespace.to_owned(), key.to_owned()))
            .filter(|e| e.live(now))
    }

    pub fn remove(&mut self, namespace: &str, key: &str) -> Option<MemoryEntry> {
        self.entries.remove(&(namespace.to_owned(), key.to_owned()))
    }

    /// The live entries of a namespace, in key order.
    pub fn entries_of<'a>(
        &'a self,
        namespace: &'a str,
        now: u64,
    ) -> impl Iterator<Item = &'a MemoryEntry> + 'a {
        self.entries
            .range((namespace.to_owned(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, e)| e)
            .filter(move |e| e.live(now))
    }

    /// Up to `k` live entries of a namespace whose keys match `pattern`, in key order.
    pub fn by_pattern(
        &self,
        namespace: &str,
        pattern: &str,
        k: usize,
        now: u64,
    ) -> Vec<MemoryEntry> {
        self.entries_of(namespace, now)
            .filter(|e| glob(pattern, &e.key))
            .take(k)
            .cloned()
            .collect()
    }

    /// The live entry whose embedding is revision `rev` (a search hit that still counts).
    pub fn current(&self, namespace: &str, key: &str, rev: u64, now: u64) -> Option<&MemoryEntry> {
        self.get(namespace, key, now).filter(|e| e.rev == Some(rev))
    }

    /// Removes expired entries; returns their (namespace, key).
    pub fn purge(&mut self, now: u64) -> Vec<(String, String)> {
        let gone: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.entries.remove(k);
        }
        gone
    }

    pub fn all(&self) -> impl Iterator<Item = &MemoryEntry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ns: &str, key: &str, rev: Option<u64>, expires: Option<u64>) -> MemoryEntry {
        MemoryEntry {
            namespace: ns.into(),
            key: key.into(),
            value: Value::from(key),
            rev,
            created_at: 0,
            expires_at: expires,
            version: 0,
        }
    }

    #[test]
    fn globs_match_runs_and_single_characters() {
        assert!(glob("user:*", "user:42"));
        assert!(glob("a?c", "abc") && !glob("a?c", "abbc"));
        assert!(glob("*x*", "axb") && !glob("*x*", "ab"));
        assert!(glob("*", "") && !glob("?", ""));
    }

    #[test]
    fn searches_stay_in_their_namespace_and_skip_expired_entries() {
        let mut m = Memory::default();
        m.put(entry("a", "k1", Some(1), None));
        m.put(entry("a", "k2", None, None));
        m.put(entry("a", "old", Some(3), Some(10)));
        m.put(entry("b", "k3", Some(4), None));
        assert!(m.current("a", "k1", 1, 20).is_some());
        assert!(
            m.current("a", "k1", 2, 20).is_none(),
            "another revision's embedding"
        );
        assert!(m.current("a", "k2", 0, 20).is_none(), "no embedding at all");
        assert!(m.current("a", "old", 3, 20).is_none(), "expired");
        assert_eq!(m.by_pattern("a", "k*", 10, 20).len(), 2);
        assert!(m.get("a", "old", 5).is_some() && m.get("a", "old", 10).is_none());
        assert_eq!(m.purge(20), [("a".to_string(), "old".to_string())]);
        assert_eq!(m.len(), 3);
    }
}
