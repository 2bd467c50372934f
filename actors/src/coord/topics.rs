//! A tenant's topics: per topic a sequence number and a bounded history (the last
//! `coordination.topic_history` messages), so a late subscriber can ask for the last N. Messages
//! are numbered in the order the coordinator accepts them, which keeps every ordering key's
//! messages in order.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMessage {
    pub topic: String,
    pub ordering_key: Option<String>,
    pub payload: Value,
    pub seq: u64,
    /// Who published it (the caller's id).
    pub from: String,
    pub published_at: u64,
}

#[derive(Default)]
struct Topic {
    seq: u64,
    history: VecDeque<TopicMessage>,
}

#[derive(Default)]
pub struct Topics {
    topics: HashMap<String, Topic>,
}

impl Topics {
    /// The next sequence number of `topic`.
    pub fn next_seq(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(1, |t| t.seq + 1)
    }

    /// Records a message (new, or loaded from disk), keeping at most `keep` per topic.
    pub fn put(&mut self, m: TopicMessage, keep: usize) {
        let t = self.topics.entry(m.topic.clone()).or_default();
        // In order by seq; a message seen before is not added twice. Out-of-order arrivals
        // happen when several instances of a region share a topic (`shared`).
        let Err(at) = t.history.binary_search_by_key(&m.seq, |x| x.seq) else {
            return;
        };
        if at == 0 && t.history.len() >= keep && m.seq <= t.seq {
            return;
        }
        t.seq = t.seq.max(m.seq);
        t.history.insert(at, m);
        while t.history.len() > keep {
            t.history.pop_front();
        }
    }

    /// The last `n` messages of a topic, oldest first.
    pub fn last(&self, topic: &str, n: usize) -> Vec<TopicMessage> {
        self.topics.get(topic).map_or_else(Vec::new, |t| {
            t.history
                .iter()
                .skip(t.history.len().saturating_sub(n))
                .cloned()
                .collect()
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &TopicMessage> {
        self.topics.values().flat_map(|t| t.history.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, seq: u64) -> TopicMessage {
        TopicMessage {
            topic: topic.into(),
            ordering_key: None,
            payload: Value::from(seq),
            seq,
            from: "a".into(),
            published_at: 0,
        }
    }

    #[test]
    fn history_is_bounded_and_late_readers_get_the_last_n_in_order() {
        let mut t = Topics::default();
        for s in 1..=10 {
            assert_eq!(t.next_seq("x"), s);
            t.put(msg("x", s), 4);
        }
        let seqs: Vec<u64> = t.last("x", 3).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [8, 9, 10]);
        assert_eq!(t.last("x", 100).len(), 4);
        assert!(t.last("y", 3).is_empty());
        t.put(msg("x", 5), 4);
        assert_eq!(
            t.next_seq("x"),
            11,
            "an old message replayed twice is ignored"
        );
    }

    #[test]
    fn messages_arriving_out_of_order_are_kept_in_seq_order_once() {
        let mut t = Topics::default();
        for s in [1, 3, 2, 3, 5, 4] {
            t.put(msg("x", s), 10);
        }
        let seqs: Vec<u64> = t.last("x", 10).iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        assert_eq!(t.next_seq("x"), 6);
    }
}
