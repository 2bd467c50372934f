//! `Catalogue`: a read-only view of the router's installed collections, shared with the request
//! path. Looking a collection up is the first step of every search and write; asking the router
//! actor for it costs two cross-thread wake-ups (its arbiter and back), more CPU than a small
//! search (docs/BENCHMARKS.md "The server path"). The router stays the only writer: it adds a
//! collection once installed and removes it before a delete or stop is answered, so a hit here
//! is exactly what the actor would answer. Everything else (not loaded yet, held back, being
//! created, unknown) falls through to the actor, which knows why.

use std::sync::Arc;

use dashmap::DashMap;

use super::collection::Collection;

#[derive(Clone, Default)]
pub struct Catalogue(Arc<DashMap<String, Arc<Collection>>>);

impl Catalogue {
    /// The installed collection of that name, if any.
    pub fn get(&self, name: &str) -> Option<Arc<Collection>> {
        self.0.get(name).map(|c| c.value().clone())
    }

    /// Every installed collection (for background work that visits each, e.g. publishing
    /// changes).
    pub fn all(&self) -> Vec<Arc<Collection>> {
        self.0.iter().map(|c| c.value().clone()).collect()
    }

    pub(super) fn insert(&self, c: Arc<Collection>) {
        self.0.insert(c.spec.name.clone(), c);
    }

    pub(super) fn remove(&self, name: &str) {
        self.0.remove(name);
    }

    pub(super) fn clear(&self) {
        self.0.clear();
    }
}
