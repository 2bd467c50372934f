//! The slot table: which point each graph node holds. A point lives in a *slot* whose number is
//! its node id; deleting or replacing a point tombstones its slot (the node stays in the graph
//! for navigation, searches skip it) until a background rebuild compacts the partition. A slot
//! holds no vector: the graph's row for its id is the one copy.
//!
//! Live ids are kept in id order (a B-tree) so that a collection can be paged through in id order
//! (export, resync) a page at a time, without a sort of the whole table per page.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::filter::Filter;
use crate::types::Metadata;

/// How many slots the selectivity estimate of a filter looks at.
const SELECTIVITY_SAMPLE: usize = 256;

/// A point's slot. A dead slot keeps its id (for diagnostics) but drops its metadata.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: Arc<str>,
    /// Shared with the write that set it and the change the hub keeps: one copy per version.
    pub metadata: Option<Arc<Metadata>>,
    /// Sequence number of the write that produced this version of the point.
    pub version: u64,
    pub live: bool,
}

#[derive(Debug, Default)]
pub struct SlotTable {
    pub slots: Vec<Slot>,
    by_id: BTreeMap<Arc<str>, u32>,
    live: usize,
}

impl SlotTable {
    pub fn from_slots(slots: Vec<Slot>) -> SlotTable {
        let mut by_id = BTreeMap::new();
        let mut live = 0;
        for (i, s) in slots.iter().enumerate() {
            if s.live {
                by_id.insert(s.id.clone(), i as u32);
                live += 1;
            }
        }
        SlotTable { slots, by_id, live }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn dead(&self) -> usize {
        self.slots.len() - self.live
    }

    /// Bytes of the table without metadata (slots, ids, the id map), for reports: the point's
    /// id costs its length plus an `Arc` header; the B-tree's leaves hold up to 11 entries and
    /// are at least half full, about 1.4 entries' room per entry on average (plus node headers).
    pub fn bytes(&self) -> usize {
        let ids: usize = self.slots.iter().map(|s| s.id.len() + 16).sum();
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + ids
            + self.by_id.len() * std::mem::size_of::<(Arc<str>, u32)>() * 7 / 5
    }

    /// Slot numbers of the first `limit` live points whose ids sort (bytewise) after `after`.
    pub fn page_after(&self, after: Option<&str>, limit: usize) -> Vec<u32> {
        let from = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.by_id
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, i)| *i)
            .collect()
    }

    /// Slot number of a live point.
    pub fn slot_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&Slot> {
        self.slot_of(id).map(|i| &self.slots[i as usize])
    }

    pub(super) fn tombstone(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.live = false;
                s.metadata = None;
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    pub(super) fn push(&mut self, slot: Slot) -> usize {
        let i = self.slots.len();
        self.by_id.insert(slot.id.clone(), i as u32);
        self.slots.push(slot);
        self.live += 1;
        i
    }

    pub(super) fn slot_mut(&mut self, id: &str) -> Option<&mut Slot> {
        let i = self.slot_of(id)?;
        self.slots.get_mut(i as usize)
    }

    /// Whether slot `i` holds a live point that passes `filter`.
    #[inline]
    pub fn admits(&self, i: usize, filter: Option<&Filter>) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.live && filter.is_none_or(|f| f.matches(s.metadata.as_deref())))
    }

    /// Fraction of live points a filter matches, from an evenly spaced sample of slots.
    pub fn selectivity(&self, f: &Filter) -> f64 {
        let step = (self.slots.len() / SELECTIVITY_SAMPLE).max(1);
        let (mut seen, mut hit) = (0usize, 0usize);
        for s in self.slots.iter().step_by(step).filter(|s| s.live) {
            seen += 1;
            if f.matches(s.metadata.as_deref()) {
                hit += 1;
            }
        }
        if seen == 0 {
            0.0
        } else {
            hit as f64 / seen as f64
        }
    }
}
